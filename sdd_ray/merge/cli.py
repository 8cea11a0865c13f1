"""`sdd-ray merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console, given_flags, parse_list
from sdd_ray.config import ConfigError


def merge(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Option(help="The two parents (HF checkpoint or LoRA adapter dirs): `--models A B`, `--models A,B` "
                     "or `--models A --models B`. The first is the base (t = 0) unless --base-model says otherwise."),
    ] = None,
    more_models: Annotated[
        list[str] | None, typer.Argument(hidden=True, help="Catches B in `--models A B`.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output model directory (HF checkpoint + merge.json).")] = Path("merged"),
    t: Annotated[float | None, typer.Option("--t", help="Constant interpolation factor in [0, 1] (default 0.5).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Merge YAML (native or mergekit-style); flags override its fields.")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="Which parent is t = 0 and gives config/tokenizer.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Output dtype: float32, bfloat16 or float16 (default: base's).")] = None,
) -> None:
    """SLERP-merge two checkpoints of one architecture, streaming tensor by tensor, into an HF model dir."""
    from sdd_ray.merge.config import load_merge_config
    from sdd_ray.merge.run import run_merge

    if more_models and not models:
        raise ConfigError(f"command line: unexpected arguments {more_models}; give the parents with --models A B")
    if not models and config is None:
        raise ConfigError("command line: give --models A B (or --config merge.yaml)")
    parents = [path for item in (models or []) + (more_models or []) for path in parse_list(item)]
    overrides = given_flags(ctx, convert={"models": lambda _: parents}, skip=("config", "out", "more_models"))
    cfg = load_merge_config(config, overrides)
    summary = run_merge(cfg, out)
    console.print(
        f"merged {summary['num_tensors']} tensors ({summary['num_parameters']:,} parameters, "
        f"{summary['num_layers']} layers) with {summary['method']}: {summary['methods']} in {summary['seconds']:.1f} s"
    )
    console.print(f"wrote {out}")
