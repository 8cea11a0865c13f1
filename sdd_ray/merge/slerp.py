"""Spherical linear interpolation (SLERP) of two weight tensors (Shoemake, 1985).

Each tensor is treated as one flat vector. The angle between the two comes from their normalised
directions; the *original* tensors (norms included) are then combined with the SLERP weights

    slerp(a, b, t) = sin((1 - t) theta) / sin(theta) * a  +  sin(t theta) / sin(theta) * b

so that a merged weight moves along the arc between the parents instead of the chord, which keeps
its norm from shrinking when the parents point in different directions (the reason model-merging
tools such as mergekit use SLERP for two models; the SDD paper merges with it too).

Degenerate cases fall back to linear interpolation `(1 - t) a + t b`:
- nearly colinear parents (`1 - |cos theta| < eps`): sin(theta) -> 0 and the SLERP weights lose
  precision, while SLERP and LERP agree to O(theta^2) when theta is small;
- nearly *opposite* parents (cos theta -> -1): no unique arc joins antipodal points, so SLERP is
  undefined; like mergekit we use LERP, whose midpoint of exact opposites is zero (the parents
  cancel). Such pairs do not arise between fine-tunes of one model; `slerp_with_info` reports it;
- a zero tensor: it has no direction.

The maths runs in float32 (float64 stays float64), chunk by chunk, so the extra memory is a few
chunks whatever the tensor's size; the result has the inputs' dtype and device, and t = 0 / t = 1
return exact copies of `a` / `b`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_EPS = 5e-4
"""Colinearity tolerance on 1 - |cos theta| (mergekit's DOT_THRESHOLD = 0.9995)."""
CHUNK = 1 << 22
"""Elements per float32 working chunk (16 MiB)."""


@dataclass(frozen=True)
class SlerpInfo:
    """How a tensor was interpolated: `slerp`, `lerp` (degenerate angle) or `copy` (t = 0 or 1)."""

    method: str
    theta: float | None
    """Angle between the parents in radians (None when not computed)."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(flat_a: torch.Tensor, flat_b: torch.Tensor, dtype: torch.dtype):
    """Matching float `dtype` chunks of two flat tensors."""
    for start in range(0, flat_a.numel(), CHUNK):
        stop = start + CHUNK
        yield flat_a[start:stop].to(dtype), flat_b[start:stop].to(dtype)


def cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(cos theta, |a|, |b|) of the flattened tensors, accumulated chunk by chunk in float32+."""
    dot = sq_a = sq_b = 0.0
    for chunk_a, chunk_b in _chunks(a.reshape(-1), b.reshape(-1), _compute_dtype(a.dtype)):
        dot += torch.dot(chunk_a, chunk_b).item()
        sq_a += torch.dot(chunk_a, chunk_a).item()
        sq_b += torch.dot(chunk_b, chunk_b).item()
    norm_a, norm_b = math.sqrt(sq_a), math.sqrt(sq_b)
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0, norm_a, norm_b
    return max(-1.0, min(1.0, dot / (norm_a * norm_b))), norm_a, norm_b


def _combine(a: torch.Tensor, b: torch.Tensor, weight_a: float, weight_b: float) -> torch.Tensor:
    """weight_a * a + weight_b * b in float32+, written chunk by chunk into a tensor of a's dtype."""
    out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    flat_out = out.view(-1)
    dtype = _compute_dtype(a.dtype)
    start = 0
    for chunk_a, chunk_b in _chunks(a.reshape(-1), b.reshape(-1), dtype):
        target = flat_out[start : start + chunk_a.numel()]
        start += chunk_a.numel()
        if target.dtype == dtype:  # the chunks are views of a and b: write straight into the output
            torch.mul(chunk_a, weight_a, out=target).add_(chunk_b, alpha=weight_b)
        else:  # the chunks are float32 copies: mix in place, then round once to a's dtype
            target.copy_(chunk_a.mul_(weight_a).add_(chunk_b, alpha=weight_b))
    return out


def _check(a: torch.Tensor, b: torch.Tensor, t: float) -> None:
    if a.shape != b.shape:
        raise ValueError(f"slerp: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"slerp: dtype/device differ: {a.dtype}@{a.device} vs {b.dtype}@{b.device}")
    if not a.is_floating_point():
        raise ValueError(f"slerp: needs floating-point tensors, got {a.dtype}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"slerp: t must be in [0, 1], got {t}")


def slerp_with_info(
    a: torch.Tensor, b: torch.Tensor, t: float, eps: float = DEFAULT_EPS
) -> tuple[torch.Tensor, SlerpInfo]:
    """`slerp(a, b, t)` and how it was computed (for the merge report)."""
    t = float(t)
    _check(a, b, t)
    if t == 0.0:
        return a.clone(), SlerpInfo("copy", None)
    if t == 1.0:
        return b.clone(), SlerpInfo("copy", None)
    cos_theta, norm_a, norm_b = cosine(a, b)
    theta = math.acos(cos_theta)
    if norm_a == 0.0 or norm_b == 0.0 or 1.0 - abs(cos_theta) < eps:
        return _combine(a, b, 1.0 - t, t), SlerpInfo("lerp", theta)
    sin_theta = math.sin(theta)
    weight_a = math.sin((1.0 - t) * theta) / sin_theta
    weight_b = math.sin(t * theta) / sin_theta
    return _combine(a, b, weight_a, weight_b), SlerpInfo("slerp", theta)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1); LERP when `1 - |cos theta| < eps`.

    `a` and `b` must share shape, dtype and device; the result has them too.
    """
    return slerp_with_info(a, b, t, eps)[0]
