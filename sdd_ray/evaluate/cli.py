"""`sdd-ray evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sdd_ray.cli_utils import console, parse_list


def evaluate(
    model: Annotated[str, typer.Option(help="Model directory or hub id; `toy-teacher` for the committed toy teacher.")],
    out: Annotated[Path, typer.Option(help="Where to write results.json.")] = Path("results.json"),
    tasks: Annotated[str, typer.Option(help="Comma-separated task names.")] = "arith,facts,instruct",
    evaluator: Annotated[str, typer.Option(help="builtin (toy tasks) or harness (lm-eval).")] = "builtin",
    limit: Annotated[Optional[int], typer.Option(help="Examples per task.")] = 200,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 32,
) -> None:
    """Evaluate a model on a task suite and write results.json (per-task accuracy, n, average)."""
    from sdd_ray.config import validate_config
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.run import run_evaluate
    from sdd_ray.models import as_spec

    cfg = validate_config(
        EvaluateConfig,
        {"model": as_spec(model).model_dump(), "tasks": parse_list(tasks), "evaluator": evaluator,
         "limit": limit, "batch_size": batch_size},
        source="command line",
    )
    results = run_evaluate(cfg, out)
    for task, r in results["tasks"].items():
        console.print(f"{task:>10}  {r['metric']:<12} {r['value']:.3f}  (n={r['n']})")
    console.print(f"{'average':>10}  {results['average']:.3f}")
    console.print(f"wrote {out}")
