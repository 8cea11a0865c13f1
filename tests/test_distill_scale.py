"""A distill job on a local two-node cluster: interrupted, resumed with an actor killed, every row exactly once.

The input is 1,500 toy rows with bad rows of four kinds spread through it (`sdd_ray.testing.distill_rows`, which
`benchmarks/distill_scale.py` uses for the documented 52k-row run). The first job stops after `max_shards`
shards, so the interruption lands at the same row on any machine; the resumed job loses a generation actor
to SIGKILL once it has committed a shard of its own.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from sdd_ray.testing.distill_rows import BAD_KINDS, check_output, write_input


def test_bad_rows_are_spread_through_the_input(tmp_path):
    expected = write_input(tmp_path / "in.jsonl", rows=300, per_kind=3)
    lines = (tmp_path / "in.jsonl").read_text().splitlines()
    assert len(lines) == expected["lines"] == 300 + 4 * 3
    assert len(set(expected["valid_ids"])) == 300
    broken = [n for n, line in enumerate(lines) if line.startswith('{"id": "broken-')]
    assert len(broken) == 3 and broken[0] > 0 and broken[-1] < len(lines) - 1


def test_check_output_finds_a_row_kept_twice_and_a_lost_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    expected = {"valid_ids": ["a", "b", "c"], "lines": 4}
    pq.write_table(pa.table({"id": ["a", "b"]}), out / "data" / "part-00000.parquet")
    (out / "rejected.jsonl").write_text(json.dumps({"id": "x", "reason": "not valid JSON (Expecting value)"}) + "\n")
    check = check_output(out, expected)
    assert check["valid_lost"] == ["c"] and not check["every_row_exactly_once"]
    pq.write_table(pa.table({"id": ["c", "a"]}), out / "data" / "part-00001.parquet")
    check = check_output(out, expected)
    assert check["kept_twice"] == ["a"] and not check["every_row_exactly_once"]
    (out / "data" / "part-00001.parquet").unlink()
    pq.write_table(pa.table({"id": ["c"]}), out / "data" / "part-00001.parquet")
    assert check_output(out, expected)["every_row_exactly_once"]


def _shards(out: Path) -> int:
    return len(list((out / "data").glob("part-*.parquet")))


@pytest.mark.timeout(1200)
def test_interrupted_resumed_and_killed_job_keeps_every_row_exactly_once(two_node_cluster, tmp_path):
    cluster = two_node_cluster
    rows, per_kind, shard_rows = 1500, 5, 128
    data, out = tmp_path / "input.jsonl", tmp_path / "out"
    expected = write_input(data, rows, per_kind)

    def submit(name: str, **settings) -> str:
        config = tmp_path / f"{name}.yaml"
        config.write_text(json.dumps({"num_workers": 2, "cpus_per_worker": 0.75, "torch_threads": 1, "batch_size": 32,
                                      "max_new_tokens": 64, "shard_rows": shard_rows, "progress": False, **settings}))
        return cluster.submit(f"{shlex.quote(sys.executable)} jobs/distill.py --teacher toy-teacher "
                              f"--data {data} --out {out} --config {config}")

    # 1. interrupted after two shards: exactly 2 x 128 lines committed, the stage unfinished
    job = submit("first", max_shards=2)
    assert cluster.wait(job, 900) == "SUCCEEDED", cluster.client.get_job_logs(job)[-3000:]
    first = json.loads((out / "stats.json").read_text())
    assert not first["complete"] and first["this_run"]["shards"] == 2 == _shards(out)
    assert first["rows_out"] + first["rows_rejected"] == 2 * shard_rows

    # 2. resumed: the committed lines are skipped; an actor is killed once the job has committed a shard
    job = submit("resumed")
    deadline = time.monotonic() + 900
    while _shards(out) <= 2:
        assert time.monotonic() < deadline and not cluster.client.get_job_status(job).is_terminal(), \
            cluster.client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    cluster.kill_one("HFRewriter")
    assert cluster.wait(job, 900) == "SUCCEEDED", cluster.client.get_job_logs(job)[-3000:]

    check = check_output(out, expected)
    assert check["every_row_exactly_once"], check
    assert check["rows_out"] + check["rows_rejected"] == expected["lines"] == rows + 4 * per_kind
    assert {kind: check["rejected_by_reason"].get(kind) for kind in BAD_KINDS} == dict.fromkeys(BAD_KINDS, per_kind)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_out"], stats["rows_rejected"], stats["complete"]) == (check["rows_out"], check["rows_rejected"], True)
    assert stats["this_run"]["resumed"] == 2 * shard_rows
