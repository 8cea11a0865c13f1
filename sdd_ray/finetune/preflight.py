"""Checks of the fine-tuning stage before any worker starts: its output folder, its rows, its resources."""

from __future__ import annotations

from pathlib import Path

from sdd_ray.data import check_data_source
from sdd_ray.finetune.config import RESUMABLE_CHANGES, FinetuneConfig
from sdd_ray.finetune.data import tokenize_rows
from sdd_ray.guards import (
    InputError,
    check_cluster_resources,
    check_out,
    claim_out,
    model_record,
    source_record,
)
from sdd_ray.io import STAGE_MARKER
from sdd_ray.models import check_model_exists

OWN_FILES = ("train_metrics.json", "checkpoints")
"""Files that show a folder is an earlier `sdd-ray finetune` output (written before the stage marker existed)."""
RUN_DIR_OWN_FILES = ("sdd_ray_finetune.json",)
"""The record a Ray Train run directory held before it got the stage marker."""
RUN_DIR_FLAG = "storage_path/run_name"


def resume_record(cfg: FinetuneConfig) -> dict:
    """What the run's weights depend on: the model's and the data's content, and the settings."""
    record = cfg.model_dump(mode="json", exclude=RESUMABLE_CHANGES | {"model", "data"}, exclude_defaults=True)
    record["model"] = model_record(cfg.model)
    record["data"] = {**source_record(cfg.data.source), **cfg.data.model_dump(mode="json", exclude={"source"})}
    return record


def checkpoint_storage(cfg: FinetuneConfig, out: Path) -> Path:
    """Where Ray Train keeps the run's checkpoints: `storage_path`, or `<out>/checkpoints` by default."""
    return Path(cfg.storage_path) if cfg.storage_path else out / "checkpoints"


def claim_finetune_out(cfg: FinetuneConfig, out: Path, overwrite: bool) -> None:
    """Refuse an `out` that is an input or a foreign folder, and a resume with other inputs (unless `overwrite`).

    One resume record covers the checkpoints: `out`'s when they live inside it (the default), else the
    same record, claimed the same way, in the Ray Train run directory (`storage_path/run_name`).
    """
    inputs = {"--model": cfg.model.path, "--data": cfg.data.source}
    run_dir = (checkpoint_storage(cfg, out) / cfg.run_name).resolve()
    outside = run_dir != out.resolve() and out.resolve() not in run_dir.parents
    check_out(out, "finetune", inputs, own_files=OWN_FILES)
    if outside:
        check_out(run_dir, "finetune", inputs, own_files=RUN_DIR_OWN_FILES, flag=RUN_DIR_FLAG)
    check_model_exists(cfg.model)  # before the folder is claimed: a bad model leaves nothing behind
    check_data_source(cfg.data.source, split=cfg.data.split)
    record = resume_record(cfg)
    clear = tuple(item.name for item in out.iterdir() if not item.name.startswith(".")) if out.is_dir() else ()
    claim_out(out, "finetune", record, overwrite, clear=clear)
    if outside:
        run_dir.mkdir(parents=True, exist_ok=True)
        clear = tuple(item.name for item in run_dir.iterdir() if item.name != STAGE_MARKER)
        claim_out(run_dir, "finetune", record, overwrite, clear=clear, flag=RUN_DIR_FLAG)


def check_workers(cfg: FinetuneConfig) -> None:
    """Ray Train waits forever for workers the cluster cannot hold: fail with the numbers instead."""
    check_cluster_resources("finetune", cfg.num_workers, cfg.cpus_per_worker, 1.0 if cfg.use_gpu else 0.0,
                            "--num-workers or --cpus-per-worker")


def check_usable_rows(cfg: FinetuneConfig, dataset, tokenizer) -> None:
    """At least one row survives tokenization (else every worker would fail with nothing to train on)."""
    reasons: dict[str, int] = {}
    for batch in dataset.iter_batches(batch_size=256, batch_format="pyarrow"):
        examples, stats = tokenize_rows(batch.to_pylist(), tokenizer, cfg.response_column, cfg.max_length,
                                        cfg.overlong)
        if examples:
            return
        for reason, count in stats.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items())) or "none read"
    raise InputError(f"--data {cfg.data.source}: no usable rows to train on (rows dropped: {summary})")
