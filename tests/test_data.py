"""Data set loading: column presets, stable ids, per-row validation with reasons, the toy source."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdd_ray.data import (
    PRESETS,
    ColumnMap,
    DataSpec,
    column_map,
    content_id,
    load_rows,
    parse_record,
)
from sdd_ray.toy.sources import toy_records


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_gsm8k_jsonl_rows_and_rejections(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k_sample.jsonl", [
        {"question": "What is 2+2?", "answer": "2+2=4\n#### 4"},
        {"question": "", "answer": "x"},
        {"question": 5, "answer": "x"},
        "not json",
        [1, 2],
        {"answer": "no question"},
        {"question": "What is 2+2?", "answer": "2+2=4\n#### 4"},
    ])
    valid, rejected = load_rows(DataSpec(source=str(path)))  # preset guessed from the file name
    assert valid == [{"id": content_id("What is 2+2?", "", "2+2=4\n#### 4"), "task": "gsm8k", "kind": "math",
                      "instruction": "What is 2+2?", "input": "", "response": "2+2=4\n#### 4"}]
    assert [r["reject_reason"] for r in rejected] == [
        "instruction (column 'question') is empty",
        "instruction (column 'question'): expected a string, got int",
        "not valid JSON (Expecting value)",
        "expected a JSON object, got list",
        "missing field 'instruction' (column 'question')",
        f"duplicate id {valid[0]['id']!r}",
    ]
    assert len({r["id"] for r in rejected[:5]}) == 5  # bad rows get distinct ids from their raw content


@pytest.mark.parametrize("preset, record, expected", [
    ("alpaca", {"instruction": "Add", "input": "1 2", "output": "3"}, ("Add", "1 2", "3")),
    ("alpaca", {"instruction": "Add", "input": None, "output": "3"}, ("Add", "", "3")),
    ("dolly", {"instruction": "Sum", "context": "c", "response": "r", "category": "qa"}, ("Sum", "c", "r")),
    ("openmath", {"problem": "P", "generated_solution": "\\boxed{2}"}, ("P", "", "\\boxed{2}")),
])
def test_presets_map_columns(preset, record, expected):
    row = parse_record(record, PRESETS[preset], task=preset)
    assert row["reject_reason"] == ""
    assert (row["instruction"], row["input"], row["response"]) == expected
    assert row["task"] == ("qa" if preset == "dolly" else preset)


def test_given_ids_kept_and_bad_types_rejected():
    columns = ColumnMap()
    assert parse_record({"id": 7, "instruction": "a", "response": "b"}, columns)["id"] == "7"
    bad = parse_record({"id": [1], "instruction": "a", "response": ["b"], "input": 3, "kind": "poem"}, columns)
    assert bad["reject_reason"] == (
        "input (column 'input'): expected a string, got int; response (column 'response'): expected a string, "
        "got list; kind 'poem' is not one of ('math', 'mc', 'general'); id (column 'id'): expected a string or "
        "integer, got list"
    )


def test_parquet_source_and_limit(tmp_path):
    table = pa.table({"instruction": ["a", "b", "c"], "output": ["x", "y", ""], "input": ["", "i", ""]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    spec = DataSpec(source=str(tmp_path), columns="alpaca", task="mine")
    valid, rejected = load_rows(spec)
    assert [(r["instruction"], r["input"], r["response"], r["task"]) for r in valid] == [
        ("a", "", "x", "mine"), ("b", "i", "y", "mine")]
    assert [r["reject_reason"] for r in rejected] == ["response (column 'output') is empty"]
    assert len(load_rows(spec.model_copy(update={"limit": 1}))[0]) == 1


def test_toy_source_interleaves_tasks_with_unique_ids():
    rows = toy_records("toy:all", limit=7)
    assert [r["task"] for r in rows] == ["arith", "facts", "instruct"] * 2 + ["arith"]
    assert [r["kind"] for r in rows[:3]] == ["math", "mc", "general"]
    full = toy_records("toy:instruct")
    assert len(full) == 1000 and len({r["id"] for r in full}) == 1000
    assert column_map(DataSpec(source="toy:all")) == PRESETS["toy"]
    with pytest.raises(ValueError, match="unknown toy source"):
        toy_records("toy:poems")


def test_a_distillation_output_folder_reads_its_data_subfolder(tmp_path):
    """`DIR/data/*.parquet` is the source, not the stats.json and rejected.jsonl beside it."""
    from sdd_ray.data import resolve

    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": ["a"], "instruction": ["q"], "response": ["r"], "original_response": ["o"]}),
                   tmp_path / "data" / "part-00000.parquet")
    (tmp_path / "stats.json").write_text('{"complete": true}')
    write_jsonl(tmp_path / "rejected.jsonl", [{"id": "b", "reason": "empty"}])
    source = resolve(DataSpec(source=str(tmp_path)))
    assert (source.kind, source.files) == ("parquet", (tmp_path / "data" / "part-00000.parquet",))
    assert [r["id"] for r in load_rows(DataSpec(source=str(tmp_path)))[0]] == ["a"]
