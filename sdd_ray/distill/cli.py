"""`sdd-ray distill`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import DATA_FLAGS, Columns, Split, console, model_spec, stage_config


def distill(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output directory (rerun with the same directory to resume).")],
    teacher: Annotated[str | None, typer.Option(help="Unpruned teacher: model directory or hub id; `toy-teacher` for the toy teacher.")] = None,
    data: Annotated[str | None, typer.Option(help="toy:arith|facts|instruct|all, a .jsonl/.parquet file or directory, or a HF dataset name[:config].")] = None,
    task_kind: Annotated[str | None, typer.Option(help="math|mc|general, or auto (each row's own kind). [default: auto]")] = None,
    columns: Columns = None,
    split: Split = None,
    backend: Annotated[str | None, typer.Option(help="vllm (ray.data.llm; vLLM's CUDA or CPU build), hf (transformers), or auto: vllm where vLLM is installed, else hf. [default: auto]")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Generation actors (hf) or vLLM engines. [default: 1]")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per hf actor; keep it fractional on small machines. [default: 0.5]")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per generation batch. [default: 16]")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Token limit of a rewrite. [default: 128]")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML DistillConfig; flags given on the command line override it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in --out when it holds a run with another teacher, data or settings.")] = False,
) -> None:
    """Have the teacher rewrite a fine-tuning data set (self-data distillation) on Ray Data."""
    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.distill.run import run_distill

    cfg = stage_config(ctx, DistillConfig, fields=DATA_FLAGS, convert={"teacher": model_spec})
    stats = run_distill(cfg, out, overwrite)
    console.print(f"rows in {stats['rows_in']}: out {stats['rows_out']} (teacher {stats['teacher_selected']}, "
                  f"original {stats['original_selected']}), rejected {stats['rows_rejected']}")
    console.print(f"{stats['generated_tokens']} tokens generated, {stats['tokens_per_s']:.1f} tokens/s, {stats['wall_s']:.1f} s")
    console.print(f"wrote {out}/data, {out}/rejected.jsonl, {out}/stats.json")
