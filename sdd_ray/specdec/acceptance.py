"""Verification rules of speculative decoding, as plain functions over logits and probabilities.

Leviathan, Kalman & Matias (2023), "Fast Inference from Transformers via Speculative Decoding":
the draft proposes tokens x_1..x_k sampled from its distributions q_1..q_k; the target scores the
prefix and all k proposals in one forward pass, giving p_1..p_{k+1}. Proposal i is accepted with
probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection the replacement is drawn from
norm(max(0, p_i - q_i)), and if all k are accepted a bonus token is drawn from p_{k+1}. Every
emitted token is then distributed exactly as the target alone would have sampled it.

Greedy decoding is the temperature -> 0 limit: accept while the proposal equals the target's argmax,
then emit the target's argmax, so the output is token for token the target's greedy output.

Shapes: k proposals, vocabulary V. `draft_tokens` (k,), `draft_probs` (k, V), `target_*` (k+1, V).
"""

from __future__ import annotations

import torch


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution over the last dimension after temperature and nucleus (top-p) filtering.

    Draft and target must use the same transform: the guarantee is that the output follows the
    *transformed* target distribution.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling; use greedy verification for temperature 0")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p.
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> int:
    """One token id drawn from a (V,) distribution."""
    return int(torch.multinomial(probs, 1, generator=generator))


def greedy_verify(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> tuple[int, int]:
    """(number of proposals accepted, next token) under greedy decoding.

    Proposals are accepted while each equals the target's argmax at its position; the next token is
    the target's argmax after the accepted prefix (the correction, or the bonus if all matched).
    """
    k = draft_tokens.shape[0]
    choice = target_logits.argmax(dim=-1)  # (k+1,)
    matches = (draft_tokens == choice[:k]).long()
    accepted = int(matches.cumprod(dim=0).sum())
    return accepted, int(choice[accepted])


def residual_distribution(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): where to sample after a rejection.

    If p == q the residual is empty, but then rejection has probability 0; p is returned so the
    function is total (this also absorbs float round-off).
    """
    residual = (target_probs - draft_probs).clamp(min=0.0)
    total = residual.sum()
    if total <= 0:
        return target_probs
    return residual / total


def rejection_verify(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """(number of proposals accepted, next token) under the rejection-sampling rule (sampling)."""
    k = draft_tokens.shape[0]
    positions = torch.arange(k)
    p_x = target_probs[positions, draft_tokens]  # (k,)
    q_x = draft_probs[positions, draft_tokens]  # (k,)
    uniform = torch.rand(k, generator=generator)
    # Accept iff u < p/q, i.e. u * q < p (no division; q(x) > 0 as x was sampled from q).
    accepted_mask = (uniform * q_x < p_x).long()
    accepted = int(accepted_mask.cumprod(dim=0).sum())
    if accepted == k:
        return k, sample(target_probs[k], generator)
    return accepted, sample(residual_distribution(target_probs[accepted], draft_probs[accepted]), generator)
