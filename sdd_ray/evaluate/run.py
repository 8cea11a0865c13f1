"""Run an evaluation (built-in or harness), attach recovery against a baseline, write `results.json`.

`run_evaluate(cfg, out)` is what the CLI, `jobs/evaluate.py` and the pipeline call. With
`cfg.use_ray` the model (and a baseline model, in parallel) are evaluated as Ray tasks; otherwise
in this process.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.examples import without_examples, write_examples
from sdd_ray.evaluate.ray_eval import evaluate_many
from sdd_ray.evaluate.recovery import (
    average,
    check_same_seed,
    check_same_task_names,
    is_results_file,
    load_results,
    recovery_pct,
)
from sdd_ray.evaluate.single import evaluate_model, with_data_dir_found
from sdd_ray.io import write_json
from sdd_ray.models import as_spec

__all__ = ["average", "evaluate_model", "run_evaluate"]


def _evaluate_all(cfg: EvaluateConfig, models: list[ModelSpec]) -> list[dict]:
    cfg = with_data_dir_found(cfg)
    if cfg.use_ray:
        return evaluate_many(models, cfg)
    return [evaluate_model(cfg.model_copy(update={"model": m})) for m in models]


def run_evaluate(cfg: EvaluateConfig, out: str | Path | None = None) -> dict:
    """Evaluate `cfg.model` (and a baseline model), add `recovery_pct`, write `out` if given."""
    baseline = None
    models = [cfg.model]
    if cfg.baseline and is_results_file(cfg.baseline):
        baseline = load_results(cfg.baseline)
        baseline_source = cfg.baseline
        check_same_task_names(cfg.tasks, list(baseline["tasks"]), ("--tasks", cfg.baseline))
        check_same_seed(cfg.seed, baseline.get("seed"), ("this evaluation", cfg.baseline))
    elif cfg.baseline:
        models.append(as_spec(cfg.baseline))
        baseline_source = "evaluated in this run"
    evaluated = _evaluate_all(cfg, models)
    results = evaluated[0]
    if cfg.baseline:
        baseline = baseline or without_examples(evaluated[1])
        results["recovery_pct"] = recovery_pct(results, baseline)
        results["baseline"] = {
            "model": baseline.get("model"),
            "source": baseline_source,
            "average": average(baseline["tasks"]),
            "tasks": baseline["tasks"],
        }
    if out is not None:
        write_examples(results, Path(out))
        write_json(results, out)
    return results
