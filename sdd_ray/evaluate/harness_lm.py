"""lm-eval's `hf` model with log-likelihood batches bounded by tokens, not by rows.

lm-eval's `HFLM` batches `batch_size` requests whatever their length, and each batch materialises
(batch, padded length, vocabulary) logits and their log-softmax in float32: 32 rows of 10-shot
HellaSwag (~880 tokens) with SmolLM2's 49,152-token vocabulary are ~11 GB. Here the requests are
cut, longest first, into batches of at most `max_batch_tokens` padded tokens (and at most
`batch_size` rows), each scored by `HFLM` itself, so the numbers are lm-eval's and memory is bounded.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM
from tqdm import tqdm


def token_batches(lengths: list[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices of `lengths`, longest first, grouped so that rows x longest length <= `max_tokens` (>= 1 row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < max_rows and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class TokenBudgetHFLM(HFLM):
    """`HFLM` whose log-likelihood batches hold at most `max_batch_tokens` padded tokens."""

    def __init__(self, *args, max_batch_tokens: int = 4096, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = max_batch_tokens

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        if self.batch_size == "auto" or not requests:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        lengths = [min(len(context) + len(continuation), self.max_length) for _, context, continuation in requests]
        results: list = [None] * len(requests)
        rows = self.batch_size_per_gpu
        bar = tqdm(total=len(requests), desc="Scoring log-likelihoods", unit="request", disable=disable_tqdm or self.rank != 0)
        try:
            for batch in token_batches(lengths, self.max_batch_tokens, rows):
                self.batch_size_per_gpu = len(batch)
                scored = super()._loglikelihood_tokens([requests[i] for i in batch], disable_tqdm=True)
                for i, result in zip(batch, scored):
                    results[i] = result
                bar.update(len(batch))
        finally:
            bar.close()
            self.batch_size_per_gpu = rows
        return results
