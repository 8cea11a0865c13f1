"""`sdd-ray finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import DATA_FLAGS, Columns, Split, console, model_spec, parse_list, stage_config


def finetune(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output: HF model directory + train_metrics.json + loss.png (+ checkpoints/).")],
    model: Annotated[str | None, typer.Option(help="Model directory or hub id (the pruned model); `toy-teacher` for the toy teacher.")] = None,
    data: Annotated[str | None, typer.Option(help="A distillation output dir, a .parquet/.jsonl file or dir, toy:<task>|toy:all, or a HF dataset name[:config].")] = None,
    columns: Columns = None,
    split: Split = None,
    config: Annotated[Path | None, typer.Option(help="YAML FinetuneConfig; the flags given override it.")] = None,
    response_column: Annotated[str | None, typer.Option(help="response (self-distilled, SDD arm) or original_response (SFT arm).")] = None,
    strategy: Annotated[str | None, typer.Option(help="deepspeed (ZeRO) or ddp.")] = None,
    zero_stage: Annotated[int | None, typer.Option(help="DeepSpeed ZeRO stage: 2 or 3.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Weights' dtype to load, train and export in: auto (bfloat16 on a GPU, float32 on the CPU), float32 or bfloat16.")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapters (merged on export) or full fine-tuning.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA alpha.")] = None,
    target_modules: Annotated[str | None, typer.Option(help="Comma-separated LoRA target modules.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers.")] = None,
    use_gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="One GPU per worker, or CPU workers.")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option(help="CPUs per worker (also its torch threads on CPU).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per worker per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (cosine schedule with warm-up).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per sequence (prompt + response).")] = None,
    overlong: Annotated[str | None, typer.Option(help="truncate or reject sequences over max-length (both counted).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps (0: at the end only).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the adapter init and the data order.")] = None,
    save_adapter: Annotated[bool, typer.Option("--save-adapter", help="Also write the LoRA adapter alone to OUT/adapter.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in --out when it holds a run with another model, data or settings.")] = False,
) -> None:
    """Fine-tune a (pruned) model on Ray Train; rerunning the same command resumes from its last checkpoint."""
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.run import run_finetune

    cfg = stage_config(
        ctx, FinetuneConfig,
        fields={**DATA_FLAGS, "dtype": "model.dtype", "lora": "method", "lora_rank": "lora.rank", "lora_alpha": "lora.alpha",
                "target_modules": "lora.target_modules"},
        convert={"model": model_spec, "lora": lambda on: "lora" if on else "full", "target_modules": parse_list},
    )
    metrics = run_finetune(cfg, out, overwrite)
    data_counts = metrics["data"]
    console.print(f"steps {metrics['total_steps']}  loss {metrics['initial_loss']:.4f} -> {metrics['final_loss']:.4f}  "
                  f"{metrics['tokens_per_s']:,.0f} tok/s  wall {metrics['wall_seconds']:.0f}s")
    console.print(f"rows {data_counts['rows']}: used {data_counts['used']}, truncated {data_counts['truncated']}, "
                  f"rejected {data_counts['rejected']}")
    console.print(f"wrote {out} (HF model, train_metrics.json, loss.png)")
