"""Ray Data wiring of self-data distillation: read -> validate + template -> generate -> select -> write.

Streaming throughout: Ray Data reads and prepares blocks while actors generate, and the driver
commits finished rows shard by shard (`shards.ShardWriter`), so memory holds a few blocks, never
the data set. Rows that are rejected, or were committed by an earlier run, bypass generation: the
prepared stream is split by a filter into the rows to generate and the rest, and the two branches
are unioned again before the writer (the cheap read/prepare runs once per branch).

Actors get fractional CPUs (`cpus_per_worker`, default 0.5): on a 2-CPU machine two 1-CPU actors
would hold every CPU and Ray Data's read tasks would never run (a silent hang).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sdd_ray.data import read_rows
from sdd_ray.distill.config import DistillConfig
from sdd_ray.distill.failures import TEACHER_FAILED, TeacherFailureError, failure_message, summarize_failures
from sdd_ray.distill.gap import distribution_gap
from sdd_ray.distill.gate import QualityGate
from sdd_ray.distill.generator import HFRewriter
from sdd_ray.distill.rewrite import input_reason, load_templates, prompt_for, row_kind, select_row
from sdd_ray.distill.schema import EMPTY_GENERATED, EMPTY_SELECTED, PREPARED, PROCESSED, to_table
from sdd_ray.distill.shards import ShardWriter
from sdd_ray.distill.vllm_backend import rewrite_with_vllm
from sdd_ray.guards import check_cluster_resources
from sdd_ray.io import write_text
from sdd_ray.runtime import connect

LIGHT_CPUS = 0.25  # CPU reservation of the cheap per-batch functions


def prepare_batch(batch: pa.Table, task_kind: str, templates: dict[str, str], done_ids: frozenset,
                  drop_missing_context: bool = False, max_reference_words: int | None = None) -> pa.Table:
    """Parsed rows (`sdd_ray.data.read_rows`) with the input rules applied, each row's kind resolved and its
    rewrite prompt rendered."""
    rows = batch.to_pylist()
    for row in rows:
        if not row["reject_reason"]:
            row["reject_reason"] = input_reason(row, drop_missing_context, max_reference_words)
        row["kind"] = row_kind(row, task_kind)
        row["skip"] = row["id"] in done_ids
        row["prompt"] = "" if row["reject_reason"] or row["skip"] else prompt_for(row, row["kind"], templates)
    return to_table(rows, PREPARED)


def to_generate(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.and_(pc.equal(batch["reject_reason"], ""), pc.invert(batch["skip"])))


def bypass(batch: pa.Table) -> pa.Table:
    """Rows that skip generation (rejected or already committed), with empty generated columns."""
    kept = batch.filter(pc.or_(pc.not_equal(batch["reject_reason"], ""), batch["skip"])).to_pylist()
    return to_table([{**row, **EMPTY_GENERATED, **EMPTY_SELECTED} for row in kept], PROCESSED)


def select_batch(batch: pa.Table, gate: dict | None = None) -> pa.Table:
    """Conditional selection; a row the teacher failed on is rejected (`teacher_failed`), not kept as original."""
    rows = batch.to_pylist()
    quality_gate = QualityGate.model_validate(gate) if gate is not None else None
    for row in rows:
        if row["generation_error"] and not row["reject_reason"]:
            row["reject_reason"] = TEACHER_FAILED
        row.update(EMPTY_SELECTED if row["reject_reason"] else select_row(row, quality_gate))
    return to_table(rows, PROCESSED)


def generate(ds, cfg: DistillConfig):
    """Prepared rows -> rows with the teacher's rewrites, on the configured backend."""
    if cfg.backend == "vllm":
        return rewrite_with_vllm(ds, cfg)
    import ray.data

    threads = cfg.torch_threads or max(1, round(cfg.cpus_per_worker))
    return ds.map_batches(
        HFRewriter,
        fn_constructor_kwargs={"teacher": cfg.teacher.model_dump(), "max_new_tokens": cfg.max_new_tokens,
                               "batch_size": cfg.batch_size, "torch_threads": threads},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None,
    )


