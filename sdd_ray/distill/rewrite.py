"""Row functions around generation: which kind a row is, its rewrite prompt, and the selection.

Pure functions over canonical rows (`sdd_ray.data`), no Ray: the pipeline maps them over batches.
"""

from __future__ import annotations

from sdd_ray.answers import KINDS
from sdd_ray.distill.gate import QualityGate, refers_to_missing_passage
from sdd_ray.distill.selection import selection_reason
from sdd_ray.prompts import load_template, rewrite_prompt


def load_templates(templates: dict[str, str]) -> dict[str, str]:
    """Template text per kind from names or file paths; fails early on a missing file or placeholder."""
    loaded = {}
    for kind, name in templates.items():
        text = load_template(name)
        for placeholder in ("{instruction}", "{reference}"):
            if placeholder not in text:
                raise ValueError(f"rewrite template {name!r} (kind {kind}) lacks the {placeholder} placeholder")
        loaded[kind] = text
    return loaded


def row_kind(row: dict, task_kind: str) -> str:
    """The kind that decides the template and the answer check: forced by config, else the row's own."""
    if task_kind != "auto":
        return task_kind
    return row.get("kind") if row.get("kind") in KINDS else "general"


def prompt_for(row: dict, kind: str, templates: dict[str, str]) -> str:
    """The rewrite prompt's text (before any chat template): the task plus the reference response."""
    return rewrite_prompt(templates[kind], row["instruction"], row["response"], row.get("input", ""))


def as_chat(tokenizer, text: str) -> str:
    """`text` as a user turn in the tokenizer's chat template; unchanged when there is none.

    The built-in templates end in `### Response:`, so a plain model continues them directly.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def input_reason(row: dict, drop_missing_context: bool, max_reference_words: int | None) -> str:
    """Why a valid row is not worth rewriting (`""` when it is): it asks about a passage it lacks, or its
    reference is longer than the budget. Rejected rows are left out of both fine-tuning arms alike."""
    if drop_missing_context and refers_to_missing_passage(row["instruction"], row.get("input", "")):
        return "refers to a missing passage"
    if max_reference_words is not None and len(row["response"].split()) > max_reference_words:
        return f"reference longer than {max_reference_words} words"
    return ""


def select_row(row: dict, gate: QualityGate | None = None) -> dict:
    """Conditional selection on a generated row: `selected_response`, `source` and `selection_reason`."""
    reason = selection_reason(row["response"], row["teacher_response"], row["kind"], bool(row["truncated"]),
                              row.get("instruction", ""), gate)
    chosen = row["teacher_response"] if reason is None else row["response"]
    return {"selected_response": chosen, "source": "teacher" if reason is None else "original", "selection_reason": reason or ""}
