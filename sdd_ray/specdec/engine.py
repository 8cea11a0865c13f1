"""Speculative decoding over transformers causal LMs, with KV caches on both models (batch size 1).

One step: the draft proposes k tokens autoregressively from its own KV cache; the target scores the
uncached part of the sequence plus all k proposals in ONE forward pass; `acceptance` decides how
many proposals stand and which token follows; both caches are cropped back to the accepted prefix.
The first step doubles as the target's prefill, so every target forward pass is a verification and
emits accepted + 1 tokens: tokens per target pass == vLLM's mean acceptance length 1 + accepted/drafts.

Cache invariant between steps: `ids` holds prompt + emitted tokens; each model's cache covers a
prefix of `ids` (never a rejected proposal), and the uncached suffix is fed on the next forward.

`target_only_stream` is the same-run baseline: plain decoding with the target's KV cache and the
same sampling code, one token per forward pass.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sdd_ray.specdec.acceptance import greedy_verify, logits_to_probs, rejection_verify, sample
from sdd_ray.specdec.decoding import GREEDY, DecodeMetrics, Sampling


@dataclass
class Chunk:
    """Tokens emitted by one target forward pass; `finish_reason` is set on the last chunk."""

    tokens: list[int]
    finish_reason: str | None = None  # "stop" (end of sequence) or "length" (max_new_tokens)


def _generator(sampling: Sampling) -> torch.Generator | None:
    """The seeded random source of a sampled decode (None: torch's global one)."""
    return None if sampling.seed is None else torch.Generator().manual_seed(sampling.seed)


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@functools.cache
def _cache_argument(model_class: type) -> str:
    """The forward argument that takes the KV cache: `cache` in transformers >= 5.2x, `past_key_values` before.

    An unknown keyword is swallowed by `**kwargs` without error, and the model then decodes every
    step without its context (garbage text), so the name is read from the signature, not assumed.
    """
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _forward(model, cache, new_ids: list[int], keep: int = 1) -> torch.Tensor:
    """Logits (keep, V) of the last `keep` of `new_ids`, appended to what `cache` holds; the cache grows.

    `logits_to_keep` skips the LM head on positions nobody reads (the prompt, during the first verification).
    """
    device = next(model.parameters()).device
    input_ids = torch.tensor([new_ids], dtype=torch.long, device=device)
    out = model(input_ids=input_ids, **{_cache_argument(type(model)): cache}, use_cache=True, logits_to_keep=keep)
    return out.logits[0].float().cpu()  # (keep, V)


def _crop(cache, length: int) -> None:
    """Drop cached positions beyond `length` (transformers 5 `crop` takes minus the count to remove)."""
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)


def _finish(emitted: list[int], produced: int, max_new_tokens: int, eos: set[int]) -> Chunk:
    """Cut a step's tokens at the first end-of-sequence token or at the token budget."""
    for i, token in enumerate(emitted):
        if token in eos:
            return Chunk(emitted[: i + 1], "stop")
        if produced + i + 1 >= max_new_tokens:
            return Chunk(emitted[: i + 1], "length")
    return Chunk(emitted)


def _eos_ids(model, eos_token_id: int | list[int] | None) -> set[int]:
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id or model.config.eos_token_id
    if eos_token_id is None:
        return set()
    return {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)


