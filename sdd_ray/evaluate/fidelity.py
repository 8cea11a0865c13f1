"""Fidelity to the original: how closely a (pruned, fine-tuned) model follows the reference's distribution.

Self-data distillation is meant to keep the pruned model close to the original. Measured directly:
the reference answers each held-out prompt greedily (once; the answers are cached by content), then
both models read prompt + answer (teacher forcing) and, at each answer position,

- KL(p_ref || p_model) in nats,
- top-1 agreement: whether both models' most likely next token is the same (alpha),
- the model's negative log-likelihood of the reference's token.

Reported as means over all answer tokens, with `expected_accepted_length` = (1 - alpha^(k+1)) / (1 - alpha),
the tokens per target pass of speculative decoding with a draft of length k that agrees with the
target at rate alpha independently per token. Per-prompt means are kept for paired comparisons.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sdd_ray.config import ConfigError
from sdd_ray.data import load_rows
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.examples import draw_documents
from sdd_ray.generation import generate_texts
from sdd_ray.guards import fingerprint
from sdd_ray.io import write_text
from sdd_ray.models import as_spec, load_model, load_tokenizer
from sdd_ray.prompts import encode_prompt, render_prompt, stop_token_ids

DEFAULT_CACHE = Path.home() / ".cache" / "sdd_ray" / "fidelity"


def expected_accepted_length(alpha: float, k: int) -> float:
    """Tokens per target pass with a k-token draft accepted token by token at rate `alpha`."""
    return float(k + 1) if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)


def token_fidelity(ref_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position {kl, agree, nll} of `logits` against `ref_logits` (positions, vocab) on `targets` (positions,)."""
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    logp = torch.log_softmax(logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).clamp_min(0.0)
    agree = (ref_logits.argmax(-1) == logits.argmax(-1)).float()
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return {"kl": kl, "agree": agree, "nll": nll}


def summarize(records: list[dict], k: int) -> dict:
    """Token-weighted means of the per-prompt records, and the expected accepted length."""
    tokens = sum(r["tokens"] for r in records)
    if tokens == 0:
        raise ConfigError("fidelity: the reference's answers have no tokens; raise fidelity.max_new_tokens")

    def mean(key: str) -> float:
        return sum(r[key] * r["tokens"] for r in records) / tokens

    alpha = mean("agreement")
    return {
        "kl": mean("kl"), "top1_agreement": alpha, "nll": mean("nll"),
        "expected_accepted_length": expected_accepted_length(alpha, k), "k": k,
        "n": len(records), "tokens": tokens,
    }


def load_prompts(cfg: EvaluateConfig) -> tuple[list[int], list[dict]]:
    """(indices, rows) of the prompts: a seeded sample of `cfg.limit` rows, as every task, in source order."""
    try:
        rows, _ = load_rows(cfg.fidelity.prompts)
    except FileNotFoundError as error:
        raise ConfigError(f"fidelity.prompts: {error}") from None
    if not rows:
        raise ConfigError(f"fidelity.prompts: {cfg.fidelity.prompts.source} has no usable rows")
    indices = draw_documents(len(rows), cfg.limit, cfg.seed, "fidelity")
    return indices, [rows[i] for i in indices]


def reference_answers(reference, tokenizer, prompts: list[str], cfg: EvaluateConfig, spec) -> list[list[int]]:
    """Token ids of the reference's greedy answers (end token included when it stopped), cached by content."""
    key_data = {"model": spec.path, "revision": spec.revision, "weights": fingerprint(spec.path), "dtype": spec.dtype,
                "prompts": prompts, "max_new_tokens": cfg.fidelity.max_new_tokens}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cfg.fidelity.cache_dir or DEFAULT_CACHE) / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())["answers"]
    stop = stop_token_ids(tokenizer, reference.generation_config)[0]
    generations = generate_texts(reference, tokenizer, prompts, cfg.fidelity.max_new_tokens, cfg.batch_size)
    answers = [tokenizer(g.text, add_special_tokens=False).input_ids + ([] if g.truncated else [stop])
               for g in generations]
    write_text(path, json.dumps({"key": key_data, "answers": answers}))
    return answers


@torch.no_grad()
def _answer_logits(model, prompt_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
    """Logits at the positions that predict the answer tokens (answer length, vocab)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + answer_ids], device=device)
    return model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]


def fidelity_records(
    model, reference, doc_ids: list[int], prompt_ids: list[list[int]], answers: list[list[int]]
) -> list[dict]:
    """One {doc_id, kl, agreement, nll, tokens} per prompt (means over its answer tokens)."""
    records = []
    for doc_id, prompt, answer in zip(doc_ids, prompt_ids, answers):
        if not answer:
            records.append({"doc_id": doc_id, "kl": 0.0, "agreement": 1.0, "nll": 0.0, "tokens": 0})
            continue
        targets = torch.tensor(answer)
        values = token_fidelity(_answer_logits(reference, prompt, answer).cpu(), _answer_logits(model, prompt, answer).cpu(), targets)
        records.append({"doc_id": doc_id, **{name: float(values[key].mean()) for name, key in
                                             (("kl", "kl"), ("agreement", "agree"), ("nll", "nll"))},
                        "tokens": len(answer)})
    return records


def evaluate_fidelity(cfg: EvaluateConfig) -> dict:
    """{kl, top1_agreement, nll, expected_accepted_length, k, n, tokens, reference, prompts, examples} of `cfg.model`."""
    if not cfg.reference:
        raise ConfigError("task `fidelity` needs the original model: give --reference (evaluate.reference)")
    ref_spec = cfg.model.model_copy(update={"path": as_spec(cfg.reference).path, "revision": None, "gguf": None})
    tokenizer = load_tokenizer(ref_spec)
    model_tokenizer = load_tokenizer(cfg.model)
    if model_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"fidelity: {cfg.model.path} and the reference {cfg.reference} use different tokenizers")
    doc_ids, rows = load_prompts(cfg)
    texts = [render_prompt(tokenizer, r["instruction"], r["input"]) for r in rows]
    prompt_ids = [encode_prompt(tokenizer, text) for text in texts]
    reference = load_model(ref_spec)
    answers = reference_answers(reference, tokenizer, texts, cfg, ref_spec)
    same = Path(ref_spec.path).resolve() == Path(cfg.model.path).resolve()
    model = reference if same else load_model(cfg.model)
    records = fidelity_records(model, reference, doc_ids, prompt_ids, answers)
    for record, row in zip(records, rows):
        record["id"] = row["id"]
    return {**summarize(records, cfg.fidelity.k), "reference": ref_spec.path,
            "prompts": cfg.fidelity.prompts.source, "examples": records}
