"""Fine-tuning data sets: where they come from, how their columns map, and which rows are usable.

Every stage that reads (instruction, input, response) rows goes through here, so that the same row
gets the same `id`, the same task name and the same verdict everywhere. A row in the canonical
schema is `{id, task, kind, instruction, input, response}`, all strings; `kind` is the task kind
(`math`, `mc`, `general`) when the source says it, else "".

Sources (`DataSpec.source`, one syntax on every command line and in every config; a plain string
stands for `{source: ...}`):
- `toy:arith`, `toy:facts`, `toy:instruct`, `toy:arith,facts`, `toy:all`: the toy world, its split
  chosen by `split` (`sdd_ray.toy.sources`: train = the fine-tuning split, test, calibration);
- a local `*.jsonl` / `*.json` (one JSON object per line) or `*.parquet` file or directory (a
  distillation output's `data/` folder included);
- anything else is a Hugging Face dataset name (`openai/gsm8k`, config after a colon: `openai/gsm8k:main`).
  Where a local copy of a hub data set exists (`local_copy`: `$SDD_RAY_DATA_DIR`, else a `shared/data`
  folder beside the repository), it is read instead of the hub, in the same layout.

Bad rows are not errors: `parse_record` returns the row with a `reject_reason`, and callers route it
to a rejects file, so one malformed line never kills a 50k-row job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from sdd_ray.answers import KINDS
from sdd_ray.config import StrictModel

log = logging.getLogger(__name__)

CANONICAL = ("id", "task", "kind", "instruction", "input", "response")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


class ColumnMap(StrictModel):
    """Which source column holds each canonical field. Optional columns may be absent from the data."""

    instruction: str = "instruction"
    """The prompt / question column (required in every row)."""
    input: str | None = "input"
    """Extra context for the instruction (optional; missing or null reads as "")."""
    response: str = "response"
    """The reference response column (required in every row)."""
    id: str | None = "id"
    """A stable row id; when absent the id is a sha1 of the row's content."""
    task: str | None = "task"
    """The task name of the row; when absent the data set's `task` name is used."""
    kind: str | None = "kind"
    """The task kind (math|mc|general) of the row, if the data carries it."""


PRESETS: dict[str, ColumnMap] = {
    "toy": ColumnMap(),
    "gsm8k": ColumnMap(instruction="question", response="answer"),
    "alpaca": ColumnMap(instruction="instruction", input="input", response="output"),
    "dolly": ColumnMap(instruction="instruction", input="context", response="response", task="category"),
    "openmath": ColumnMap(instruction="problem", response="generated_solution"),
}
PRESET_KIND = {"gsm8k": "math", "openmath": "math", "alpaca": "general", "dolly": "general"}


class DataSpec(StrictModel):
    """A data set as every stage takes it: its source, split, column mapping, and how much of it to use."""

    source: str
    """`toy:<task>[,<task>]|toy:all`, a local .jsonl/.json/.parquet file or directory, or a HF dataset name[:config]."""
    columns: str | ColumnMap = "auto"
    """A preset (toy, gsm8k, alpaca, dolly, openmath), an explicit mapping, or `auto` (guessed from the source name)."""
    split: str = "train"
    """Split of a Hugging Face dataset; of a toy source: train (fine-tuning), test or calibration."""
    task: str | None = None
    """Task name for rows without a task column (default: the preset name, else `default`)."""
    limit: int | None = Field(default=None, gt=0)
    """Use only the first `limit` rows (for toy sources, rows are interleaved across tasks first)."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data):
        """`"openai/gsm8k:main"` is short for `{source: "openai/gsm8k:main"}`."""
        return {"source": data} if isinstance(data, str) else data

    @field_validator("source")
    @classmethod
    def _known_toy_tasks(cls, source: str) -> str:
        if source.startswith("toy:"):
            from sdd_ray.toy.sources import toy_tasks  # the toy world is imported only for a toy source

            toy_tasks(source)
        return source


def with_split(value: Any, split: str, toy_only: bool = False) -> Any:
    """A DataSpec value (a string or a mapping) with a stage's own default `split` when it names none.

    Specdec measures on `test`; pruning calibrates toy sources on their `calibration` split.
    """
    spec = {"source": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or "split" in spec or (toy_only and not str(spec.get("source", "")).startswith("toy:")):
        return value
    return {**spec, "split": split}


def capped(spec: DataSpec, limit: int | None) -> DataSpec:
    """`spec` reading at most `limit` rows as well as at most its own `limit` (a stage's sample size)."""
    limits = [n for n in (spec.limit, limit) if n is not None]
    return spec.model_copy(update={"limit": min(limits) if limits else None})


def source_type(source: str) -> str:
    """`toy`, `jsonl`, `parquet` or `hf`."""
    if source.startswith("toy:"):
        return "toy"
    path = Path(source)
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    folder = data_folder(path)
    if path.suffix == ".parquet" or any(folder.glob("*.parquet")):
        return "parquet"
    if any(folder.glob("*.jsonl")):
        return "jsonl"
    return "hf"


def data_folder(path: Path) -> Path:
    """The folder holding a local source's files: a `data/` subfolder with data files (a distillation
    output keeps its rows there, beside `stats.json` and `rejected.jsonl`), else the folder itself."""
    rows = path / "data"
    if rows.is_dir() and any(p.suffix in DATA_SUFFIXES for p in rows.iterdir()):
        return rows
    return path


def preset_name(spec: DataSpec) -> str | None:
    """The column preset in use: named, or guessed from the source (`toy:`, `gsm8k`, `alpaca`, ...)."""
    if isinstance(spec.columns, ColumnMap):
        return None
    if spec.columns != "auto":
        if spec.columns not in PRESETS:
            raise ValueError(f"unknown column preset {spec.columns!r}; choose from {sorted(PRESETS)} or give a mapping")
        return spec.columns
    kind = source_type(spec.source)
    if kind == "toy":
        return "toy"
    # a local file by its own name only: a folder (runs/gsm8k-sdd, a distillation output) picks no preset
    path = Path(spec.source)
    lowered = (spec.source if kind == "hf" else path.name if path.is_file() else "").lower()
    return next((name for name in PRESETS if name in lowered), None)


def column_map(spec: DataSpec) -> ColumnMap:
    if isinstance(spec.columns, ColumnMap):
        return spec.columns
    name = preset_name(spec)
    return PRESETS[name] if name else ColumnMap()


def default_task(spec: DataSpec) -> str:
    if spec.task:
        return spec.task
    return preset_name(spec) or "default"


def default_kind(spec: DataSpec) -> str:
    """The kind implied by the preset (gsm8k -> math), or "" when the preset does not say."""
    return PRESET_KIND.get(preset_name(spec) or "", "")


def content_id(*fields: str) -> str:
    """A stable id from a row's content: the first 16 hex digits of a sha1."""
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:16]


