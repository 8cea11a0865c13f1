"""`cluster/local_cluster.sh` from Python: a head and a second node on one machine, their Jobs API client,
and a wait for a job's end. `stop` ends only this cluster's processes (never `ray stop`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
PORT_BLOCKS = range(27300, 32300, 1000)
"""Where a cluster's 300 ports may start: below Linux's ephemeral ports and away from Ray's defaults."""


class LocalCluster:
    """A two-node cluster with its own temp dir; used as a context manager (`with LocalCluster() as c`).

    No port is probed and released: each start binds its block itself, and a start that fails (a port taken,
    or a node that missed Ray's 30 s registration on a busy machine) is stopped and tried on the next block.
    """

    def __init__(self, head_cpus: int = 1, worker_cpus: int = 1, env: dict[str, str] | None = None, attempts: int = 3):
        if not SCRIPT.is_file():
            raise RuntimeError(f"{SCRIPT} not found: the local cluster needs a checkout of the repository")
        self.temp_dir = tempfile.mkdtemp(prefix="sddc", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.attempts = attempts
        self.base = PORT_BLOCKS[0]
        self.env = {**os.environ, "RAY_TEMP_DIR": self.temp_dir, "HEAD_CPUS": str(head_cpus),
                    "WORKER_CPUS": str(worker_cpus), "RAY": str(Path(sys.executable).parent / "ray"), **(env or {})}
        self.client = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.base}"

    def __enter__(self) -> LocalCluster:
        failures = []
        for base in PORT_BLOCKS[: self.attempts]:
            self.base, self.env["BASE_PORT"] = base, str(base)
            started = subprocess.run([str(SCRIPT), "start"], env=self.env, capture_output=True, text=True, timeout=600)
            if started.returncode == 0:
                try:
                    from ray.job_submission import JobSubmissionClient

                    self.client = JobSubmissionClient(f"http://127.0.0.1:{base + 1}")
                    return self
                except Exception as error:  # the dashboard did not come up on its port
                    failures.append(f"ports {base}..{base + 299}: {error}")
            else:
                failures.append(f"ports {base}..{base + 299}: {(started.stdout + started.stderr)[-1500:]}")
            self.stop()
        self.__exit__()
        raise RuntimeError("the local cluster did not start:\n" + "\n".join(failures))

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop"], env=self.env, capture_output=True, timeout=300)

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def submit(self, entrypoint: str, env_vars: dict[str, str] | None = None) -> str:
        """Submit `entrypoint` (run from the repository root, with this checkout first on PYTHONPATH)."""
        env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO), **(env_vars or {})}
        return self.client.submit_job(entrypoint=f"cd {REPO} && {entrypoint}", runtime_env={"env_vars": env})

    def wait(self, job: str, timeout: float) -> str:
        """The job's final status (SUCCEEDED, FAILED or STOPPED); a job still running after `timeout` is stopped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get_job_status(job)
            if status.is_terminal():
                return str(status)
            time.sleep(1)
        self.client.stop_job(job)
        raise TimeoutError(f"job {job} did not finish in {timeout} s:\n{self.client.get_job_logs(job)[-3000:]}")

    def processes(self) -> list:
        """The cluster's processes (psutil): those naming its temp dir, and their descendants."""
        import psutil

        found = {}
        for proc in psutil.process_iter(["cmdline"]):
            if any(self.temp_dir in part for part in proc.info["cmdline"] or ()):
                try:
                    family = [proc, *proc.children(recursive=True)]
                except psutil.Error:
                    family = [proc]
                found.update((p.pid, p) for p in family)
        return list(found.values())

    def kill_one(self, name: str) -> int:
        """SIGKILL one process of the cluster whose command line names `name` (e.g. an actor's class); its pid."""
        import psutil

        for proc in self.processes():
            try:
                if name in " ".join(proc.cmdline()):
                    proc.kill()
                    return proc.pid
            except psutil.Error:
                continue
        raise RuntimeError(f"no process named {name!r} in the cluster to kill")
