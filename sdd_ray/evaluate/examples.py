"""Per-document results beside `results.json`: one JSONL file per task, one line per document.

Each line is `{"doc_id", "correct", "score"}` (fidelity: per-prompt values). `results.json` names the
file in `tasks.<task>.samples` (a path relative to it) and records `documents`, a short hash of the
document ids, so that two results can be checked to be on the same documents without reading them.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np

from sdd_ray.evaluate.recovery import ResultsError
from sdd_ray.io import write_text


def documents_id(records: list[dict]) -> str:
    """A short hash of the document ids, in order."""
    ids = json.dumps([r["doc_id"] for r in records])
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def examples_path(out: Path, name: str) -> Path:
    return out.with_name(f"{out.stem}.{name}.jsonl")


def _write(records: list[dict], path: Path) -> str:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return path.name


def write_examples(results: dict, out: Path) -> dict:
    """Move every task's `examples` (and fidelity's) into JSONL files beside `out`; `results` names them."""
    for name, task in results["tasks"].items():
        records = task.pop("examples", None)
        if records is not None:
            task.setdefault("documents", documents_id(records))
            task["samples"] = _write(records, examples_path(out, name))
    fidelity = results.get("fidelity")
    if fidelity is not None and "examples" in fidelity:
        records = fidelity.pop("examples")
        fidelity["documents"] = documents_id(records)
        fidelity["samples"] = _write(records, examples_path(out, "fidelity"))
    return results


def without_examples(results: dict) -> dict:
    """`results` without the in-memory per-document records (as embedded in another results file)."""
    tasks = {name: {k: v for k, v in task.items() if k != "examples"} for name, task in results["tasks"].items()}
    return {**results, "tasks": tasks}


def load_examples(results_path: str | Path, entry: dict, name: str) -> list[dict]:
    """The per-document records that `entry` (a task of the results file at `results_path`) names."""
    if "samples" not in entry:
        raise ResultsError(f"{results_path}: task {name!r} has no per-document results (`samples`); re-run the evaluation")
    path = Path(results_path).parent / entry["samples"]
    if not path.is_file():
        raise ResultsError(f"{results_path}: task {name!r}: per-document file {path} not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw_documents(n_docs: int, limit: int | None, seed: int, task: str) -> list[int]:
    """A seeded random sample of `limit` document indices out of `n_docs`, sorted; all when `limit` is None.

    The draw depends on the seed and the task name only, so every model gets the same documents.
    """
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    return sorted(int(i) for i in rng.choice(n_docs, size=limit, replace=False))