NOT_UTF8 = "__sdd_ray_not_utf8__"
"""Key of the stand-in record of a line that is not valid UTF-8 (`decode_line`); `parse_record` rejects it."""


def decode_line(line: bytes) -> str:
    """A JSON line as text; a line that is not UTF-8 becomes a stand-in record, so it is one rejected row, not a crash."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        text = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        return json.dumps({NOT_UTF8: f"byte {error.start}", "text": text})


def _type_name(value: Any) -> str:
    return type(value).__name__


def parse_record(
    raw: Any, columns: ColumnMap, task: str = "default", kind: str = ""
) -> dict[str, str]:
    """A canonical row from a raw record (a dict, or a JSON text line), plus `reject_reason` ("" when valid).

    Rejected rows keep what could be read and a `raw` copy of the record for the rejects file.
    """
    row = {"id": "", "task": task, "kind": kind, "instruction": "", "input": "", "response": "",
           "reject_reason": "", "raw": ""}
    if isinstance(raw, str):
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            row.update(id=content_id(raw), reject_reason=f"not valid JSON ({error.msg})", raw=raw)
            return row
    else:
        record = raw
    if isinstance(record, dict) and NOT_UTF8 in record:
        row.update(id=content_id(record["text"]), reject_reason=f"not valid UTF-8 (at {record[NOT_UTF8]})",
                   raw=record["text"])
        return row
    if not isinstance(record, dict):
        text = json.dumps(record, default=str)
        row.update(id=content_id(text), reject_reason=f"expected a JSON object, got {_type_name(record)}", raw=text)
        return row

    problems = []
    for field in ("instruction", "input", "response"):
        column = getattr(columns, field)
        value = record.get(column) if column else None
        if field != "input" and column not in record:
            problems.append(f"missing field {field!r} (column {column!r})")
        elif value is None and field == "input":
            continue
        elif not isinstance(value, str):
            problems.append(f"{field} (column {column!r}): expected a string, got {_type_name(value)}")
        elif field != "input" and not value.strip():
            problems.append(f"{field} (column {column!r}) is empty")
        else:
            row[field] = value
    for field in ("task", "kind"):
        column = getattr(columns, field)
        value = record.get(column) if column else None
        if isinstance(value, str) and value:
            row[field] = value
    if row["kind"] and row["kind"] not in KINDS:
        problems.append(f"kind {row['kind']!r} is not one of {KINDS}")
    given = record.get(columns.id) if columns.id else None
    if given is None or given == "":
        row["id"] = content_id(row["instruction"], row["input"], row["response"])
    elif isinstance(given, (str, int)) and not isinstance(given, bool):
        row["id"] = str(given)
    else:
        problems.append(f"id (column {columns.id!r}): expected a string or integer, got {_type_name(given)}")
        row["id"] = content_id(json.dumps(record, sort_keys=True, default=str))
    if problems:
        row["reject_reason"] = "; ".join(problems)
        row["raw"] = json.dumps(record, default=str)
        if given is None or given == "":
            row["id"] = content_id(json.dumps(record, sort_keys=True, default=str))
    return row


LOCAL_COPIES = {
    "openai/gsm8k": "gsm8k/{split}.jsonl",
    "gsm8k": "gsm8k/{split}.jsonl",
    "databricks/databricks-dolly-15k": "finetune/dolly_partial/{split}.jsonl",
    "tatsu-lab/alpaca": "finetune/alpaca_demo/{split}.jsonl",
}
"""Hub data sets -> their copy under the local data folder (hub layout, one JSON object a line).
The Dolly and Alpaca copies hold a subset of the hub's rows (see the data folder's README)."""


DATA_DIR_ENV = "SDD_RAY_DATA_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
"""Local copies of public data sets: `$SDD_RAY_DATA_DIR`, else a `shared/data` folder beside the repository."""


def local_data_dir() -> Path | None:
    """`$SDD_RAY_DATA_DIR`, else `DEFAULT_DATA_DIR` when it exists, else None (use the hub)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def local_copy(name: str, split: str) -> Path | None:
    """The local file standing in for hub data set `name`'s `split`, or None."""
    folder = local_data_dir()
    if folder is None or name not in LOCAL_COPIES:
        return None
    path = folder / LOCAL_COPIES[name].format(split=split)
    return path if path.is_file() else None


