"""`run_distill`: the stage's entry point for the CLI, `jobs/distill.py` and the whole-run pipeline."""

from __future__ import annotations

from pathlib import Path

from sdd_ray.data import check_data_source
from sdd_ray.distill.config import DistillConfig, resolve_backend
from sdd_ray.distill.dataflow import run_dataflow
from sdd_ray.guards import check_out, claim_out, model_record, source_record
from sdd_ray.models import as_spec, check_model_exists, check_tokenizer_files, load_tokenizer

OWN_FILES = ("data", "shards", "rejected.jsonl", "stats.json")
"""What the stage writes into its folder (removed by `overwrite`)."""
RESUMABLE = {"num_workers", "cpus_per_worker", "gpus_per_worker", "torch_threads", "batch_size", "shard_rows",
             "max_shards", "progress", "vllm"}
"""Settings a resume may change: they decide how fast rows are made, not what they hold."""


def resume_record(cfg: DistillConfig) -> dict:
    """What an output folder's rows depend on: the teacher's and the data's content, and the settings."""
    record = cfg.model_dump(mode="json", exclude=RESUMABLE | {"teacher", "data"}, exclude_defaults=True)
    record["teacher"] = model_record(cfg.teacher)
    record["data"] = {**cfg.data.model_dump(mode="json", exclude={"limit", "source"}), **source_record(cfg.data.source)}
    return record


def run_distill(cfg: DistillConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Distill `cfg.data` with `cfg.teacher` into `out` (resuming whatever an earlier run committed).

    Writes `out/data/*.parquet`, `out/rejected.jsonl` and `out/stats.json`; returns the stats. A
    folder written by another teacher, other data or other settings is refused (`overwrite`: start over).
    `backend: auto` is resolved first, so the folder records the engine that wrote its rows.
    """
    check_out(out, "distill", {"--data": cfg.data.source, "--teacher": cfg.teacher.path}, own_files=OWN_FILES[1:])
    check_data_source(cfg.data.source, split=cfg.data.split)
    check_model_exists(as_spec(cfg.teacher))  # a missing teacher fails here, before Ray starts; GGUF converts
    check_tokenizer_files(Path(as_spec(cfg.teacher).path))
    cfg = resolve_backend(cfg)
    if cfg.backend == "hf":
        load_tokenizer(as_spec(cfg.teacher))
    claim_out(out, "distill", resume_record(cfg), overwrite, clear=OWN_FILES)
    return run_dataflow(cfg, out)
