"""`run_distill`: the stage's entry point for the CLI, `jobs/distill.py` and the whole-run pipeline."""

from __future__ import annotations

from pathlib import Path

from sdd_ray.distill.config import DistillConfig


def run_distill(cfg: DistillConfig, out: str | Path) -> dict:
    """Distill `cfg.data` with `cfg.teacher` into `out` (resuming whatever an earlier run committed).

    Writes `out/data/*.parquet`, `out/rejected.jsonl` and `out/stats.json`; returns the stats.
    """
    from sdd_ray.distill.pipeline import run_pipeline
    from sdd_ray.models import as_spec

    if cfg.backend == "hf":
        from sdd_ray.models import load_tokenizer

        load_tokenizer(as_spec(cfg.teacher))  # a missing teacher fails here, before Ray starts
    return run_pipeline(cfg, out)
