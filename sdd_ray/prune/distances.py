"""Which block of layers to drop: angular distance (Gromov et al., 2024) and Block Influence (ShortGPT).

Angular distance. For a calibration sample, let h(l) be the residual-stream state of its last
non-padding token entering layer l (h(0) is the embedding output, h(L) the output of the last
layer, before the final norm). For a block of n layers starting at l,

    d(l, n) = arccos(cos(h(l), h(l + n))) / pi,

averaged over samples. Every d(l, n) is an entry of the pairwise angle matrix A[i, j] between the
L + 1 states, so one forward pass gives every block size at once: d(l, n) = A[l, l + n].

Block Influence (Men et al., 2024, "ShortGPT"): BI(i) = 1 - cos(x_i, y_i) between layer i's input
and output, averaged over every non-padding token. ShortGPT scores single layers; for a contiguous
block of n layers we use the MEAN of BI over the block's layers (BI(l, n) = sum_{i<n} BI(l+i) / n),
so that rows of different n share one scale in the heatmap; within one n the mean and the sum
rank blocks identically.

Sharding. Means are not additive, sums are: each shard returns per-sample SUMS (angles: a
(L+1, L+1) matrix summed over samples, and the sample count; BI: a (L,) vector summed over tokens,
and the token count), the driver adds the shards and divides once, so 1 and k workers agree up to
float rounding. Sums are float64.

Angles use 2 * atan2(|u - v|, |u + v|) on unit vectors rather than arccos(u . v): arccos is
ill-conditioned near 1 (an exact identity block would read ~1e-4 in float32), the atan2 form gives
exactly 0 for equal vectors.
"""

from __future__ import annotations

import math

import torch


def _unit(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = x.to(dtype)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


def pairwise_angles(hidden: torch.Tensor) -> torch.Tensor:
    """Angles / pi between every pair of layer states, per sample.

    hidden: (samples, L+1, hidden) -> (samples, L+1, L+1), float64 in [0, 1].
    """
    u = _unit(hidden)  # (samples, L+1, hidden)
    # Euclidean distances without the matmul shortcut, which is not exactly 0 on equal rows.
    minus = torch.cdist(u, u, compute_mode="donot_use_mm_for_euclid_dist")
    plus = torch.cdist(u, -u, compute_mode="donot_use_mm_for_euclid_dist")
    return 2.0 * torch.atan2(minus, plus) / math.pi


def angle_sums(hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The additive piece of the angular distances of one shard: (sum over samples of A, samples)."""
    if hidden.ndim != 3:
        raise ValueError(f"hidden must be (samples, layers+1, hidden), got shape {tuple(hidden.shape)}")
    return pairwise_angles(hidden).sum(dim=0), hidden.shape[0]


def block_distances(pairwise: torch.Tensor) -> dict[int, torch.Tensor]:
    """d(l, n) for n = 1..L-1 from a mean pairwise matrix (L+1, L+1): {n: tensor over l = 0..L-n}."""
    num_layers = pairwise.shape[0] - 1
    return {
        n: torch.stack([pairwise[l, l + n] for l in range(num_layers - n + 1)])
        for n in range(1, num_layers)
    }


def angular_distances(hidden: torch.Tensor) -> dict[int, torch.Tensor]:
    """d(l, n) averaged over samples, for every block size n = 1..L-1 and start l = 0..L-n.

    hidden: (samples, L+1, hidden), the last non-padding token's state before each layer and after the last.
    """
    sums, count = angle_sums(hidden)
    return distances_from_angle_sums(sums, count)


def distances_from_angle_sums(sums: torch.Tensor, count: int) -> dict[int, torch.Tensor]:
    """Angular distances from shard sums already added together."""
    if count <= 0:
        raise ValueError("no calibration samples: cannot average the angular distances")
    return block_distances(sums / count)


def bi_token_sums(inputs: torch.Tensor, outputs: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """One layer's additive BI piece: (sum over non-padding tokens of 1 - cos(in, out), tokens).

    inputs, outputs: (batch, seq, hidden); mask: (batch, seq), 1 on real tokens.
    """
    # float32 per token (every token of every layer: float64 here costs ~20% of the forward pass),
    # float64 for the sum; 1 - cos(u, v) = |u - v|^2 / 2 for unit vectors, exact 0 for an identity layer.
    u, v = _unit(inputs, torch.float32), _unit(outputs, torch.float32)
    one_minus_cos = (u - v).pow(2).sum(dim=-1) / 2  # (batch, seq)
    keep = mask.bool()
    return float(one_minus_cos[keep].double().sum()), int(keep.sum())


def distances_from_bi_sums(sums: torch.Tensor, tokens: int) -> dict[int, torch.Tensor]:
    """Block BI (mean of the layers' BI) for n = 1..L-1 from summed per-layer BI (L,) and the token count."""
    if tokens <= 0:
        raise ValueError("no calibration tokens: cannot average the block influence")
    per_layer = sums.double() / tokens  # (L,)
    return {n: per_layer.unfold(0, n, 1).mean(dim=1) for n in range(1, per_layer.shape[0])}


def choose_block(distances: dict[int, torch.Tensor], n: int) -> int:
    """Start layer of the n-layer block with the smallest distance; on a tie, the deepest block."""
    if n not in distances:
        raise ValueError(f"block size {n} not available: choose 1..{max(distances)}")
    row = distances[n]
    smallest = row.min()
    return int(torch.nonzero(row == smallest).max())
