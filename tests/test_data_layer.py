"""One data layer for every stage (issues #23, #24): the same rows, reasons and duplicate rule in distill and
finetune, text kept as text, folders read whole or refused, unfinished distillations refused."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_bad_input import models, refused  # noqa: F401  (models: a fixture refused's tests use)

from sdd_ray.data import DataSpec, check_data_source, load_rows
from sdd_ray.guards import InputError

NUMERIC_TEXT = [{"id": f"{i:03d}", "instruction": f"What is {i} + 7?", "response": str(i + 7)} for i in range(12)]
"""Rows whose every value is a number written as text: an id "000", a response "14"."""
BAD = [
    {"id": "bad-null", "instruction": "Name a colour.", "response": None},
    {"id": "bad-number", "instruction": "What is 2 + 2?", "response": 4},
    {"id": "bad-list", "instruction": ["a", "list"], "response": "no"},
    {"id": "bad-input", "instruction": "Echo.", "input": 5, "response": "5"},
]
REASONS = {
    "bad-null": "response (column 'response'): expected a string, got NoneType",
    "bad-number": "response (column 'response'): expected a string, got int",
    "bad-list": "instruction (column 'instruction'): expected a string, got list",
    "bad-input": "input (column 'input'): expected a string, got int",
    "w-05": "duplicate id 'w-05'",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def folder_of_28(root: Path) -> Path:
    """Three JSONL files, 28 rows: 12 all-numeric-text rows, 11 word rows, 4 with null/number/list fields, and
    one id (`w-05`) in two files. 23 rows are valid."""
    folder = root / "rows"
    folder.mkdir()
    words = [{"id": f"w-{i:02d}", "instruction": f"Spell word {i}.", "input": "", "response": f"word {i}"}
             for i in range(11)]
    write_jsonl(folder / "a_numbers.jsonl", NUMERIC_TEXT)
    write_jsonl(folder / "b_words.jsonl", words[:8] + BAD[:2])
    write_jsonl(folder / "c_words.jsonl", words[8:] + BAD[2:] + [{**words[5], "response": "another word"}])
    return folder


def test_folder_of_28_rows_valid_and_rejected_on_the_driver(tmp_path):
    valid, rejected = load_rows(DataSpec(source=str(folder_of_28(tmp_path))))
    assert len(valid) == 23
    assert {row["id"]: row["reject_reason"] for row in rejected} == REASONS
    assert valid[0] == {"id": "000", "task": "default", "kind": "", "instruction": "What is 0 + 7?", "input": "",
                        "response": "7"}


@pytest.mark.timeout(300)
def test_finetune_keeps_the_23_rows_distill_keeps_and_reports_the_5_rejected(tmp_path, toy_teacher, ray_local):
    """Issue #23: finetune trained on 4 of these 28 rows (ids and responses typed as numbers, no reasons);
    distill kept 23. Both now read through one layer: the same 23 rows, the same 5 reasons."""
    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.distill.run import run_distill
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.trainer import load_checked_dataset

    folder = folder_of_28(tmp_path)
    stats = run_distill(DistillConfig(teacher={"path": str(toy_teacher)}, data=str(folder), max_new_tokens=2, batch_size=8,
                                      num_workers=1, progress=False), tmp_path / "distilled")
    assert (stats["rows_in"], stats["rows_out"], stats["rows_rejected"]) == (28, 23, 5)
    distilled = pq.read_table(tmp_path / "distilled" / "data").to_pylist()
    distill_rejected = [json.loads(line) for line in (tmp_path / "distilled" / "rejected.jsonl").read_text().splitlines()]

    rejects = tmp_path / "ft" / "rejected.jsonl"
    dataset = load_checked_dataset(FinetuneConfig(model={"path": str(toy_teacher)}, data=str(folder)), rejects)
    rows = dataset.take_all()
    finetune_rejected = [json.loads(line) for line in rejects.read_text().splitlines()]

    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in distilled)
    assert {r["id"]: r["reason"] for r in finetune_rejected} == {r["id"]: r["reason"] for r in distill_rejected} == REASONS
    by_id = {r["id"]: r for r in rows}
    assert by_id["000"]["response"] == "7" and by_id["007"]["response"] == "14"  # text stays text
    assert by_id["w-05"]["response"] == "word 5"  # of two rows with one id, the first in the files is kept


@pytest.mark.timeout(120)
def test_numeric_text_stays_text_in_parquet_and_sft_column(tmp_path, toy_teacher, ray_local):
    """A distillation output read for the SFT arm keeps `original_response` as text and checks it like the response."""
    from sdd_ray.finetune.data import DataError
    from sdd_ray.finetune.trainer import read_dataset

    out = tmp_path / "distilled"
    (out / "data").mkdir(parents=True)
    rows = [{**row, "original_response": row["response"]} for row in NUMERIC_TEXT]
    pq.write_table(pa.Table.from_pylist(rows), out / "data" / "part-00000.parquet")
    (out / "stats.json").write_text(json.dumps({"complete": True}))
    dataset, rejected = read_dataset(DataSpec(source=str(out)), "original_response")
    assert not rejected
    assert sorted((r["id"], r["original_response"]) for r in dataset.take_all())[:2] == [("000", "7"), ("001", "8")]

    plain = write_jsonl(tmp_path / "plain.jsonl", NUMERIC_TEXT)
    with pytest.raises(DataError, match=r"no valid rows \(12 rejected; first: missing field 'original_response'.*"
                                        r"comes from a distillation output"):
        read_dataset(DataSpec(source=str(plain)), "original_response")


def test_a_folder_mixing_parquet_and_jsonl_is_refused(tmp_path):
    """Issue #23: such a folder read only its Parquet files, silently."""
    from sdd_ray.data import resolve

    folder = tmp_path / "mixed"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", NUMERIC_TEXT[:3])
    pq.write_table(pa.Table.from_pylist(NUMERIC_TEXT[3:]), folder / "b.parquet")
    with pytest.raises(InputError, match=r"mixes Parquet \(1 files\) and JSON lines \(1 files\)"):
        resolve(DataSpec(source=str(folder)))
    with pytest.raises(InputError, match="mixes Parquet"):
        check_data_source(str(folder))


