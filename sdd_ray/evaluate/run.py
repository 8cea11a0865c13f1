"""Run an evaluation (built-in or harness), attach recovery against a baseline, write `results.json`.

`run_evaluate(cfg, out)` is what the CLI, `jobs/evaluate.py` and the pipeline call. With
`cfg.use_ray` the model (and a baseline model, in parallel) are evaluated as Ray tasks; otherwise
in this process.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.evaluate.config import FIDELITY, EvaluateConfig
from sdd_ray.evaluate.examples import documents_id, without_examples, write_examples
from sdd_ray.evaluate.recovery import (
    average,
    check_same_seed,
    check_same_task_names,
    is_results_file,
    load_results,
    recovery_pct,
)
from sdd_ray.io import write_json

__all__ = ["average", "evaluate_model", "run_evaluate"]


def with_data_dir_found(cfg: EvaluateConfig) -> EvaluateConfig:
    """`cfg` with the data source this process finds written in (a folder, or the hub), so Ray workers use the same."""
    from sdd_ray.evaluate.local_benchmarks import benchmark_data_dir

    if cfg.evaluator != "harness":
        return cfg
    found = benchmark_data_dir(cfg.harness.data_source, cfg.harness.data_dir)
    decided = {"data_dir": str(found)} if found else {"data_source": "hub", "data_dir": None}
    return cfg.model_copy(update={"harness": cfg.harness.model_copy(update=decided)})


def evaluate_model(cfg: EvaluateConfig) -> dict:
    """Results of `cfg.model` on `cfg.tasks`: {model, evaluator, tasks: {task: {metric, value, stderr, n, chance,
    examples}}, average[, fidelity]}; `examples` are the per-document records that `run_evaluate` writes out."""
    import torch

    cfg = with_data_dir_found(cfg)
    names = [t for t in cfg.tasks if t != FIDELITY]
    tasks: dict[str, dict] = {}
    if names and cfg.evaluator == "harness":
        from sdd_ray.evaluate.harness import evaluate_harness

        tasks = evaluate_harness(cfg.model, names, cfg)
        for name, result in tasks.items():
            result["num_fewshot"] = cfg.harness.task_settings[name].num_fewshot
    elif names:
        from sdd_ray.evaluate.builtin import evaluate_builtin
        from sdd_ray.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(cfg.model)
        with torch.inference_mode():
            tasks = evaluate_builtin(model, tokenizer, names, cfg.limit or 1000, cfg.batch_size, cfg.seed)
    for result in tasks.values():
        result["documents"] = documents_id(result["examples"])
    results = {
        "model": cfg.model.path,
        "evaluator": cfg.evaluator,
        "backend": cfg.harness.backend if cfg.evaluator == "harness" else "hf",
        "limit": cfg.limit,
        "seed": cfg.seed,
        "tasks": tasks,
        "average": average(tasks) if tasks else None,
    }
    if cfg.evaluator == "harness":
        results["data_dir"] = cfg.harness.data_dir  # the local benchmark copies read; None: the hub
    if FIDELITY in cfg.tasks:
        from sdd_ray.evaluate.fidelity import evaluate_fidelity

        results[FIDELITY] = evaluate_fidelity(cfg)
    return results


def _evaluate_all(cfg: EvaluateConfig, models: list[ModelSpec]) -> list[dict]:
    cfg = with_data_dir_found(cfg)
    if cfg.use_ray:
        from sdd_ray.evaluate.ray_eval import evaluate_many

        return evaluate_many(models, cfg)
    return [evaluate_model(cfg.model_copy(update={"model": m})) for m in models]


def run_evaluate(cfg: EvaluateConfig, out: str | Path | None = None) -> dict:
    """Evaluate `cfg.model` (and a baseline model), add `recovery_pct`, write `out` if given."""
    from sdd_ray.models import as_spec

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
