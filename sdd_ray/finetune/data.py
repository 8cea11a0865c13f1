"""Rows -> token ids with the prompt masked, and a deterministic bucketed batch plan.

Pure functions, no Ray: the trainer reads rows with Ray Data, every worker tokenizes them here and
takes its slice of the same global batch plan, so that all workers run the same number of steps
(collectives would hang otherwise) and a resumed run replays exactly the same order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from sdd_ray.config import ConfigError
from sdd_ray.prompts import prompt_token_ids

IGNORE_INDEX = -100  # label of prompt and padding positions: no loss there


class DataError(ConfigError):
    """The training data cannot be used as given (empty, missing columns, nothing left after filtering)."""


@dataclass
class TokenStats:
    """What happened to the rows: used as is, cut to max_length, or dropped (and why)."""

    rows: int = 0
    used: int = 0
    truncated: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def encode_row(
    tokenizer, instruction: str, input: str, response: str, max_length: int, overlong: str
) -> tuple[list[int], list[int], str]:
    """(input ids, labels, status): labels are IGNORE_INDEX on the prompt, the response + EOS after it.

    status: `ok`, `truncated` (cut to `max_length`), or a rejection reason (ids empty).
    """
    prompt = prompt_token_ids(tokenizer, instruction, input)
    response_ids = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = prompt + response_ids
    labels = [IGNORE_INDEX] * len(prompt) + response_ids
    if len(ids) <= max_length:
        return ids, labels, "ok"
    if overlong == "reject":
        return [], [], "longer than max_length"
    if len(prompt) >= max_length:
        return [], [], "prompt alone fills max_length"
    return ids[:max_length], labels[:max_length], "truncated"


def row_key(row: dict) -> str:
    """A stable sort key: the row's id, else a hash of its content (Ray Data does not fix row order)."""
    if row.get("id"):
        return str(row["id"])
    content = "\x1f".join(str(row.get(k) or "") for k in ("instruction", "input", "response", "original_response"))
    return hashlib.sha1(content.encode()).hexdigest()


def tokenize_rows(
    rows: list[dict], tokenizer, response_column: str, max_length: int, overlong: str
) -> tuple[list[tuple[list[int], list[int]]], TokenStats]:
    """Examples in a canonical order (sorted by `row_key`) and the counts of what was cut or dropped."""
    stats = TokenStats(rows=len(rows))
    examples = []
    for row in sorted(rows, key=row_key):
        response = row.get(response_column)
        if not isinstance(response, str) or not response.strip():
            stats.reject(f"empty {response_column}")
            continue
        ids, labels, status = encode_row(
            tokenizer, str(row.get("instruction") or ""), str(row.get("input") or ""), response, max_length, overlong
        )
        if not ids:
            stats.reject(status)
            continue
        stats.truncated += status == "truncated"
        examples.append((ids, labels))
    stats.used = len(examples)
    return examples, stats


def epoch_plan(lengths: list[int], global_batch: int, seed: int, epoch: int, window: int = 16) -> list[list[int]]:
    """Global batches (lists of example indices) for one epoch, the same on every worker and every rerun.

    A seeded shuffle, then each window of `window` batches is sorted by length (less padding), then
    the batch order is shuffled again. The remainder that does not fill a global batch is left out.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    usable = len(order) - len(order) % global_batch
    batches = []
    span = global_batch * window
    for start in range(0, usable, span):
        chunk = sorted(order[start : min(start + span, usable)], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch))
    rng.shuffle(batches)
    return batches


def worker_slice(batch: list[int], rank: int, world_size: int) -> list[int]:
    """Worker `rank`'s micro-batch of a global batch (contiguous, so lengths stay similar)."""
    per_worker = len(batch) // world_size
    return batch[rank * per_worker : (rank + 1) * per_worker]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels) long tensors, each (batch, longest)."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return input_ids, mask, labels
