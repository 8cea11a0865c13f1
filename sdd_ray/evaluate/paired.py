"""Paired statistics for two models scored on the same documents.

Two models evaluated on the same documents differ by much less noise than two independent samples:
most documents are right (or wrong) for both. These functions use that pairing:

- `mcnemar_p`: the exact McNemar test on the discordant pairs of 0/1 outcomes (two-sided binomial);
- `paired_t_p`: the paired t-test on a continuous per-document score;
- `paired_bootstrap`: the difference of the macro average over tasks (and of each task) with a
  percentile CI, documents resampled within each task, the same draw for both models.

Pure numpy (scipy for the t distribution where installed); no Ray, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHUNK = 256
"""Bootstrap resamples drawn at once (bounds memory at CHUNK x documents)."""


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 outcomes `a`, `b` (1.0 without discordant pairs)."""
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _t_sf(t: float, df: int) -> float:
    """P(T > t) of Student's t with `df` degrees of freedom."""
    try:
        from scipy.stats import t as student
    except ImportError:  # the normal tail: close for the document counts evaluated here
        return 0.5 * math.erfc(t / math.sqrt(2))
    return float(student.sf(t, df))


def paired_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test of `b - a` (1.0 when every difference is equal)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    sd = float(np.std(d, ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        return 1.0 if float(np.mean(d)) == 0.0 or n < 2 else 0.0
    t = float(np.mean(d)) / (sd / math.sqrt(n))
    return min(1.0, 2 * _t_sf(abs(t), n - 1))


@dataclass
class BootstrapResult:
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided: the share of resampled differences, shifted to a mean of 0, at least as far from 0 as `diff`."""


def _resampled_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(d)
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        stop = min(resamples, start + CHUNK)
        out[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def _summary(diff: float, boot: np.ndarray, confidence: float) -> BootstrapResult:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    extreme = int(np.sum(np.abs(boot - diff) >= abs(diff) - 1e-12))
    p = 1.0 if diff == 0 else (1 + extreme) / (1 + len(boot))
    return BootstrapResult(float(diff), float(low), float(high), min(1.0, p))


def paired_bootstrap(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], resamples: int = 10_000, seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, BootstrapResult]:
    """Bootstrap of `b - a` per task and for the unweighted mean over tasks (key `average`).

    `a[task]` and `b[task]` are per-document values in the same document order. Each resample draws
    documents with replacement within each task, the same draw for both models.
    """
    if set(a) != set(b):
        raise ValueError(f"different tasks: {sorted(a)} vs {sorted(b)}")
    rng = np.random.default_rng(seed)
    results, boots = {}, []
    for task in sorted(a):
        d = np.asarray(b[task], dtype=float) - np.asarray(a[task], dtype=float)
        if len(d) == 0:
            raise ValueError(f"task {task!r} has no documents")
        boot = _resampled_means(d, resamples, rng)
        boots.append(boot)
        results[task] = _summary(float(d.mean()), boot, confidence)
    mean_diff = float(np.mean([r.diff for r in results.values()]))
    results["average"] = _summary(mean_diff, np.mean(boots, axis=0), confidence)
    return results