def test_finetune_refuses_a_folder_mixing_formats(capsys, monkeypatch, models, tmp_path):  # noqa: F811
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", NUMERIC_TEXT[:3])
    pq.write_table(pa.Table.from_pylist(NUMERIC_TEXT[3:]), folder / "b.parquet")
    refused(capsys, monkeypatch, "finetune", "--model", models[0], "--data", folder, "--out", tmp_path / "ft",
            inputs=[models[0], folder], expect="the folder mixes Parquet (1 files) and JSON lines (1 files)")
    assert not (tmp_path / "ft").exists()


def unfinished_distillation(root: Path, stats: dict | None) -> Path:
    """What a distill run killed after 2 of its shards leaves: data/, shards/, the stage marker, maybe stats.json."""
    out = root / "distilled"
    (out / "data").mkdir(parents=True)
    (out / "shards").mkdir()
    for shard in range(2):
        rows = [{**row, "original_response": row["response"]} for row in NUMERIC_TEXT[shard * 6:(shard + 1) * 6]]
        pq.write_table(pa.Table.from_pylist(rows), out / "data" / f"part-{shard:05d}.parquet")
        (out / "shards" / f"part-{shard:05d}.json").write_text(json.dumps({"rejected": []}))
    (out / ".sdd-ray-stage.json").write_text(json.dumps({"stage": "distill", "record": {}}))
    if stats is not None:
        (out / "stats.json").write_text(json.dumps(stats))
    return out


@pytest.mark.parametrize("stats, why", [(None, "no stats.json"), ({"complete": False}, "its stats.json says complete: false")],
                         ids=["killed", "stopped_early"])
def test_finetune_refuses_an_unfinished_distillation(capsys, monkeypatch, models, tmp_path, stats, why):  # noqa: F811
    """Issue #23: finetune trained on the 32 of 160 rows a killed distillation had committed, exit 0."""
    out = unfinished_distillation(tmp_path, stats)
    line = refused(capsys, monkeypatch, "finetune", "--model", models[0], "--data", out, "--out", tmp_path / "ft",
                   inputs=[models[0], out], expect=f"an unfinished distillation ({why}")
    assert f"rerunning the `sdd-ray distill` command that wrote it (same flags, --out {out}): it resumes" in line


def test_a_finished_distillation_is_read(tmp_path):
    out = unfinished_distillation(tmp_path, {"complete": True})
    check_data_source(str(out))
    assert [row["id"] for row in load_rows(DataSpec(source=str(out)))[0]] == [row["id"] for row in NUMERIC_TEXT]
