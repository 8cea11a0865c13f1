"""Exactly-once output: Parquet shards committed by rename, and what a rerun may skip.

Layout of an output directory:
- `data/part-NNNNN.parquet`: distilled rows (schema `OUTPUT`); a shard exists only once complete;
- `shards/part-NNNNN.json`: the shard's manifest (its rejected rows and counts), written *before*
  the Parquet file, so that every committed shard has its manifest;
- `rejected.jsonl`, `stats.json`: rebuilt from all manifests at the end of each run.

The Parquet rename is the commit point. On start, leftover `*.tmp` files and manifests without a
Parquet file (a run killed between the two renames) are removed, and every id in a committed shard
(valid or rejected) is accounted for, so a rerun skips exactly those rows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from sdd_ray.data import reject_duplicate, rejected_entry
from sdd_ray.distill.gate import is_copy, reason_category
from sdd_ray.distill.schema import OUTPUT, output_row, to_table
from sdd_ray.io import write_text

COUNTERS = ("rows_out", "rows_rejected", "teacher_selected", "original_selected", "prompt_tokens",
            "generated_tokens", "copies", "reference_words", "selected_words")
EXAMPLES_PER_REASON = 3


class ShardWriter:
    """Collects processed rows on the driver and commits them shard by shard."""

    def __init__(self, out: Path, shard_rows: int):
        self.out = Path(out)
        self.data_dir = self.out / "data"
        self.manifest_dir = self.out / "shards"
        self.shard_rows = shard_rows
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self.accounted = self._recover()  # id -> occurrences committed by earlier runs
        self.seen: Counter[str] = Counter()  # id -> occurrences met in this run
        self.next_index = 1 + max((int(p.stem.split("-")[1]) for p in self.data_dir.glob("part-*.parquet")), default=-1)
        self.valid: list[dict] = []
        self.rejected: list[dict] = []
        self.examples: dict[str, list[dict]] = {}  # selection reason -> a few rewrites it turned down
        self.run = Counter()  # this run's counters: rows_in, resumed, shards, and COUNTERS
        self.pending = Counter()

    def _recover(self) -> Counter:
        for leftover in [*self.data_dir.glob("*.tmp"), *self.manifest_dir.glob("*.tmp")]:
            leftover.unlink()
        accounted: Counter[str] = Counter()
        for manifest in sorted(self.manifest_dir.glob("part-*.json")):
            shard = self.data_dir / f"{manifest.stem}.parquet"
            if not shard.is_file():
                manifest.unlink()
                continue
            accounted.update(row["id"] for row in json.loads(manifest.read_text())["rejected"])
            accounted.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return accounted

    @property
    def done_ids(self) -> frozenset[str]:
        return frozenset(self.accounted)

    def add(self, row: dict) -> None:
        """Route one processed row: already committed, rejected, or valid."""
        self.run["rows_in"] += 1
        self.seen[row["id"]] += 1
        if self.seen[row["id"]] <= self.accounted[row["id"]]:
            self.run["resumed"] += 1
            return
        reject_duplicate(row, self.seen[row["id"]] > 1 or self.accounted[row["id"]] > 0)
        if row["reject_reason"]:
            self.rejected.append({**rejected_entry(row),
                                  **({"error": row["generation_error"]} if row.get("generation_error") else {})})
            self.pending["rows_rejected"] += 1
            return
        self.valid.append(output_row(row))
        self.pending["rows_out"] += 1
        self.pending[f"{row['source']}_selected"] += 1
        self.pending["prompt_tokens"] += row["prompt_tokens"]
        self.pending["generated_tokens"] += row["generated_tokens"]
        self.pending["copies"] += row["source"] == "teacher" and is_copy(row["response"], row["teacher_response"])
        self.pending["reference_words"] += len(row["response"].split())
        self.pending["selected_words"] += len(row["selected_response"].split())
        if row["selection_reason"]:
            reason = reason_category(row["selection_reason"])
            self.pending[f"reason:{reason}"] += 1
            kept = self.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append({"id": row["id"], "teacher_response": row["teacher_response"][:400]})
        self.pending[f"task:{row['task']}:rows"] += 1
        self.pending[f"task:{row['task']}:{row['source']}"] += 1

    @property
    def full(self) -> bool:
        return len(self.valid) + len(self.rejected) >= self.shard_rows

    def flush(self) -> None:
        """Commit the pending rows as one shard (manifest first, then the Parquet rename)."""
        if not self.valid and not self.rejected:
            return
        name = f"part-{self.next_index:05d}"
        manifest = {"shard": name, **{key: self.pending[key] for key in COUNTERS},
                    "by_task": self._by_task(self.pending), "rejected": self.rejected,
                    "selection_reasons": {k.split(":", 1)[1]: v for k, v in self.pending.items() if k.startswith("reason:")},
                    "examples": self.examples}
        write_text(self.manifest_dir / f"{name}.json", json.dumps(manifest))
        tmp = self.data_dir / f"{name}.parquet.tmp"
        pq.write_table(to_table(self.valid, OUTPUT), tmp)
        tmp.replace(self.data_dir / f"{name}.parquet")
        self.run.update(self.pending)
        self.run["shards"] += 1
        self.next_index += 1
        self.valid, self.rejected, self.pending, self.examples = [], [], Counter(), {}

    @staticmethod
    def _by_task(counts: Counter) -> dict[str, dict[str, int]]:
        by_task: dict[str, dict[str, int]] = {}
        for key, value in counts.items():
            if key.startswith("task:"):
                _, task, what = key.split(":", 2)
                by_task.setdefault(task, {"rows": 0, "teacher": 0, "original": 0})[what] = value
        return by_task

    def totals(self) -> dict:
        """Counters over every committed shard (all runs), and the rejected rows to publish."""
        totals = Counter()
        by_task: dict[str, Counter] = {}
        rejected: list[dict] = []
        reasons: Counter[str] = Counter()
        examples: dict[str, list[dict]] = {}
        for manifest_path in sorted(self.manifest_dir.glob("part-*.json")):
            manifest = json.loads(manifest_path.read_text())
            totals.update({key: manifest.get(key, 0) for key in COUNTERS})
            for task, counts in manifest["by_task"].items():
                by_task.setdefault(task, Counter()).update(counts)
            rejected.extend(manifest["rejected"])
            reasons.update(manifest.get("selection_reasons", {}))
            for reason, rows in manifest.get("examples", {}).items():
                kept = examples.setdefault(reason, [])
                kept.extend(rows[: EXAMPLES_PER_REASON - len(kept)])
        result = {key: totals[key] for key in COUNTERS}
        result["selection_reasons"] = dict(reasons.most_common())
        result["selection_examples"] = dict(sorted(examples.items()))
        result["by_task"] = {
            task: {**counts, "teacher_fraction": round(counts["teacher"] / counts["rows"], 4) if counts["rows"] else 0.0}
            for task, counts in sorted(by_task.items())
        }
        return {"totals": result, "rejected": rejected}

    def publish_rejected(self, rejected: list[dict]) -> None:
        write_text(self.out / "rejected.jsonl", "".join(json.dumps(row) + "\n" for row in rejected))
