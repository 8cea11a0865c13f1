"""Distillation input with known bad rows, and the check that every input line came out exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sdd_ray.io import write_text
from sdd_ray.toy.sources import toy_records

BAD_KINDS = ("not_json", "missing_field", "duplicate_id", "over_context")


def bad_rows(valid: list[dict], per_kind: int) -> dict[str, list[str]]:
    """JSONL lines that must be rejected, by kind; duplicates copy valid rows' ids."""
    long_text = " ".join(["the cat saw the dog"] * 200)  # ~1000 toy tokens: over the toy teacher's 512
    return {
        "not_json": [f'{{"id": "broken-{i}", "instruction": "cut off' for i in range(per_kind)],
        "missing_field": [json.dumps({"id": f"noresp-{i}", "task": "instruct", "instruction": f"say {i}"})
                          for i in range(per_kind)],
        "duplicate_id": [json.dumps({**valid[i * 7], "response": "a different answer"}) for i in range(per_kind)],
        "over_context": [json.dumps({"id": f"long-{i}", "task": "instruct", "kind": "general",
                                     "instruction": f"{i}: {long_text}", "input": "", "response": "ok"})
                         for i in range(per_kind)],
    }


def write_input(path: Path, rows: int, per_kind: int) -> dict:
    """Valid toy rows with the bad ones spread through the file; returns what the output must hold."""
    valid = toy_records("toy:all", rows)
    bad = bad_rows(valid, per_kind)
    lines = [json.dumps(row) for row in valid]
    step = max(1, len(lines) // (per_kind * len(BAD_KINDS) + 1))
    for n, line in enumerate(line for kind in BAD_KINDS for line in bad[kind]):
        lines.insert((n + 1) * step + n, line)
    write_text(path, "\n".join(lines) + "\n")
    return {"valid_ids": [row["id"] for row in valid], "lines": len(lines),
            "bad": {kind: len(bad[kind]) for kind in BAD_KINDS}}


def check_output(out: Path, expected: dict) -> dict:
    """Every input line accounted for exactly once: valid ids in the Parquet shards, the rest rejected."""
    import pyarrow.parquet as pq

    kept = Counter(pq.read_table(out / "data", columns=["id"]).column("id").to_pylist())
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    valid = set(expected["valid_ids"])
    reasons = Counter(_reason_kind(r["reason"]) for r in rejected)
    lost = valid - set(kept) - {r["id"] for r in rejected if not r["reason"].startswith("duplicate id")}
    return {
        "rows_in": expected["lines"], "rows_out": sum(kept.values()), "rows_rejected": len(rejected),
        "kept_twice": sorted(i for i, n in kept.items() if n > 1)[:10],
        "kept_not_in_input": sorted(set(kept) - valid)[:10],
        "valid_lost": sorted(lost)[:10],
        "rejected_by_reason": dict(reasons),
        "every_row_exactly_once": (sum(kept.values()) + len(rejected) == expected["lines"]
                                   and all(n == 1 for n in kept.values()) and not lost and set(kept) <= valid),
    }


def _reason_kind(reason: str) -> str:
    for prefix, kind in (("not valid JSON", "not_json"), ("missing field", "missing_field"),
                         ("duplicate id", "duplicate_id"), ("prompt too long", "over_context")):
        if reason.startswith(prefix):
            return kind
    return reason.split(":")[0]
