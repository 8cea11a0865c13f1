"""`sdd-ray prune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console, model_spec, stage_config


def prune(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model directory or hub id; `toy-teacher` for the committed toy teacher.")] = None,
    block_size: Annotated[int, typer.Option(help="Layers to remove (n); 0 computes and plots the distances only.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the pruned checkpoint, pruning.json and distances.png.")] = Path("pruned"),
    metric: Annotated[str, typer.Option(help="angular (Gromov et al.) or bi (ShortGPT block influence).")] = "angular",
    calib: Annotated[str | None, typer.Option(help="Calibration texts: toy:all (its calibration split), a .jsonl/.parquet file, or a hub dataset org/name[:config]. [default: toy:all]")] = None,
    calib_split: Annotated[str | None, typer.Option(help="Split of --calib. [default: train; toy sources: calibration]")] = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text in --calib.")] = "text",
    num_samples: Annotated[int, typer.Option(help="At most this many calibration texts.")] = 256,
    max_length: Annotated[int | None, typer.Option(help="Truncate texts to this many tokens (default: whole texts, which must fit the context).")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 8,
    num_workers: Annotated[int, typer.Option(help="Ray Data calibration actors; 0 runs in this process without Ray.")] = 1,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs reserved per actor.")] = 0.5,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor.")] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Same as --block-size 0.")] = False,
    config: Annotated[Path | None, typer.Option(help="YAML PruneConfig; the flags given override it.")] = None,
) -> None:
    """Remove the block of contiguous decoder layers with the smallest distance; write a plain HF checkpoint."""
    import torch

    from sdd_ray.prune.config import PruneConfig
    from sdd_ray.prune.distances import choose_block
    from sdd_ray.prune.run import run_prune

    cfg = stage_config(ctx, PruneConfig, fields={"calib": "calib.source", "calib_split": "calib.split", "dry_run": "block_size"},
                       convert={"model": model_spec, "dry_run": lambda on: 0 if on else None})
    report = run_prune(cfg, out)
    for n, row in report["distances"].items():
        best = choose_block({int(n): torch.tensor(row)}, int(n))
        console.print(f"n={n:>2}  best start {best:>2}  {cfg.metric} {row[best]:.4f}")
    if report["removed_layers"]:
        console.print(f"removed layers {report['removed_layers']}: "
                      f"{report['num_layers_before']} -> {report['num_layers_after']} layers")
    else:
        console.print("dry run: no layers removed")
    console.print(f"wrote {out}")