class SpeculativeDecoder:
    """Draft-then-verify decoding of one sequence at a time with a (target, draft) pair."""

    def __init__(self, target, draft, k: int = 4, eos_token_id: int | list[int] | None = None):
        if k < 1:
            raise ValueError("k (tokens proposed per step) must be >= 1")
        target_vocab = target.get_output_embeddings().weight.shape[0]
        draft_vocab = draft.get_output_embeddings().weight.shape[0]
        if target_vocab != draft_vocab:
            raise ValueError(f"draft vocabulary ({draft_vocab}) differs from the target's ({target_vocab})")
        self.target, self.draft, self.k = target, draft, k
        self.eos = _eos_ids(target, eos_token_id)

    @torch.inference_mode()
    def stream(
        self, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
        metrics: DecodeMetrics | None = None,
    ) -> Iterator[Chunk]:
        """Chunks of emitted tokens, one per target forward pass; counters go to `metrics`."""
        if not prompt_ids:
            raise ValueError("the prompt must have at least one token")
        metrics = metrics if metrics is not None else DecodeMetrics()
        metrics.prompt_tokens += len(prompt_ids)
        generator = _generator(sampling)
        ids = list(prompt_ids)
        target_cache, draft_cache = _new_cache(self.target), _new_cache(self.draft)
        produced = 0
        while produced < max_new_tokens:
            step_start, cpu_start = time.perf_counter(), time.process_time()
            # Never propose past the budget: the bonus token needs one slot of its own.
            k = min(self.k, max_new_tokens - produced - 1)
            proposals, draft_probs = self._propose(ids, draft_cache, k, sampling, generator)
            # One target pass over everything it has not cached, proposals included.
            target_cached = target_cache.get_seq_length()
            # (k+1, V): the target's predictions for x_1..x_k and the bonus token
            logits = _forward(self.target, target_cache, ids[target_cached:] + proposals, keep=k + 1)
            metrics.target_forwards += 1
            drafted = torch.tensor(proposals, dtype=torch.long)
            if sampling.greedy:
                accepted, next_token = greedy_verify(drafted, logits)
            else:
                target_probs = logits_to_probs(logits, sampling.temperature, sampling.top_p)
                if k == 0:  # budget left for one token only: a plain target step
                    accepted, next_token = 0, sample(target_probs[0], generator)
                else:
                    accepted, next_token = rejection_verify(drafted, draft_probs, target_probs, generator)
            if k > 0:
                metrics.record_draft(k, accepted)
            # Keep only the accepted prefix in both caches; `next_token` is fed on the next step.
            _crop(target_cache, len(ids) + accepted)
            _crop(draft_cache, len(ids) + accepted)
            chunk = _finish(proposals[:accepted] + [next_token], produced, max_new_tokens, self.eos)
            ids += chunk.tokens
            produced += len(chunk.tokens)
            metrics.new_tokens += len(chunk.tokens)
            if chunk.finish_reason is None and produced >= max_new_tokens:
                chunk.finish_reason = "length"
            metrics.seconds += time.perf_counter() - step_start  # decoding time, not the consumer's
            metrics.cpu_seconds += time.process_time() - cpu_start
            yield chunk
            if chunk.finish_reason:
                return

    def _propose(self, ids, draft_cache, k, sampling, generator) -> tuple[list[int], torch.Tensor | None]:
        """k draft tokens (and their draft distributions when sampling), extending `draft_cache`."""
        proposals: list[int] = []
        probs: list[torch.Tensor] = []
        if k == 0:
            return proposals, None
        pending = ids[draft_cache.get_seq_length():]
        for i in range(k):
            logits = _forward(self.draft, draft_cache, pending)[-1]  # (V,)
            if sampling.greedy:
                token = int(logits.argmax())
            else:
                q = logits_to_probs(logits, sampling.temperature, sampling.top_p)
                token = sample(q, generator)
                probs.append(q)
            proposals.append(token)
            pending = [token]
        return proposals, (torch.stack(probs) if probs else None)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = GREEDY) -> tuple[list[int], DecodeMetrics]:
        """All new tokens of one request and its metrics."""
        metrics = DecodeMetrics()
        tokens = [t for chunk in self.stream(prompt_ids, max_new_tokens, sampling, metrics) for t in chunk.tokens]
        return tokens, metrics


@torch.inference_mode()
def target_only_stream(
    model, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
    eos_token_id: int | list[int] | None = None, metrics: DecodeMetrics | None = None,
) -> Iterator[Chunk]:
    """Plain decoding with a KV cache: one forward pass, one token."""
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    metrics = metrics if metrics is not None else DecodeMetrics()
    metrics.prompt_tokens += len(prompt_ids)
    eos = _eos_ids(model, eos_token_id)
    generator = _generator(sampling)
    cache = _new_cache(model)
    pending = list(prompt_ids)
    for produced in range(max_new_tokens):
        step_start, cpu_start = time.perf_counter(), time.process_time()
        logits = _forward(model, cache, pending)[-1]
        metrics.target_forwards += 1
        if sampling.greedy:
            token = int(logits.argmax())
        else:
            token = sample(logits_to_probs(logits, sampling.temperature, sampling.top_p), generator)
        metrics.new_tokens += 1
        finish = "stop" if token in eos else ("length" if produced + 1 == max_new_tokens else None)
        metrics.seconds += time.perf_counter() - step_start
        metrics.cpu_seconds += time.process_time() - cpu_start
        yield Chunk([token], finish)
        if finish:
            return
        pending = [token]


def target_only_generate(
    model, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = GREEDY,
    eos_token_id: int | list[int] | None = None,
) -> tuple[list[int], DecodeMetrics]:
    metrics = DecodeMetrics()
    chunks = target_only_stream(model, prompt_ids, max_new_tokens, sampling, eos_token_id, metrics)
    tokens = [t for chunk in chunks for t in chunk.tokens]
    return tokens, metrics
