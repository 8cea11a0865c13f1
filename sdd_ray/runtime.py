"""Connecting to Ray: the one way every stage, job and benchmark does it.

A driver joins the cluster it is told of (an address, else `RAY_ADDRESS`, which `ray job submit`
sets), else starts a local Ray with the dashboard off. Ray's own logging set-up is left alone
(`configure_logging=False`), so that sdd_ray's log lines keep their format. When a driver is already
connected (the pipeline connects once, then runs every stage), nothing changes.

What the cluster has is read from Ray, never from the driver's machine: on a cluster the driver runs
on a CPU-only head, and an autoscaling cluster may hold no GPU node until a job asks for one.
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


def cluster_gpus() -> float:
    """GPUs of the connected Ray cluster: those it has now, or the most its autoscaler can add when more
    (a KubeRay group at `minReplicas: 0` has none until a job asks)."""
    import ray

    now = float(ray.cluster_resources().get("GPU", 0))
    return max(now, float(max_cluster_resources().get("GPU", 0)))


def max_cluster_resources() -> dict[str, float]:
    """The most of each resource the autoscaler's node types can reach; {} without an autoscaler (a local Ray)."""
    import ray

    if not ray.is_initialized():
        return {}
    try:
        from ray._private.state import state

        return dict(state.get_max_resources_from_cluster_config() or {})
    except (ImportError, AttributeError):  # a private API: a Ray without it has no answer, not an error
        return {}
