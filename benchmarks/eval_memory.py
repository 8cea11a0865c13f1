"""Harness scoring with token-bounded batches: peak memory and throughput next to the plain forward pass.

10-shot HellaSwag (the leaderboard setting, ~880-token requests) on a real model through
`evaluate_harness` with `harness.max_batch_tokens` (`TokenBudgetHFLM`). Its log-likelihood calls are
timed and their tokens counted; then the same requests, in the same token batches, go through the bare
model forward pass (no log-softmax, no bookkeeping): the ceiling scoring can approach. Peak RSS is the
process's (`ru_maxrss`), model and data included. Writes benchmarks/results/eval_memory.json.

    SDD_RAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/eval_memory.py --model runs/test-vllm/smollm2-135m \
        [--docs 8] [--max-batch-tokens 4096] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "eval_memory.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from sdd_ray.config import validate_config
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.harness import evaluate_harness
    from sdd_ray.evaluate.harness_lm import TokenBudgetHFLM, token_batches

    cfg = validate_config(EvaluateConfig, {
        "model": {"path": args.model, "dtype": args.dtype, "device": "cpu"}, "evaluator": "harness",
        "tasks": ["hellaswag"], "limit": args.docs, "batch_size": args.batch_size,
        "harness": {"max_batch_tokens": args.max_batch_tokens, "bootstrap_iters": 0},
    })
    calls: list[tuple[float, list]] = []
    scoring = TokenBudgetHFLM._loglikelihood_tokens

    def timed_scoring(self, requests, disable_tqdm=False, override_bs=None):
        started = time.perf_counter()
        result = scoring(self, requests, disable_tqdm, override_bs)
        calls.append((time.perf_counter() - started, requests))
        TokenBudgetHFLM.last = self
        return result

    TokenBudgetHFLM._loglikelihood_tokens = timed_scoring
    result = evaluate_harness(cfg.model, cfg.tasks, cfg)["hellaswag"]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    score_s = sum(seconds for seconds, _ in calls)
    requests = [r for _, batch in calls for r in batch]
    lm = TokenBudgetHFLM.last
    sequences = [(context + continuation)[-(lm.max_length + 1):][:-1] for _, context, continuation in requests]
    tokens = sum(len(s) for s in sequences)

    started = time.perf_counter()
    with torch.inference_mode():
        for batch in token_batches([len(s) for s in sequences], args.max_batch_tokens, args.batch_size):
            width = len(sequences[batch[0]])
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            lm.model(ids)
    forward_s = time.perf_counter() - started
    record = {
        "model": args.model, "dtype": args.dtype, "task": "hellaswag 10-shot", "docs": args.docs,
        "requests": len(requests), "tokens": tokens, "max_batch_tokens": args.max_batch_tokens,
        "batch_size": args.batch_size, "acc_norm": result["value"], "peak_rss_gib": round(peak_gib, 2),
        "score_tokens_per_s": round(tokens / score_s, 1), "forward_tokens_per_s": round(tokens / forward_s, 1),
        "score_over_forward": round(forward_s / score_s, 3), "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
