"""`sdd-ray evaluate` and `sdd-ray compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console, model_spec, parse_list, stage_config
from sdd_ray.evaluate.compare import run_compare
from sdd_ray.guards import check_out_file


def evaluate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model directory or hub id; `toy-teacher` for the committed toy teacher.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write results.json.")] = Path("results.json"),
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated task names [default: arith,facts,instruct (builtin); the leaderboard-v1 six (harness)]."),
    ] = None,
    evaluator: Annotated[str | None, typer.Option(help="builtin (toy tasks) or harness (lm-eval) [default: builtin].")] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Unpruned baseline: a results.json, or a model to evaluate too; adds recovery_pct.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="The original model the `fidelity` task measures against (KL, top-1 agreement).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Examples per task, a seeded random sample of the split; 0: all [default: 200].")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [default: 32].")] = None,
    backend: Annotated[str | None, typer.Option(help="Harness backend: hf (CPU/GPU) or vllm (GPU) [default: hf].")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda. [default: auto]")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16. [default: auto]")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the document sample and the toy eval split [default: 0].")] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(help="Local copies of the real benchmarks (eval/, gsm8k/) [default: $SDD_RAY_DATA_DIR, else ../shared/data if present]."),
    ] = None,
    data_source: Annotated[
        str | None, typer.Option(help="Real benchmarks from: auto (local folder if found, else hub), local or hub [default: auto].")
    ] = None,
    use_ray: Annotated[
        bool | None, typer.Option("--ray/--no-ray", help="Evaluate as Ray tasks (model and baseline in parallel) [default: no].")
    ] = None,
    num_cpus: Annotated[float | None, typer.Option(help="CPUs per Ray evaluation [default: 1].")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="GPUs per Ray evaluation [default: 0].")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML EvaluateConfig (task table, harness settings); flags given here override it.")
    ] = None,
) -> None:
    """Evaluate a model on a task suite and write results.json (per-task accuracy, n, average, recovery %)."""
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.run import run_evaluate

    cfg = stage_config(
        ctx, EvaluateConfig,
        fields={"device": "model.device", "dtype": "model.dtype", "backend": "harness.backend", "data_dir": "harness.data_dir",
                "data_source": "harness.data_source", "num_cpus": "resources.num_cpus", "num_gpus": "resources.num_gpus"},
        convert={"model": model_spec, "tasks": parse_list, "limit": lambda n: n or None},
    )
    check_out_file(out, [("--model", cfg.model.path), ("--baseline", cfg.baseline)])
    results = run_evaluate(cfg, out)
    for task, r in results["tasks"].items():
        stderr = f" ± {r['stderr']:.3f}" if r.get("stderr") is not None else ""
        console.print(f"{task:>14}  {r['metric']:<26} {r['value']:.3f}{stderr}  (n={r['n']})")
    if results["average"] is not None:
        console.print(f"{'average':>14}  {'':<26} {results['average']:.3f}")
    if "fidelity" in results:
        f = results["fidelity"]
        console.print(f"{'fidelity':>14}  KL {f['kl']:.4f} nats/token, top-1 agreement {f['top1_agreement']:.3f}, "
                      f"expected accepted length {f['expected_accepted_length']:.2f} (k={f['k']}), NLL {f['nll']:.3f} "
                      f"(n={f['n']}, {f['tokens']} tokens)")
    if "recovery_pct" in results:
        console.print(f"{'recovery':>14}  {'':<26} {results['recovery_pct']:.1f}% of {results['baseline']['model']}")
    console.print(f"wrote {out}")


def compare(
    results: Annotated[list[Path], typer.Argument(help="results.json files, one per model (the first is the baseline).")],
    out: Annotated[Path, typer.Option(help="Folder for comparison.md, comparison.csv and comparison.png.")] = Path("comparison"),
    names: Annotated[
        str | None, typer.Option(help="Comma-separated row names, one per file (e.g. baseline,no_ft,sft,sdd,merged).")
    ] = None,
    baseline: Annotated[str | None, typer.Option(help="Name of the row recovery is measured against [default: the first].")] = None,
    pairs: Annotated[
        str | None,
        typer.Option(help="Paired comparisons b:a (b - a) by name, comma-separated, e.g. sdd:sft,sdd:no_ft [default: every row vs the first]."),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the paired CIs.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
) -> None:
    """Paper-style table of several results.json files, and paired differences with CIs and p-values."""
    written = run_compare(results, out, parse_list(names) if names else None, baseline,
                          parse_list(pairs) if pairs else None, resamples, seed)
    console.print(Path(written["files"]["markdown"]).read_text())
    for path in written["files"].values():
        console.print(f"wrote {path}")