def with_local_copy(spec: DataSpec) -> DataSpec:
    """`spec` reading the local copy of its hub data set when there is one (`local_copy`), else `spec`.

    Only the source changes: column presets, task and kind still follow the original spec.
    """
    if source_type(spec.source) != "hf":
        return spec
    copy = local_copy(_hf_name(spec.source)[0], spec.split)
    if copy is None:
        return spec
    log.info("%s (%s): reading the local copy %s", spec.source, spec.split, copy)
    return spec.model_copy(update={"source": str(copy)})


def _hf_name(source: str) -> tuple[str, str | None]:
    name, _, config = source.partition(":")
    return name, config or None


def iter_records(spec: DataSpec) -> Iterator[Any]:
    """Raw records of `spec` in order (JSONL lines as text, so that a bad line is a bad row, not a crash)."""
    spec = with_local_copy(spec)
    kind = source_type(spec.source)
    count = 0

    def records() -> Iterator[Any]:
        if kind == "toy":
            from sdd_ray.toy.sources import toy_records  # the toy world only when a toy source is read

            yield from toy_records(spec.source, spec.limit, spec.split)
        elif kind == "jsonl":
            for path in local_files(spec.source, (".jsonl", ".json")):
                with open(path, "rb") as handle:
                    for line in handle:
                        if line.strip():
                            yield decode_line(line)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            for path in local_files(spec.source, (".parquet",)):
                for batch in pq.ParquetFile(path).iter_batches():
                    yield from batch.to_pylist()
        elif Path(spec.source).exists():
            raise FileNotFoundError(f"{spec.source}: no data/*.parquet, *.parquet, *.jsonl or *.json files here")
        else:
            import datasets

            name, config = _hf_name(spec.source)
            yield from datasets.load_dataset(name, config, split=spec.split, streaming=True)

    for record in records():
        if spec.limit is not None and count >= spec.limit:
            return
        count += 1
        yield record


def local_files(source: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The data files of a local file or directory, sorted."""
    path = data_folder(Path(source))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in suffixes)
    else:
        files = [path]
    missing = [p for p in files if not p.is_file()]
    if not files or missing:
        raise FileNotFoundError(f"data source {source!r}: no {'/'.join(suffixes)} files found")
    return files


def reject_duplicate(row: dict, seen_before: bool) -> None:
    """The one rule for repeated ids: a valid row whose id came before is rejected (the first one is kept)."""
    if seen_before and not row["reject_reason"]:
        row["reject_reason"] = f"duplicate id {row['id']!r}"


def load_rows(spec: DataSpec) -> tuple[list[dict], list[dict]]:
    """(valid rows, rejected rows) of `spec` in the canonical schema; fine for data that fits in memory.

    A repeated id is rejected after its first occurrence, so ids are unique among valid rows.
    """
    columns, task, kind = column_map(spec), default_task(spec), default_kind(spec)
    valid: list[dict] = []
    rejected: list[dict] = []
    seen: set[str] = set()
    for record in iter_records(spec):
        row = parse_record(record, columns, task, kind)
        reject_duplicate(row, row["id"] in seen)
        if row["reject_reason"]:
            rejected.append(row)
            continue
        seen.add(row["id"])
        valid.append({field: row[field] for field in CANONICAL})
    return valid, rejected
