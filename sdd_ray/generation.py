"""Batched greedy generation and log-likelihood scoring with transformers (CPU or GPU).

Shared by the evaluator, the `hf` distillation backend and the target-only baseline of speculative
decoding, so that "the model's answer" means the same thing everywhere.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from sdd_ray.prompts import encode_prompt, stop_token_ids


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    truncated: bool  # stopped at max_new_tokens without an end-of-sequence token


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def left_padded_batch(tokenizer, prompts: list[str], device) -> dict:
    """`input_ids` and `attention_mask` of `prompts`, encoded by `encode_prompt`, padded on the left."""
    tokenizer.padding_side = "left"
    encoded = [{"input_ids": encode_prompt(tokenizer, prompt)} for prompt in prompts]
    return tokenizer.pad(encoded, return_tensors="pt").to(device)


@torch.no_grad()
def generate_texts(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 128, batch_size: int = 32
) -> list[Generation]:
    """Greedy continuations of `prompts`, in order, batched with left padding; stops on every end id."""
    stops = stop_token_ids(tokenizer, model.generation_config)
    device = next(model.parameters()).device
    results: list[Generation] = []
    for chunk in _batches(prompts, batch_size):
        enc = left_padded_batch(tokenizer, chunk, device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stops,
        )
        new = out[:, enc["input_ids"].shape[1] :]  # (batch, generated)
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        for row, prompt_len in zip(new.tolist(), prompt_lengths):
            end = next((i for i, token in enumerate(row) if token in stops), None)
            finished = end is not None
            tokens = row[:end] if finished else row
            results.append(
                Generation(
                    text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    prompt_tokens=int(prompt_len),
                    new_tokens=len(tokens) + int(finished),
                    truncated=not finished,
                )
            )
    return results


@torch.no_grad()
def continuation_logprobs(
    model, tokenizer, contexts: list[str], continuations: list[str], batch_size: int = 64
) -> list[float]:
    """Sum of log p(continuation | context) for each pair, as lm-eval's `loglikelihood`.

    Only the positions that predict continuation tokens are scored: the model is asked for the
    logits of the batch's last `keep` positions (`logits_to_keep`, where the model takes it) and
    each row's continuation slice is normalised on its own, so no (batch, seq, vocab)
    log-probability tensor is built.
    """
    device = next(model.parameters()).device
    pairs = []
    for context, continuation in zip(contexts, continuations):
        ctx = encode_prompt(tokenizer, context)
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        pairs.append((ctx + cont, len(cont)))
    trim = _accepts_logits_to_keep(model)
    scores: list[float] = []
    for chunk in _batches(pairs, batch_size):
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, (ids, _) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        # The first position whose logits predict a continuation token, over the batch.
        first = min((len(ids) - n_cont - 1 for ids, n_cont in chunk if n_cont), default=width - 1)
        extra = {"logits_to_keep": width - first} if trim else {}
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), **extra).logits
        offset = width - logits.shape[1]  # (batch, width - offset, vocab): column j is position offset + j
        for i, (ids, n_cont) in enumerate(chunk):
            if n_cont == 0:
                scores.append(0.0)
                continue
            start = len(ids) - n_cont - 1 - offset
            targets = torch.tensor(ids[-n_cont:], device=logits.device)
            scores.append(target_logprobs(logits[i, start : start + n_cont], targets).sum().item())
    return scores


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., targets] without a (positions, vocab) log-probability tensor.

    log p(t) = logit_t - logsumexp(logits): one float32 copy of the rows' logits at most, where
    log_softmax would add a second full (positions, vocab) tensor.
    """
    logits = logits.float()  # (positions, vocab)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (positions,)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters
