"""Run the fine-tuning stage and write its outputs.

`<out>/` becomes a plain HF model directory (config, safetensors weights, tokenizer) with
`train_metrics.json` and `loss.png` beside the weights; Ray Train keeps its checkpoints under
`<out>/checkpoints/` (or `storage_path`), and rerunning the same command resumes from the last one.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.finetune.loop import EXPORT_DIR, STATE_FILE
from sdd_ray.finetune.preflight import checkpoint_storage, claim_finetune_out
from sdd_ray.finetune.trainer import fit
from sdd_ray.io import staged, staged_file, write_json
from sdd_ray.plotting import pyplot, save_figure


def _copy_atomic(src: Path, dst: Path) -> None:
    if src.is_dir():
        with staged(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    else:
        with staged_file(dst) as tmp:
            shutil.copyfile(src, tmp)


def plot_loss(history: list[dict], out: Path, title: str) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="." if len(history) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def collect_metrics(cfg: FinetuneConfig, checkpoint_dir: Path, wall_seconds: float) -> dict:
    """`train_metrics.json`: the loss curve, throughput, memory, data counts and the config."""
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    summary = json.loads((checkpoint_dir / "summary.json").read_text())
    history = state["history"]
    return {
        "steps": history,
        "initial_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "total_steps": summary["total_steps"],
        "steps_per_epoch": summary["steps_per_epoch"],
        "resumed_from_step": summary["resumed_from_step"],
        "tokens": state["tokens"],
        "supervised_tokens": state.get("supervised_tokens", 0),
        "tokens_per_s": summary["tokens_per_s"],
        "tokens_per_cpu_s": summary["tokens_per_cpu_s"],
        "cpu_seconds_per_worker": summary["cpu_seconds"],
        "train_seconds": state["train_seconds"],
        "wall_seconds": wall_seconds,
        "peak_memory_mib": summary["peak_memory_mib"],
        "memory_kind": summary["memory_kind"],
        "data": {k: summary[k] for k in ("rows", "used", "truncated", "rejected")},
        "config": cfg.model_dump(mode="json"),
    }


def run_finetune(cfg: FinetuneConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Fine-tune `cfg.model` on `cfg.data` into `out`; returns the `train_metrics.json` content."""
    out = Path(out)
    claim_finetune_out(cfg, out, overwrite)  # never over an input or a foreign folder; resume only the same run
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = fit(cfg, checkpoint_storage(cfg, out), rejects=out / "rejected.jsonl")
    wall = time.perf_counter() - started
    with result.checkpoint.as_directory() as directory:
        directory = Path(directory)
        for item in sorted((directory / EXPORT_DIR).iterdir()):
            _copy_atomic(item, out / item.name)
        if (directory / "adapter").is_dir():
            _copy_atomic(directory / "adapter", out / "adapter")
        metrics = collect_metrics(cfg, directory, wall)
    write_json(metrics, out / "train_metrics.json")
    arm = "SDD" if cfg.response_column == "response" else "SFT"
    plot_loss(metrics["steps"], out / "loss.png", f"{cfg.strategy} {cfg.method} ({arm} column {cfg.response_column})")
    return metrics
