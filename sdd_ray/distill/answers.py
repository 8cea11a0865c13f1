"""Answer extraction and conditional selection (pure functions over strings).

Self-data distillation keeps the teacher's rewrite of a response only when it is safe to: for tasks
with a checkable answer, the rewrite's final answer must equal the reference's (Thangarasa et al.
2024, Sec. 3); for every task, a rewrite that is empty, cut off at the token limit, or that leaks the
rewrite prompt is rejected. Otherwise the original response is kept.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KINDS = ("math", "mc", "general")

_NUMBER = r"[-\u2212]?\$?\s*[-\u2212]?\d[\d,]*(?:\.\d+)?"
# Ordered by how explicitly the format marks a final answer; the last match of the first
# pattern that matches wins (a worked solution may quote intermediate answers earlier).
_MATH_PATTERNS = [
    re.compile(r"####\s*(" + _NUMBER + r")"),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
    re.compile(r"(?i:answer is)[:\s]*(" + _NUMBER + r")"),
    re.compile(r"(?i:final answer|answer)\s*[:=]\s*(" + _NUMBER + r")"),
    re.compile(r"(?:^|\n)\s*A\s*:\s*(" + _NUMBER + r")"),
]
_ANY_NUMBER = re.compile(_NUMBER)
# Letters are matched case-sensitively: "the answer is a dog" names no option.
_MC_PATTERNS = [
    re.compile(r"(?i:answer is)[:\s]*\(?([A-D])\b\)?"),
    re.compile(r"####\s*\(?([A-D])\b"),
    re.compile(r"^\s*\(?([A-D])\)?[.:]?\s*$"),
    re.compile(r"(?:^|\n)\s*(?i:answer|A)\s*:\s*\(?([A-D])\b"),
    re.compile(r"^\s*\(?([A-D])[.)]\s"),
]
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


def normalize_number(text: str) -> str | None:
    """`$1,234.00` -> `1234`; `-5.50` -> `-5.5`; a Unicode minus reads as `-`; None when there is no number.

    Decimal, not float, so that long integers compare exactly.
    """
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").replace("\u2212", "-").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


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


def selection_reason(original: str, rewritten: str | None, kind: str, truncated: bool = False) -> str | None:
    """Why the original response is kept instead of the rewrite, or None when the rewrite is used."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {KINDS}")
    reason = rejection_reason(rewritten, truncated)
    if reason is not None or kind not in ("math", "mc"):
        return reason
    expected = extract_answer(original, kind)
    if expected is None:
        return "reference has no answer"
    got = extract_answer(rewritten, kind)
    if got != expected:
        return f"answer {got} != reference {expected}"
    return None


def select_response(
    original: str, rewritten: str | None, kind: str, truncated: bool = False
) -> tuple[str, str]:
    """Conditional selection: (`rewritten`, "teacher") when it is safe to use, else (`original`, "original")."""
    if selection_reason(original, rewritten, kind, truncated) is None:
        return rewritten, "teacher"
    return original, "original"
