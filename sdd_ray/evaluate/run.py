"""Run an evaluation and write `results.json`."""

from __future__ import annotations

import json
from pathlib import Path

from sdd_ray.evaluate.config import EvaluateConfig


def average(tasks: dict[str, dict]) -> float:
    return sum(r["value"] for r in tasks.values()) / len(tasks)


def evaluate_model(cfg: EvaluateConfig) -> dict:
    """Results of `cfg.model` on `cfg.tasks`: {model, evaluator, tasks: {task: {metric, value, ...}}, average}."""
    import torch

    from sdd_ray.evaluate.builtin import evaluate_builtin
    from sdd_ray.models import load_model_and_tokenizer

    if cfg.evaluator != "builtin":
        raise NotImplementedError(f"evaluator {cfg.evaluator!r} is not available yet")
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    with torch.inference_mode():
        tasks = evaluate_builtin(model, tokenizer, cfg.tasks, cfg.limit or 1000, cfg.batch_size)
    return {"model": cfg.model.path, "evaluator": cfg.evaluator, "tasks": tasks, "average": average(tasks)}


def write_json(data: dict, out: str | Path) -> Path:
    """Write JSON atomically (a temporary file renamed over the target)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(out)
    return out


def run_evaluate(cfg: EvaluateConfig, out: str | Path) -> dict:
    results = evaluate_model(cfg)
    write_json(results, out)
    return results
