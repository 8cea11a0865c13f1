"""Evaluate one model in this process: the work of the sequential path and of each Ray task (`ray_eval`)."""

from __future__ import annotations

from sdd_ray.evaluate.config import FIDELITY, EvaluateConfig
from sdd_ray.evaluate.examples import documents_id
from sdd_ray.evaluate.harness import evaluate_harness
from sdd_ray.evaluate.local_benchmarks import benchmark_data_dir
from sdd_ray.evaluate.recovery import average
from sdd_ray.models import load_model_and_tokenizer


def with_data_dir_found(cfg: EvaluateConfig) -> EvaluateConfig:
    """`cfg` with the data source this process finds written in (a folder, or the hub), so Ray workers use the same."""
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
        tasks = evaluate_harness(cfg.model, names, cfg)
        for name, result in tasks.items():
            result["num_fewshot"] = cfg.harness.task_settings[name].num_fewshot
    elif names:
        from sdd_ray.evaluate.builtin import evaluate_builtin

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
