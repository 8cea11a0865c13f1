"""The distribution gap that self-data distillation exploits, measured on a distillation output.

SDD assumes the teacher's rewrite ỹ is closer to the model's own distribution than the data set's
response y: lower NLL/token under the unpruned model. This scores both, paired on the same rows (those
whose rewrite was selected), as the fine-tuning prompt renders them, so `stats.json` says whether the
assumption held for this teacher and data set.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.models import load_model_and_tokenizer
from sdd_ray.prompts import render_prompt


def selected_rows(data_dir: Path, max_rows: int) -> list[dict]:
    """Up to `max_rows` rows whose rewrite was selected, in id order (the same rows on every rerun)."""
    import pyarrow.parquet as pq

    rows = []
    for shard in sorted(Path(data_dir).glob("part-*.parquet")):
        rows.extend(r for r in pq.read_table(shard).to_pylist() if r["source"] == "teacher")
    return sorted(rows, key=lambda r: r["id"])[:max_rows]


def nll_per_token(model, tokenizer, rows: list[dict], column: str, batch_size: int = 8) -> float:
    """Mean NLL per token of `rows[column]` given each row's rendered prompt (token-weighted)."""
    from sdd_ray.generation import continuation_logprobs

    contexts = [render_prompt(tokenizer, r["instruction"], r["input"] or "") for r in rows]
    texts = [r[column] for r in rows]
    logprobs = continuation_logprobs(model, tokenizer, contexts, texts, batch_size=batch_size)
    tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    return -sum(logprobs) / tokens if tokens else 0.0


def distribution_gap(teacher: ModelSpec, data_dir: Path, max_rows: int) -> dict:
    """{rows, nll_per_token: {reference, rewrite}} under `teacher` on up to `max_rows` selected rewrites."""
    rows = selected_rows(data_dir, max_rows)
    if not rows:
        return {"rows": 0, "nll_per_token": None}
    model, tokenizer = load_model_and_tokenizer(teacher)
    return {
        "rows": len(rows),
        "nll_per_token": {
            "reference": round(nll_per_token(model, tokenizer, rows, "original_response"), 4),
            "rewrite": round(nll_per_token(model, tokenizer, rows, "teacher_response"), 4),
        },
    }
