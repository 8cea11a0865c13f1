"""Final answers of model outputs and reference solutions (pure functions over strings).

Shared by distillation (a rewrite is kept only when its answer equals the reference's) and by
evaluation (exact match on math, the chosen letter on multiple choice), so that both read an answer
the same way and neither stage imports the other.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KINDS = ("math", "mc", "general")
"""Task kinds: a numeric final answer, an option letter, or no checkable answer."""

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
