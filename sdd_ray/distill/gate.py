"""The rewrite quality gate: rejections beyond the paper's answer check (pure functions over strings).

Conditional selection (Thangarasa et al. 2024) keeps a rewrite whose final answer matches the
reference. On a small teacher that rewards the wrong thing: SmolLM2-135M mostly answers a GSM8K
problem with the number alone (`#### 42`), loops (`#### 990 #### 990 ...`), states two different
answers, or, on open-ended rows, writes a non-answer ("I'm glad you found the answer helpful") or
text that shares nothing with the task. Each check below names such a failure; a rewrite that fails
one falls back to the reference response, as a wrong answer does. Off unless `DistillConfig.gate`
is set, so the paper's selection stays the default.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

from pydantic import Field

from sdd_ray.answers import normalize_number
from sdd_ray.config import StrictModel


class QualityGate(StrictModel):
    """Thresholds of the gate; each check can be switched off by its own setting."""

    min_length_ratio: float = Field(0.3, ge=0, le=1)
    """Math rows whose reference shows its working: a rewrite shorter than this fraction of the reference
    (in words), or with no equation where the reference has some, is `answer only`. 0: off."""
    max_ngram_repeats: int = Field(4, ge=0)
    """A word 4-gram occurring more often than this is a `repetition loop`. 0: off."""
    min_content_overlap: float = Field(0.1, ge=0, le=1)
    """Open-ended rows: the share of the reference's content words that the rewrite must contain. Below it,
    or sharing no content word with the instruction and reference at all, the rewrite is `off topic`. 0: off."""
    reject_non_answers: bool = True
    """Reject rewrites that talk about the exchange instead of answering (`non-answer`)."""
    reject_template_leaks: bool = True
    """Reject `### ` headers and "The answer to this question is" preambles (`template leak`)."""


STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her his how i if in into "
    "is it its me my no not of on or our she so that the their them then there these they this to was we were "
    "what when where which who why will with would you your yes also than more most such some any each".split()
)
EQUATION = re.compile(r"<<[^>]*>>|\d\s*[-+*/x\u00d7=]\s*\d|=\s*\$?\d")
ANSWER_MARK = re.compile(r"(?:####|answer is)[:\s]*\$?\s*([-\u2212]?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
LEAK = re.compile(r"(?m)^\s*###\s|\bthe answer to (?:this|the given|the following|your) (?:question|problem|instruction)\b",
                  re.IGNORECASE)
NON_ANSWER = re.compile(
    r"\b(?:i'?m glad (?:you|that|i)|glad you found|i'?ll make sure|i will make sure|happy to help|"
    r"let me know if you (?:have|need)|as an ai\b|i (?:cannot|can't|can not) (?:answer|help|provide))",
    re.IGNORECASE,
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry content: no stopwords, no one-letter words."""
    return {w for w in words(text) if w not in STOPWORDS and len(w) > 1}


def is_answer_only(original: str, rewritten: str, min_length_ratio: float) -> bool:
    """A reference with working (an equation) rewritten without any, or to a fraction of its length."""
    if min_length_ratio <= 0 or not EQUATION.search(original):
        return False
    short = len(words(rewritten)) < min_length_ratio * len(words(original))
    return short or not EQUATION.search(rewritten)


def has_conflicting_answers(rewritten: str) -> bool:
    """Two different final answers marked in one text (`#### 448000 ... The answer is 44,800.`)."""
    answers = {normalize_number(m) for m in ANSWER_MARK.findall(rewritten)}
    return len(answers - {None}) > 1


def has_repetition_loop(rewritten: str, max_repeats: int) -> bool:
    """Some word 4-gram occurs more than `max_repeats` times: the greedy decoder is looping."""
    if max_repeats <= 0:
        return False
    tokens = rewritten.lower().split()
    grams = Counter(tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3))
    return bool(grams) and max(grams.values()) > max_repeats


def is_off_topic(instruction: str, original: str, rewritten: str, min_overlap: float) -> bool:
    """The rewrite shares no content word with the task, or too few of the reference's content words."""
    if min_overlap <= 0:
        return False
    mine = content_words(rewritten)
    if not mine & (content_words(instruction) | content_words(original)):
        return True
    reference = content_words(original)
    return bool(reference) and len(mine & reference) / len(reference) < min_overlap


def is_copy(original: str, rewritten: str, threshold: float = 0.9) -> bool:
    """The rewrite is (nearly) the reference itself: reported, not rejected (it trains like SFT)."""
    a, b = " ".join(original.split()), " ".join(rewritten.split())
    if a == b:
        return True
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    return matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold and matcher.ratio() >= threshold


def gate_reason(instruction: str, original: str, rewritten: str, kind: str, gate: QualityGate) -> str | None:
    """Why the gate rejects a usable rewrite (`gate: <check>`), or None when it passes."""
    if gate.reject_template_leaks and LEAK.search(rewritten):
        return "gate: template leak"
    if has_repetition_loop(rewritten, gate.max_ngram_repeats):
        return "gate: repetition loop"
    if gate.reject_non_answers and NON_ANSWER.search(rewritten):
        return "gate: non-answer"
    if kind == "math":
        if has_conflicting_answers(rewritten):
            return "gate: conflicting answers"
        if is_answer_only(original, rewritten, gate.min_length_ratio):
            return "gate: answer only"
    elif kind == "general" and is_off_topic(instruction, original, rewritten, gate.min_content_overlap):
        return "gate: off topic"
    return None


MISSING_PASSAGE = re.compile(
    r"\b(?:given|this|the following|following|above|below|provided|attached|reference|these|from the|in the|based on the)"
    r"\s+(?:text|passage|paragraph|paragraphs|article|context|information|document|excerpt|bio|biography|description)\b"
    r"|\bbased on (?:this|the)\b|\bfrom (?:this|the) (?:text|passage|paragraph|article)\b",
    re.IGNORECASE,
)


def refers_to_missing_passage(instruction: str, context: str) -> bool:
    """An instruction that asks about a passage (`Given this paragraph about ...`) when the row has none.

    The local Dolly copy drops `context`; ~10% of its rows then ask about text the model never sees.
    """
    return not (context or "").strip() and bool(MISSING_PASSAGE.search(instruction))


def reason_category(reason: str) -> str:
    """A selection reason without its specifics (`answer 5 != reference 6` -> `answer mismatch`), for counts."""
    if reason.startswith("answer "):
        return "answer mismatch"
    if reason.startswith("leaks prompt"):
        return "leaks prompt"
    return reason
