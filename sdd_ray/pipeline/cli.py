"""`sdd-ray run`: the whole pipeline from one YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console


def run(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")],
    out: Annotated[Path | None, typer.Option(help="Run directory (default: the config's `out`).")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: the config's ray.address, else RAY_ADDRESS, else a local Ray).")] = None,
) -> None:
    """Run every stage of CONFIG (outputs cached by content), then write report.md and summary.json."""
    from sdd_ray.pipeline.config import load_run_config
    from sdd_ray.pipeline.run import run_pipeline

    cfg = load_run_config(config, {"out": str(out) if out else None})
    summary = run_pipeline(cfg, address=address)
    for arm, result in summary["arms"].items():
        recovery = result["recovery_pct"]
        console.print(f"{arm:>9}  average {100 * result['average']:.1f}%"
                      + (f"  recovery {recovery:.1f}%" if recovery is not None else ""))
    for draft, result in summary["specdec"].items():
        console.print(f"{draft:>9}  mean accepted length {result['mean_accepted_length']:.2f}  speedup {result['speedup']:.2f}x")
    console.print(f"wrote {Path(summary['out']) / 'report.md'}")
