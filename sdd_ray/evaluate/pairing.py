"""Paired rows of `comparison.json` for two results files: their per-document files, lined up and tested.

A row per task and one for the macro average: {a, b, task, n, diff, ci_low, ci_high, p_value} in accuracy
points (b - a), with the continuous score's difference (score_*), and the unpaired CI that the two
models' own standard errors would give, for contrast. Fidelity, where both results have it, adds
rows `fidelity_kl` and `fidelity_agreement` (per-prompt means, paired t-test).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sdd_ray.evaluate.examples import load_examples
from sdd_ray.evaluate.paired import mcnemar_p, paired_bootstrap, paired_t_p
from sdd_ray.evaluate.recovery import ResultsMismatchError

Side = tuple[str, "str | Path", dict]
"""(name, results path, results) of one model."""


def lined_up(a: Side, b: Side, task: str, entry_of=lambda r, t: r["tasks"][t]) -> tuple[list[dict], list[dict]]:
    """Both models' records of `task`, checked to be on the same documents in the same order."""
    rows_a = load_examples(a[1], entry_of(a[2], task), task)
    rows_b = load_examples(b[1], entry_of(b[2], task), task)
    if [r["doc_id"] for r in rows_a] != [r["doc_id"] for r in rows_b]:
        raise ResultsMismatchError(
            f"task {task!r}: {a[0]} and {b[0]} were scored on different documents; "
            "evaluate both with the same --limit and --seed"
        )
    return rows_a, rows_b


def _unpaired(diff: float, se_a: float | None, se_b: float | None) -> tuple[float | None, float | None]:
    if se_a is None or se_b is None:
        return None, None
    half = 196 * math.sqrt(se_a**2 + se_b**2)
    return diff - half, diff + half


def compare_pair(a: Side, b: Side, tasks: list[str], resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """Paired rows for b - a on `tasks` and their average."""
    correct_a, correct_b, score_a, score_b = {}, {}, {}, {}
    for task in tasks:
        rows_a, rows_b = lined_up(a, b, task)
        correct_a[task] = np.array([r["correct"] for r in rows_a], dtype=float)
        correct_b[task] = np.array([r["correct"] for r in rows_b], dtype=float)
        score_a[task] = np.array([r["score"] for r in rows_a], dtype=float)
        score_b[task] = np.array([r["score"] for r in rows_b], dtype=float)
    accuracy = paired_bootstrap(correct_a, correct_b, resamples, seed)
    score = paired_bootstrap(score_a, score_b, resamples, seed)
    se_a = {t: a[2]["tasks"][t].get("stderr") for t in tasks}
    se_b = {t: b[2]["tasks"][t].get("stderr") for t in tasks}
    rows = []
    for task in [*tasks, "average"]:
        acc = accuracy[task]
        if task == "average":
            n = sum(len(v) for v in correct_a.values())
            p = acc.p_value
            if all(v is not None for v in (*se_a.values(), *se_b.values())):
                sa = math.sqrt(sum(v**2 for v in se_a.values())) / len(tasks)
                sb = math.sqrt(sum(v**2 for v in se_b.values())) / len(tasks)
            else:
                sa = sb = None
        else:
            n = len(correct_a[task])
            p = mcnemar_p(correct_a[task], correct_b[task])
            sa, sb = se_a[task], se_b[task]
        low, high = _unpaired(100 * acc.diff, sa, sb)
        row = {"a": a[0], "b": b[0], "task": task, "n": n, "diff": 100 * acc.diff, "ci_low": 100 * acc.ci_low,
               "ci_high": 100 * acc.ci_high, "p_value": p, "unpaired_ci_low": low, "unpaired_ci_high": high,
               "score_diff": None, "score_ci_low": None, "score_ci_high": None, "score_p_value": None}
        if task != "average":  # scores of different tasks are on different scales: no average
            s = score[task]
            row.update(score_diff=s.diff, score_ci_low=s.ci_low, score_ci_high=s.ci_high,
                       score_p_value=paired_t_p(score_a[task], score_b[task]))
        rows.append(row)
    if "fidelity" in a[2] and "fidelity" in b[2]:
        rows += fidelity_rows(a, b, resamples, seed)
    return rows


def fidelity_rows(a: Side, b: Side, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """Paired rows of the per-prompt fidelity values (KL in nats, agreement as a share), b - a."""
    rows_a, rows_b = lined_up(a, b, "fidelity", lambda r, _: r["fidelity"])
    out = []
    for key in ("kl", "agreement"):
        va = np.array([r[key] for r in rows_a], dtype=float)
        vb = np.array([r[key] for r in rows_b], dtype=float)
        boot = paired_bootstrap({key: va}, {key: vb}, resamples, seed)[key]
        out.append({"a": a[0], "b": b[0], "task": f"fidelity_{key}", "n": len(va), "diff": boot.diff,
                    "ci_low": boot.ci_low, "ci_high": boot.ci_high, "p_value": paired_t_p(va, vb),
                    "unpaired_ci_low": None, "unpaired_ci_high": None, "score_diff": None,
                    "score_ci_low": None, "score_ci_high": None, "score_p_value": None})
    return out
