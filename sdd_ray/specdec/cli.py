"""`sdd-ray specdec`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console, model_spec, stage_config
from sdd_ray.guards import check_out_file
from sdd_ray.models import check_model_exists, check_same_vocabulary


def parse_drafts(values: list[str]) -> dict[str, str]:
    """`NAME=PATH` or `PATH` (named after its directory) -> {name: path}, names made unique."""
    drafts: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name or value, value
        base, n = name, 2
        while name in drafts:
            name, n = f"{base}-{n}", n + 1
        drafts[name] = path
    return drafts


def specdec(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="Target model directory or hub id; `toy-teacher` for the toy teacher.")] = None,
    draft: Annotated[list[str] | None, typer.Option(help="Draft model, `PATH` or `NAME=PATH`; repeat for a table of drafts.")] = None,
    data: Annotated[str | None, typer.Option(help="JSONL/Parquet with a `prompt`, `instruction` or `question` field, a hub data set name[:config], or `toy:<task>[,<task>]` / `toy:all`.")] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data. [default: test]")] = None,
    out: Annotated[Path, typer.Option(help="Where to write specdec.json.")] = Path("specdec.json"),
    k: Annotated[int, typer.Option(help="Tokens proposed by the draft per step.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="New tokens per prompt at most.")] = 64,
    limit: Annotated[int, typer.Option(help="Number of prompts.")] = 20,
    temperature: Annotated[float, typer.Option(help="0 = greedy (checks identical outputs); > 0 = sampling.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (sampling only).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    config: Annotated[Path | None, typer.Option(help="YAML SpecDecConfig; the flags given override it.")] = None,
) -> None:
    """Speculative decoding vs target-only decoding on the same prompts; writes specdec.json."""
    from sdd_ray.data import check_data_source
    from sdd_ray.specdec.config import SpecDecConfig
    from sdd_ray.specdec.run import run_specdec

    cfg = stage_config(ctx, SpecDecConfig, fields={"draft": "drafts", "data": "data.source", "split": "data.split"},
                       convert={"target": model_spec,
                                "draft": lambda values: {name: model_spec(path) for name, path in parse_drafts(values).items()}})
    check_data_source(cfg.data.source, split=cfg.data.split)
    for spec in cfg.drafts.values():
        check_model_exists(cfg.target)
        check_model_exists(spec)
        check_same_vocabulary(cfg.target, spec, ("--target", "--draft"))
    check_out_file(out, [("--data", cfg.data.source), ("--target", cfg.target.path),
                         *(("--draft", spec.path) for spec in cfg.drafts.values())])
    result = run_specdec(cfg, out)
    t = result["target_only"]
    console.print(f"target-only: {t['tokens_per_s']:.1f} tok/s over {result['prompts']} prompts (k={result['k']})")
    for row in result["drafts"]:
        same = "" if row["outputs_identical"] is None else f"  identical={row['outputs_identical']}"
        console.print(
            f"{row['draft']:>12}  mean accepted length {row['mean_accepted_length']:.2f}  "
            f"acceptance {row['acceptance_rate']:.3f}  {row['tokens_per_s_speculative']:.1f} tok/s  "
            f"speedup {row['speedup']:.2f}x (cpu time {row['speedup_cpu_time']:.2f}x){same}"
        )
    console.print(f"wrote {out}")
