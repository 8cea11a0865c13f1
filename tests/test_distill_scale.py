"""The scale benchmark's small version: a distill job on a local two-node cluster, stopped, resumed, an actor killed.

`benchmarks/distill_scale.py` is the code under test (the documented 52k-row run uses it unchanged):
every input line must come out exactly once, the four kinds of bad rows quarantined with their counts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("distill_scale", REPO / "benchmarks" / "distill_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_rows_are_spread_through_the_input(tmp_path):
    scale = _benchmark()
    expected = scale.write_input(tmp_path / "in.jsonl", rows=300, per_kind=3)
    lines = (tmp_path / "in.jsonl").read_text().splitlines()
    assert len(lines) == expected["lines"] == 300 + 4 * 3
    assert len(set(expected["valid_ids"])) == 300
    broken = [n for n, line in enumerate(lines) if line.startswith('{"id": "broken-')]
    assert len(broken) == 3 and broken[0] > 0 and broken[-1] < len(lines) - 1


def test_check_output_finds_a_row_kept_twice_and_a_lost_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    scale = _benchmark()
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    expected = {"valid_ids": ["a", "b", "c"], "lines": 4}
    pq.write_table(pa.table({"id": ["a", "b"]}), out / "data" / "part-00000.parquet")
    (out / "rejected.jsonl").write_text(json.dumps({"id": "x", "reason": "not valid JSON (Expecting value)"}) + "\n")
    check = scale.check_output(out, expected)
    assert check["valid_lost"] == ["c"] and not check["every_row_exactly_once"]
    pq.write_table(pa.table({"id": ["c", "a"]}), out / "data" / "part-00001.parquet")
    check = scale.check_output(out, expected)
    assert check["kept_twice"] == ["a"] and not check["every_row_exactly_once"]
    (out / "data" / "part-00001.parquet").unlink()
    pq.write_table(pa.table({"id": ["c"]}), out / "data" / "part-00001.parquet")
    assert scale.check_output(out, expected)["every_row_exactly_once"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_stopped_resumed_and_killed_job_keeps_every_row_exactly_once(tmp_path):
    scale = _benchmark()
    rows, per_kind = 1500, 5
    args = argparse.Namespace(rows=rows, bad_per_kind=per_kind, batch_size=32, max_new_tokens=64, shard_rows=128,
                              stop_at=0.4, kill_at=0.7, interval=2.0, rate_window=20.0, timeout=900,
                              work=str(tmp_path / "work"), results=str(tmp_path / "scale.json"),
                              plot=str(tmp_path / "scale.png"))
    result = scale.run_scale(args)
    lines = rows + 4 * per_kind
    assert result["stop"]["status"] == "STOPPED"
    assert 0 < result["stop"]["rows_committed_at_stop"] < 0.9 * lines, "the stop did not land mid-job"
    assert result["job_2"]["status"] == "SUCCEEDED", result["job_2"]["log_tail"]
    assert result["kill"]["actor_pid"] is not None
    check = result["check"]
    assert check["every_row_exactly_once"], check
    assert check["rows_out"] + check["rows_rejected"] == lines
    assert {kind: check["rejected_by_reason"].get(kind) for kind in scale.BAD_KINDS} == dict.fromkeys(scale.BAD_KINDS, per_kind)
    stats = result["stats_json"]
    assert (stats["rows_out"], stats["rows_rejected"], stats["complete"]) == (check["rows_out"], check["rows_rejected"], True)
    assert result["peak_rss_mib"]["by_role"]["driver"] > 0 and len(result["peak_rss_mib"]["by_actor_pid"]) >= 3
    assert Path(args.plot).stat().st_size > 10_000
