"""Evaluate several models (and tasks) in parallel as Ray tasks, gathered into one list of results.

Each evaluation is one Ray task that asks for `cfg.resources` (one GPU per model on a cluster,
fractional CPU slots on a small box); with `resources.split_tasks` every (model, task) pair is its
own Ray task and the pieces are merged per model. The work itself is `single.evaluate_model`, the same
function the sequential path calls, so both give the same numbers.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.recovery import average
from sdd_ray.evaluate.single import evaluate_model
from sdd_ray.models import as_spec
from sdd_ray.runtime import connect


def evaluate_many(models: list[str | Path | ModelSpec], cfg: EvaluateConfig) -> list[dict]:
    """Results of every model in `models` on `cfg.tasks`, in the order given."""
    import ray

    connect()
    remote = ray.remote(evaluate_model).options(
        num_cpus=cfg.resources.num_cpus, num_gpus=cfg.resources.num_gpus, max_retries=0
    )
    task_groups = [[t] for t in cfg.tasks] if cfg.resources.split_tasks else [list(cfg.tasks)]
    refs = [
        [remote.remote(cfg.model_copy(update={"model": as_spec(m), "tasks": group})) for group in task_groups]
        for m in models
    ]
    results = []
    for pieces in (ray.get(model_refs) for model_refs in refs):
        merged = dict(pieces[0])
        merged["tasks"] = {t: r for piece in pieces for t, r in piece["tasks"].items()}
        merged["average"] = average(merged["tasks"]) if merged["tasks"] else None
        merged.update({key: piece[key] for piece in pieces for key in ("fidelity",) if key in piece})
        results.append(merged)
    return results
