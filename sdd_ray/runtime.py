"""Connecting to Ray: the one way every stage, job and benchmark does it.

A driver joins the cluster it is told of (an address, else `RAY_ADDRESS`, which `ray job submit`
sets), else starts a local Ray with the dashboard off. Ray's own logging set-up is left alone
(`configure_logging=False`), so that sdd_ray's log lines keep their format. When a driver is already
connected (the pipeline connects once, then runs every stage), nothing changes.
"""

from __future__ import annotations

import os


def connect(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> str:
    """Join `address` or `RAY_ADDRESS`, else start a local Ray of `num_cpus` CPUs (all by default).

    `log_to_driver=False` keeps workers' output (model loads, actors' warnings) off the driver's
    terminal, for stages that draw their own progress. Returns what it connected to, in words.
    """
    import ray

    if ray.is_initialized():
        return "already connected"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, configure_logging=False, log_to_driver=log_to_driver)
        return f"cluster at {address}"
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=log_to_driver)
    return f"local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
