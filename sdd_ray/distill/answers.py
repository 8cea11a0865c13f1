"""Answer extraction and conditional selection (pure functions over strings).

Self-data distillation keeps the teacher's rewrite of a response only when it is safe to: for tasks
with a checkable answer, the rewrite's final answer must equal the reference's (Thangarasa et al.
2024, Sec. 3); for every task, a rewrite that is empty, cut off at the token limit, or that leaks the
rewrite prompt is rejected. Otherwise the original response is kept.
"""

from __future__ import annotations

import re

KINDS = ("math", "mc", "general")

_NUMBER = r"-?\$?\s*-?\d[\d,]*(?:\.\d+)?"
# Ordered by how explicitly the format marks a final answer; the last match of the first
# pattern that matches wins (a worked solution may quote intermediate answers earlier).
_MATH_PATTERNS = [
    re.compile(r"####\s*(" + _NUMBER + r")"),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
    re.compile(r"answer is[:\s]*(" + _NUMBER + r")", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*A\s*:\s*(" + _NUMBER + r")"),
]
_ANY_NUMBER = re.compile(_NUMBER)
_MC_PATTERNS = [
    re.compile(r"answer is[:\s]*\(?([A-D])\b\)?", re.IGNORECASE),
    re.compile(r"####\s*\(?([A-D])\b"),
    re.compile(r"^\s*\(?([A-D])\)?[.:]?\s*$"),
    re.compile(r"(?:^|\n)\s*(?:Answer|A)\s*:\s*\(?([A-D])\b"),
]
LEAK_MARKERS = (
    "reference answer",
    "reference solution",
    "your response",
    "your own response",
    "### instruction",
    "below is an instruction",
    "using the reference",
)


def normalize_number(text: str) -> str | None:
    """`$1,234.00` -> `1234`; `-5.50` -> `-5.5`; None when there is no number."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value).rstrip("0").rstrip(".")


def extract_answer(text: str, kind: str) -> str | None:
    """The final answer of `text` for a task of `kind`, normalised; None when there is none.

    math: `#### N`, `\\boxed{N}`, `The answer is N`, `A: N`, else the last number in the text.
    mc: the option letter (`The answer is B`, a lone `B`, `Answer: B`).
    general: no checkable answer (None).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {KINDS}")
    if not text:
        return None
    if kind == "math":
        for pattern in _MATH_PATTERNS:
            matches = pattern.findall(text)
            if matches:
                return normalize_number(matches[-1])
        numbers = _ANY_NUMBER.findall(text)
        return normalize_number(numbers[-1]) if numbers else None
    if kind == "mc":
        for pattern in _MC_PATTERNS:
            matches = pattern.findall(text.strip())
            if matches:
                return matches[-1].upper()
        return None
    return None


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


def select_response(
    original: str, rewritten: str | None, kind: str, truncated: bool = False
) -> tuple[str, str]:
    """Conditional selection: (`rewritten`, "teacher") when it is safe to use, else (`original`, "original")."""
    if rejection_reason(rewritten, truncated) is not None:
        return original, "original"
    if kind in ("math", "mc"):
        expected = extract_answer(original, kind)
        if expected is None or extract_answer(rewritten, kind) != expected:
            return original, "original"
    return rewritten, "teacher"
