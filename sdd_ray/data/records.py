"""The one record validator: a raw record (a dict, or a JSON text line) -> a canonical row and its verdict.

Bad rows are not errors: `parse_record` returns the row with a `reject_reason`, and callers route it
to a rejects file, so one malformed line never kills a 50k-row job. Every value is taken as written:
a text `"000"` stays a text id, a response `"14"` stays a text response.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from sdd_ray.answers import KINDS
from sdd_ray.data.spec import CANONICAL

NOT_UTF8 = "__sdd_ray_not_utf8__"
"""Key of the stand-in record of a line that is not valid UTF-8 (`decode_line`); `parse_record` rejects it."""
VERDICT = ("reject_reason", "raw")
"""What `parse_record` adds to the canonical columns: why the row is rejected ("" if valid) and its raw text."""


def content_id(*fields: str) -> str:
    """A stable id from a row's content: the first 16 hex digits of a sha1."""
    return hashlib.sha1("\x1f".join(fields).encode()).hexdigest()[:16]


def decode_line(line: bytes) -> str:
    """A JSON line as text; a line that is not UTF-8 becomes a stand-in record, so it is one rejected row, not a crash."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        text = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        return json.dumps({NOT_UTF8: f"byte {error.start}", "text": text})


def _type_name(value: Any) -> str:
    return type(value).__name__


def _text_field(record: dict, field: str, column: str | None, required: bool) -> tuple[str, str]:
    """(value, problem) of one text field: required ones must be non-empty strings, optional ones strings or null."""
    value = record.get(column) if column else None
    if required and column not in record:
        return "", f"missing field {field!r} (column {column!r})"
    if value is None and not required:
        return "", ""
    if not isinstance(value, str):
        return "", f"{field} (column {column!r}): expected a string, got {_type_name(value)}"
    if required and not value.strip():
        return "", f"{field} (column {column!r}) is empty"
    return value, ""


def parse_record(raw: Any, columns, task: str = "default", kind: str = "",
                 extra: tuple[str, ...] = ()) -> dict[str, str]:
    """A canonical row from a raw record (a dict, or a JSON text line), plus `reject_reason` ("" when valid).

    `extra` names further source columns a stage needs as they are (a distillation output's
    `original_response`): each is required, a non-empty string, like the response. Rejected rows keep
    what could be read and a `raw` copy of the record for the rejects file.
    """
    row = {"id": "", "task": task, "kind": kind, "instruction": "", "input": "", "response": "",
           **dict.fromkeys(extra, ""), "reject_reason": "", "raw": ""}
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
    fields = [(name, getattr(columns, name), name != "input") for name in ("instruction", "input", "response")]
    for field, column, required in fields + [(name, name, True) for name in extra]:
        row[field], problem = _text_field(record, field, column, required)
        if problem:
            problems.append(problem)
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


def parsed_schema(extra: tuple[str, ...] = ()) -> pa.Schema:
    """The columns of `parse_record`'s rows, all text: canonical, `extra`, then the verdict."""
    return pa.schema([(name, pa.string()) for name in (*CANONICAL, *extra, *VERDICT)])


def reject_duplicate(row: dict, seen_before: bool) -> None:
    """The one rule for repeated ids: a valid row whose id came before is rejected (the first one is kept)."""
    if seen_before and not row["reject_reason"]:
        row["reject_reason"] = f"duplicate id {row['id']!r}"


def rejected_entry(row: dict) -> dict:
    """A rejected row as a rejects file (`rejected.jsonl`) holds it: id, task, reason and the record as read."""
    record = row["raw"] or json.dumps({k: row[k] for k in ("instruction", "input", "response")})
    return {"id": row["id"], "task": row["task"], "reason": row["reject_reason"], "record": record}
