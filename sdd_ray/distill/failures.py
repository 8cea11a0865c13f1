"""Teacher failures: rows the teacher could not rewrite, counted, explained, and bounded.

A row whose generation raised (hf: an exception from `generate`; vllm: the `__inference_error__`
that `ray.data.llm` sets with `should_continue_on_error`) is not kept with its original response,
which would pass an SFT row off as a self-distilled one: it is rejected with reason `teacher_failed`
and its error, so `rows_in == rows_out + rows_rejected` still holds. When more than
`max_teacher_failure_rate` of the rows given to the teacher failed, the run fails: the output is
not a self-distilled data set.
"""

from __future__ import annotations

from collections import Counter

TEACHER_FAILED = "teacher_failed"
MAX_EXAMPLES = 5


class TeacherFailureError(RuntimeError):
    """Too many rows failed in the teacher; the message is one line naming the rate, the limit and the reasons."""


def failure_kind(error: str) -> str:
    """The reason a failure is counted under: the exception's type (`RuntimeError: CUDA out of memory` -> `RuntimeError`)."""
    kind = error.split(":", 1)[0].strip()
    return kind if kind.isidentifier() else "error"


def summarize_failures(rejected: list[dict], rows_rewritten: int) -> dict:
    """`teacher_failed` among the `rejected` rows, its `rate` over the rows given to the teacher (those
    rewritten, whichever response selection kept, and those failed), counts per reason and a few examples."""
    failed = [row for row in rejected if row["reason"] == TEACHER_FAILED]
    reasons = Counter(failure_kind(row.get("error", "")) for row in failed)
    rows_to_teacher = rows_rewritten + len(failed)
    return {
        "teacher_failed": len(failed),
        "rows_to_teacher": rows_to_teacher,
        "rate": round(len(failed) / rows_to_teacher, 6) if rows_to_teacher else 0.0,
        "reasons": dict(reasons.most_common()),
        "examples": [{"id": row["id"], "error": row.get("error", "")} for row in failed[:MAX_EXAMPLES]],
    }


def failure_message(failures: dict, max_rate: float, out: str) -> str | None:
    """The one-line error when the failed fraction of the rows given to the teacher exceeds `max_rate`, else None."""
    if failures["teacher_failed"] == 0 or failures["rate"] <= max_rate:
        return None
    reasons = ", ".join(f"{kind} x{count}" for kind, count in failures["reasons"].items())
    return (
        f"distill: the teacher failed on {failures['teacher_failed']} of {failures['rows_to_teacher']} rows "
        f"({failures['rate']:.1%} > max_teacher_failure_rate {max_rate:.1%}; {reasons}); the rows are in "
        f"{out}/rejected.jsonl with reason {TEACHER_FAILED}, and {out} is not a self-distilled data set"
    )