def build_dataset(cfg: DistillConfig, done_ids: frozenset):
    """The lazy Ray dataset of processed rows (schema PROCESSED)."""
    templates = load_templates(cfg.templates)
    prepared = read_rows(cfg.data, cfg.batch_size).map_batches(
        prepare_batch,
        fn_kwargs={"task_kind": cfg.task_kind, "templates": templates, "done_ids": done_ids,
                   "drop_missing_context": cfg.drop_missing_context, "max_reference_words": cfg.max_reference_words},
        batch_format="pyarrow",
        num_cpus=LIGHT_CPUS,
    )
    generated = generate(prepared.map_batches(to_generate, batch_format="pyarrow", num_cpus=LIGHT_CPUS), cfg)
    gate = cfg.gate.model_dump() if cfg.gate is not None else None
    selected = generated.map_batches(select_batch, fn_kwargs={"gate": gate}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    return selected.union(prepared.map_batches(bypass, batch_format="pyarrow", num_cpus=LIGHT_CPUS))


def _progress(cfg: DistillConfig):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(unit="row", desc="distill", dynamic_ncols=True, smoothing=0.1)


def run_dataflow(cfg: DistillConfig, out: str | Path) -> dict:
    """Run (or resume) the job into `out`; returns the stats written to `out/stats.json`.

    Raises `TeacherFailureError` (after writing the stats) when too many rows failed in the teacher.
    """
    import ray

    connect(log_to_driver=False)
    if cfg.backend == "hf":
        check_cluster_resources("distill", cfg.num_workers, cfg.cpus_per_worker, cfg.gpus_per_worker)
    ray.data.DataContext.get_current().enable_progress_bars = False
    writer = ShardWriter(Path(out), cfg.shard_rows)
    start = time.perf_counter()
    bar = _progress(cfg)
    stopped_early = False
    first_output = None  # (seconds, generated tokens) when the first generated batch reached the driver
    for batch in build_dataset(cfg, writer.done_ids).iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            writer.add(row)
            if writer.full:
                writer.flush()
        generated = writer.run["generated_tokens"] + writer.pending["generated_tokens"]
        if first_output is None and generated:
            first_output = (time.perf_counter() - start, generated)
        if bar is not None:
            bar.update(batch.num_rows)
            elapsed = time.perf_counter() - start
            bar.set_postfix(tok_s=f"{generated / elapsed:.0f}", refresh=False)
        if cfg.max_shards is not None and writer.run["shards"] >= cfg.max_shards:
            stopped_early = True
            break
    if not stopped_early:
        writer.flush()
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start
    return finish(cfg, writer, wall, first_output, complete=not stopped_early)


def steady_tokens_per_s(wall: float, tokens: int, first_output: tuple[float, int] | None) -> float:
    """Generation rate after the first generated batch arrived: start-up (actors, model loads) excluded."""
    if first_output is None or wall <= first_output[0]:
        return 0.0
    return (tokens - first_output[1]) / (wall - first_output[0])


def finish(cfg: DistillConfig, writer: ShardWriter, wall: float, first_output: tuple[float, int] | None,
           complete: bool) -> dict:
    summary = writer.totals()
    writer.publish_rejected(summary["rejected"])
    totals = summary["totals"]
    failures = summarize_failures(summary["rejected"], totals["teacher_selected"] + totals["original_selected"])
    error = failure_message(failures, cfg.max_teacher_failure_rate, str(writer.out))
    stats = {
        "rows_in": writer.run["rows_in"],
        **{key: totals[key] for key in ("rows_out", "rows_rejected", "teacher_selected", "original_selected",
                                        "prompt_tokens", "generated_tokens")},
        "teacher_failed": failures.pop("teacher_failed"),
        "teacher_failures": {**failures, "max_rate": cfg.max_teacher_failure_rate},
        "error": error,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(writer.run["generated_tokens"] / wall, 2) if wall > 0 else 0.0,
        "backend": cfg.backend,
        "num_workers": cfg.num_workers,
        "complete": complete and writer.run["rows_in"] == totals["rows_out"] + totals["rows_rejected"],
        "this_run": {
            **{key: writer.run[key] for key in ("rows_in", "resumed", "shards", "rows_out", "rows_rejected",
                                                "generated_tokens")},
            "first_output_s": round(first_output[0], 3) if first_output else None,
            "steady_tokens_per_s": round(steady_tokens_per_s(wall, writer.run["generated_tokens"], first_output), 2),
        },
        "by_task": totals["by_task"],
        "selection_reasons": totals["selection_reasons"],
        "selection_examples": totals["selection_examples"],
        "copy_rate": round(totals["copies"] / totals["teacher_selected"], 4) if totals["teacher_selected"] else 0.0,
        "words": {"reference": totals["reference_words"], "selected": totals["selected_words"]},
        "teacher": cfg.teacher.path,
        "data": cfg.data.source,
    }
    if cfg.gap_rows and stats["complete"]:
        stats["distribution_gap"] = distribution_gap(cfg.teacher, writer.data_dir, cfg.gap_rows)
    write_text(Path(writer.out) / "stats.json", json.dumps(stats, indent=2))
    if error:
        raise TeacherFailureError(error)
    return stats
