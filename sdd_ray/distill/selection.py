"""Conditional selection of a teacher's rewrite (pure functions over strings).

Self-data distillation keeps the teacher's rewrite of a response only when it is safe to: for tasks
with a checkable answer, the rewrite's final answer must equal the reference's (Thangarasa et al.
2024, Sec. 3; answers read by `sdd_ray.answers`); for every task, a rewrite that is empty, cut off at
the token limit, or that leaks the rewrite prompt is rejected. Otherwise the original response is kept.
"""

from __future__ import annotations

from sdd_ray.answers import KINDS, extract_answer
from sdd_ray.distill.gate import QualityGate, gate_reason

LEAK_MARKERS = (
    "reference answer",
    "reference solution",
    "your response",
    "your own response",
    "your own words",
    "### instruction",
    "### input",
    "### response",
    "below is an instruction",
    "below is a math problem",
    "below is a multiple choice question",
    "using the reference",
)


def rejection_reason(rewritten: str | None, truncated: bool = False) -> str | None:
    """Why a rewrite is unusable regardless of its answer, or None when it is usable."""
    if rewritten is None or not rewritten.strip():
        return "empty"
    if truncated:
        return "truncated"
    lowered = rewritten.lower()
    for marker in LEAK_MARKERS:
        if marker in lowered:
            return f"leaks prompt ({marker!r})"
    return None


def selection_reason(original: str, rewritten: str | None, kind: str, truncated: bool = False,
                     instruction: str = "", gate: QualityGate | None = None) -> str | None:
    """Why the original response is kept instead of the rewrite, or None when the rewrite is used.

    With a `gate`, a rewrite that passes the paper's checks must also pass the quality gate
    (`sdd_ray.distill.gate`), which needs the row's `instruction` for its topic check.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {KINDS}")
    reason = rejection_reason(rewritten, truncated)
    if reason is None and kind in ("math", "mc"):
        expected = extract_answer(original, kind)
        got = extract_answer(rewritten, kind)
        if expected is None:
            reason = "reference has no answer"
        elif got != expected:
            reason = f"answer {got} != reference {expected}"
    if reason is None and gate is not None:
        reason = gate_reason(instruction, original, rewritten, kind, gate)
    return reason


def select_response(
    original: str, rewritten: str | None, kind: str, truncated: bool = False
) -> tuple[str, str]:
    """Conditional selection: (`rewritten`, "teacher") when it is safe to use, else (`original`, "original")."""
    if selection_reason(original, rewritten, kind, truncated) is None:
        return rewritten, "teacher"
    return original, "original"
