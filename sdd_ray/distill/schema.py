"""Column schemas of the rows flowing through the distillation pipeline, and of its outputs.

Fixed schemas keep every batch's table identical whatever its content (an all-empty string column
is still a string column), so that union, Parquet shards and resume never meet a type mismatch.
"""

from __future__ import annotations

import pyarrow as pa

# A prepared row: the canonical data-set row, its verdict, and its rewrite prompt.
PREPARED = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("kind", pa.string()),
    ("instruction", pa.string()), ("input", pa.string()), ("response", pa.string()),
    ("reject_reason", pa.string()), ("raw", pa.string()), ("prompt", pa.string()), ("skip", pa.bool_()),
])
# What generation adds.
GENERATED = pa.schema([
    ("teacher_response", pa.string()), ("truncated", pa.bool_()),
    ("prompt_tokens", pa.int64()), ("generated_tokens", pa.int64()), ("generation_error", pa.string()),
])
# What selection adds.
SELECTED = pa.schema([("selected_response", pa.string()), ("source", pa.string()), ("selection_reason", pa.string())])
PROCESSED = pa.schema(list(PREPARED) + list(GENERATED) + list(SELECTED))

# One row of DIR/data/*.parquet: the distilled data set.
OUTPUT = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("kind", pa.string()),
    ("instruction", pa.string()), ("input", pa.string()),
    ("original_response", pa.string()), ("teacher_response", pa.string()),
    ("response", pa.string()), ("source", pa.string()), ("selection_reason", pa.string()),
])

EMPTY_GENERATED = {"teacher_response": "", "truncated": False, "prompt_tokens": 0, "generated_tokens": 0,
                   "generation_error": ""}
EMPTY_SELECTED = {"selected_response": "", "source": "", "selection_reason": ""}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """`rows` as a table of exactly `schema`'s columns (extra keys dropped)."""
    return pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows], schema=schema)


def output_row(row: dict) -> dict:
    """The published form of a processed row."""
    return {
        "id": row["id"], "task": row["task"], "kind": row["kind"], "instruction": row["instruction"],
        "input": row["input"], "original_response": row["response"], "teacher_response": row["teacher_response"],
        "response": row["selected_response"], "source": row["source"], "selection_reason": row["selection_reason"],
    }
