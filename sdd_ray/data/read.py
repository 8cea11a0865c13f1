"""Reading a data spec: raw records in order on the driver (`iter_records`, `load_rows`), or the same
records and checked rows as a Ray Dataset (`read_records`, `read_rows`) for the stages that stream.

Every path starts at `sources.resolve` and ends at `records.parse_record`, so a row gets the same id,
the same verdict and the same reason whichever stage reads it. JSON lines are read as text and
parsed by the validator (Ray's JSON reader would guess column types: an id `"000"` would become 0).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from sdd_ray.data.records import decode_line, parse_record, parsed_schema, reject_duplicate
from sdd_ray.data.sources import Source, hub_dataset, resolve
from sdd_ray.data.spec import CANONICAL, DataSpec, column_map, default_kind, default_task
from sdd_ray.toy.sources import toy_records

LIGHT_TASK = {"num_cpus": 0.25}
"""CPU reservation of the read tasks: on a 2-CPU machine, actors holding whole CPUs would starve them."""
MAX_BLOCKS = 20_000  # cap on read blocks; beyond it blocks hold more than one generation batch


def iter_records(spec: DataSpec, flag: str = "--data") -> Iterator[Any]:
    """Raw records of `spec` in order (JSONL lines as text, so that a bad line is a bad row, not a crash)."""
    source = resolve(spec, flag)

    def records() -> Iterator[Any]:
        if source.kind == "toy":
            yield from toy_records(spec.source, spec.limit, spec.split)
        elif source.kind == "jsonl":
            for path in source.files:
                with open(path, "rb") as handle:
                    yield from (decode_line(line) for line in handle if line.strip())
        elif source.kind == "parquet":
            import pyarrow.parquet as pq

            for path in source.files:
                for batch in pq.ParquetFile(path).iter_batches():
                    yield from batch.to_pylist()
        else:
            yield from hub_dataset(source, spec.split, flag)

    for count, record in enumerate(records()):
        if spec.limit is not None and count >= spec.limit:
            return
        yield record


def split_rows(rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """(valid, rejected) of parsed rows in order, with the duplicate-id rule applied (the first one is kept)."""
    valid: list[dict] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    for row in rows:
        reject_duplicate(row, row["id"] in seen)
        if row["reject_reason"]:
            rejected.append(row)
            continue
        seen.add(row["id"])
        valid.append(row)
    return valid, rejected


def load_rows(spec: DataSpec) -> tuple[list[dict], list[dict]]:
    """(valid rows, rejected rows) of `spec` in the canonical schema; fine for data that fits in memory.

    A repeated id is rejected after its first occurrence, so ids are unique among valid rows.
    """
    columns, task, kind = column_map(spec), default_task(spec), default_kind(spec)
    valid, rejected = split_rows(parse_record(record, columns, task, kind) for record in iter_records(spec))
    return [{field: row[field] for field in CANONICAL} for row in valid], rejected


def _blocks(rows: int, rows_per_block: int | None) -> int | None:
    return None if rows_per_block is None else min(MAX_BLOCKS, max(1, -(-rows // rows_per_block)))


def _count_lines(paths: Iterable[Path]) -> int:
    count = 0
    for path in paths:  # a last line without a newline counts too
        with open(path, "rb") as handle:
            count += 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return count


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def as_text(batch: pa.Table) -> pa.Table:
    """Records of typed columns (Parquet, the hub) as JSON text lines, the one form the validator reads."""
    return pa.table({"text": pa.array([json.dumps(r, default=str) for r in batch.to_pylist()], pa.string())})


def _text_lines(source: Source, rows_per_block: int | None):
    import ray.data

    if all(map(_is_utf8, source.files)):
        blocks = _blocks(_count_lines(source.files), rows_per_block)
        return ray.data.read_text([str(p) for p in source.files], override_num_blocks=blocks, **LIGHT_TASK)
    # Ray's text reader would fail on the whole file: read the lines here, each bad one a row to reject.
    items = [{"text": decode_line(line)} for path in source.files
             for line in path.read_bytes().splitlines() if line.strip()]
    return ray.data.from_items(items, override_num_blocks=_blocks(len(items), rows_per_block))


def read_records(spec: DataSpec, rows_per_block: int | None = None, flag: str = "--data"):
    """The one way from a spec to a Ray Dataset: raw records as a `text` column of JSON lines.

    Local sources are read in blocks of about `rows_per_block` rows (a generation batch), so that
    every actor of a pool gets work; None lets Ray Data choose.
    """
    import ray.data

    source = resolve(spec, flag)
    if source.kind == "toy":
        items = [{"text": json.dumps(r)} for r in toy_records(spec.source, spec.limit, spec.split)]
        ds = ray.data.from_items(items, override_num_blocks=_blocks(len(items), rows_per_block))
    elif source.kind == "jsonl":
        ds = _text_lines(source, rows_per_block)
    elif source.kind == "parquet":
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in source.files)
        ds = ray.data.read_parquet([str(p) for p in source.files], override_num_blocks=_blocks(rows, rows_per_block),
                                   **LIGHT_TASK).map_batches(as_text, batch_format="pyarrow", **LIGHT_TASK)
    else:
        ds = ray.data.from_huggingface(hub_dataset(source, spec.split, flag)).map_batches(
            as_text, batch_format="pyarrow", **LIGHT_TASK)
    return ds.limit(spec.limit) if spec.limit is not None else ds


def parse_batch(batch: pa.Table, columns, task: str, kind: str, extra: tuple[str, ...] = ()) -> pa.Table:
    """`parse_record` over a batch of `read_records`."""
    rows = [parse_record(text, columns, task, kind, extra) for text in batch.column("text").to_pylist()]
    return pa.Table.from_pylist(rows, schema=parsed_schema(extra))


def read_rows(spec: DataSpec, rows_per_block: int | None = None, extra: tuple[str, ...] = (), flag: str = "--data"):
    """`read_records` parsed: every row in the canonical columns (and `extra`), all text, with its verdict.

    The duplicate-id rule needs the rows in order, so it is left to the consumer (`split_rows`, or
    distillation's shard writer).
    """
    return read_records(spec, rows_per_block, flag).map_batches(
        parse_batch,
        fn_kwargs={"columns": column_map(spec), "task": default_task(spec), "kind": default_kind(spec),
                   "extra": tuple(extra)},
        batch_format="pyarrow",
        **LIGHT_TASK,
    )
