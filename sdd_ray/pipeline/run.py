"""`run_pipeline`: run every stage unit of a config on Ray, reusing finished outputs, then report.

The driver (`sdd-ray run` or `jobs/pipeline.py` under `ray job submit`) only schedules: each unit
runs as a Ray task with the resources its stage is given (`ray.resources`), as soon as the units it
reads from are finished, so independent units (the two fine-tuning arms, the evaluations) run side
by side where the cluster has room. Stages that start their own Ray workers (distillation's actor
pool, Ray Train's worker group) run in a zero-CPU task that only waits for them.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from sdd_ray.guards import check_cluster_resources
from sdd_ray.pipeline.cache import StageCache
from sdd_ray.pipeline.config import RunConfig
from sdd_ray.pipeline.plan import ARTIFACT, Job, Plan, build_plan, upstream_jobs
from sdd_ray.pipeline.report import write_report
from sdd_ray.runtime import connect as connect_ray

RUNNERS = {
    "prune": ("sdd_ray.prune.run", "run_prune"),
    "distill": ("sdd_ray.distill.run", "run_distill"),
    "finetune": ("sdd_ray.finetune.run", "run_finetune"),
    "merge": ("sdd_ray.merge.run", "run_merge"),
    "evaluate": ("sdd_ray.evaluate.run", "run_evaluate"),
    "specdec": ("sdd_ray.specdec.run", "run_specdec"),
}


class StageFailed(RuntimeError):
    """A stage unit raised; the message names the unit and where its partial output is."""


def run_stage(stage: str, config, out: str) -> tuple[dict, float]:
    """Run one unit (inside a Ray task): `run_<stage>(config, out)`, and its wall time."""
    module, function = RUNNERS[stage]
    run = getattr(importlib.import_module(module), function)
    started = time.perf_counter()
    result = run(config, out)
    return result, time.perf_counter() - started


class Progress:
    """One line per event: `[mm:ss] label: what`, to stdout (the job log)."""

    def __init__(self, stream=None):
        self.start = time.monotonic()
        self.stream = stream or sys.stdout

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self, label: str, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        print(f"[{minutes:02d}:{seconds:02d}] {label}: {text}", file=self.stream, flush=True)


def connect(cfg: RunConfig, address: str | None = None) -> str:
    """Join the cluster at `address`, `cfg.ray.address` or `RAY_ADDRESS`; else start a local Ray."""
    return connect_ray(address or cfg.ray.address, cfg.ray.num_cpus)


def check_run_resources(cfg: RunConfig) -> None:
    """Workers x resources of every stage against the cluster's total: a unit that can never start fails now."""
    for stage, resources in cfg.ray.resources.items():
        if stage == "baseline" or cfg.runs(stage):
            check_cluster_resources(f"ray.resources.{stage}", 1, resources.num_cpus, resources.num_gpus,
                                    f"ray.resources.{stage}")
    if cfg.finetune is not None and cfg.runs("finetune"):
        check_cluster_resources("finetune", cfg.finetune.num_workers, cfg.finetune.cpus_per_worker,
                                1.0 if cfg.finetune.use_gpu else 0.0, "finetune.num_workers or finetune.cpus_per_worker")
    if cfg.distill is not None and cfg.runs("distill") and cfg.distill.backend != "vllm":  # `auto` may be hf
        check_cluster_resources("distill", cfg.distill.num_workers, cfg.distill.cpus_per_worker,
                                cfg.distill.gpus_per_worker, "distill.num_workers or distill.cpus_per_worker")


def _remote_options(cfg: RunConfig, job: Job) -> dict:
    """Ray task options of a unit: its stage's `ray.resources` (`baseline` for the baseline evaluation)."""
    stage = "baseline" if job.label == "evaluate[baseline]" else job.unit.stage
    resources = cfg.ray.resources[stage]
    options = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus, "max_retries": 0, "name": job.label}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 2**30)
    return options


def execute(plan: Plan, cfg: RunConfig, progress: Progress) -> dict[str, dict]:
    """Run every unfinished unit of `plan`; returns {label: marker} of every unit (run now or reused)."""
    import ray

    remote_stage = ray.remote(run_stage)
    cache: StageCache = plan.cache
    done: dict[str, dict] = {}
    pending = list(plan.jobs)
    running: dict = {}  # ObjectRef -> (job, start time)
    last_beat = time.monotonic()
    while pending or running:
        for job in list(pending):
            if any(up.label not in done for up in upstream_jobs(plan, job)):
                continue
            pending.remove(job)
            state = cache.state(job.unit)
            if state == "done":
                marker = cache.result(job.unit)
                done[job.label] = {**marker, "cached": True}
                progress.line(job.label, f"reused {cache.dir(job.unit)} (took {marker['wall_s']:.1f} s when run)")
                continue
            out = cache.begin(job.unit) / ARTIFACT[job.unit.stage]
            verb = "resuming" if state == "partial" else "start"
            progress.line(job.label, f"{verb}: {job.doing}")
            ref = remote_stage.options(**_remote_options(cfg, job)).remote(job.unit.stage, job.config, str(out))
            running[ref] = (job, time.monotonic())
        if not running:
            continue
        ready, _ = ray.wait(list(running), num_returns=1, timeout=min(cfg.heartbeat_s, 5.0))
        for ref in ready:
            job, started = running.pop(ref)
            try:
                result, wall = ray.get(ref)
            except ray.exceptions.RayError as error:
                for other in running:
                    ray.cancel(other, force=True)
                raise StageFailed(
                    f"{job.label} failed (partial output kept in {cache.dir(job.unit)}; rerun to resume): {error}"
                ) from error
            cache.complete(job.unit, result, wall)
            done[job.label] = {**cache.result(job.unit), "cached": False}
            progress.line(job.label, f"done in {wall:.1f} s ({time.monotonic() - started:.1f} s with scheduling)")
        if running and time.monotonic() - last_beat >= cfg.heartbeat_s:
            last_beat = time.monotonic()
            now = time.monotonic()
            busy = ", ".join(f"{job.label} {now - started:.0f} s" for job, started in running.values())
            progress.line("running", busy)
    return done


def run_pipeline(cfg: RunConfig, address: str | None = None, out: str | Path | None = None) -> dict:
    """Run the pipeline of `cfg` into `out` (default `cfg.out`); returns the summary (also `<out>/summary.json`)."""
    out = Path(out or cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    plan = build_plan(cfg, out)
    progress.line("pipeline", f"{len(plan.jobs)} units, stages {', '.join(cfg.stages)}, out {out}")
    progress.line("ray", connect(cfg, address))
    check_run_resources(cfg)
    markers = execute(plan, cfg, progress)
    summary = write_report(cfg, plan, markers, out, wall_s=progress.elapsed())
    progress.line("report", f"wrote {out / 'report.md'} and {out / 'summary.json'}")
    return summary
