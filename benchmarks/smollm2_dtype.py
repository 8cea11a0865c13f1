"""SmolLM2-135M-Instruct on this CPU in bfloat16 vs float32: greedy generation, log-likelihood scoring,
one LoRA training step, each next to the plain forward pass (the ceiling greedy decoding approaches).

The real model (`smollm2-135m`, converted from its GGUF), GSM8K questions as chat prompts:
- forward: one pass over 16 sequences of 256 tokens (tokens/s: the machine's ceiling for this model);
- generate: `generate_texts` (what distillation and evaluation use), 32 prompts x 64 new tokens, batch 32;
- score: `continuation_logprobs` (what the built-in evaluator uses), 64 question/answer pairs, batch 16;
- lora step: forward + backward + AdamW on 8 x 256 tokens, LoRA r 16 on every projection (adapters
  fp32 on a bf16 base, as fine-tuning runs it).
The two dtypes alternate measurement by measurement, so load on a shared machine hits both alike.
Writes benchmarks/results/smollm2_dtype.json.

    .venv/bin/python benchmarks/smollm2_dtype.py [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from lora_step_dtype import step  # the same training step as the random-weights benchmark

RESULTS = Path(__file__).parent / "results" / "smollm2_dtype.json"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def gsm8k_rows(n: int) -> list[dict]:
    from sdd_ray.data import DataSpec, iter_records

    return [json.loads(line) for line in iter_records(DataSpec(source="openai/gsm8k:main", split="train", limit=n))]


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(dtype: torch.dtype, rows: list[dict]) -> dict:
    from sdd_ray.config import ModelSpec
    from sdd_ray.finetune.config import LoraSpec
    from sdd_ray.finetune.export import apply_lora
    from sdd_ray.generation import continuation_logprobs, generate_texts
    from sdd_ray.models import load_model_and_tokenizer
    from sdd_ray.prompts import render_prompt

    model, tokenizer = load_model_and_tokenizer(ModelSpec(path="smollm2-135m", dtype=str(dtype).removeprefix("torch.")))
    ids = torch.randint(100, 40000, (16, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids[:2, :32])  # warm-up
        forward_s, _ = timed(lambda: model(input_ids=ids))
    prompts = [render_prompt(tokenizer, row["question"]) for row in rows[:32]]
    generate_s, generations = timed(lambda: generate_texts(model, tokenizer, prompts, max_new_tokens=64, batch_size=32))
    new_tokens = sum(g.new_tokens for g in generations)
    contexts = [render_prompt(tokenizer, row["question"]) for row in rows[:64]]
    continuations = [row["answer"] for row in rows[:64]]
    scored_tokens = sum(len(tokenizer(c + a).input_ids) for c, a in zip(contexts, continuations))
    score_s, _ = timed(lambda: continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=16))

    lora = apply_lora(model, LoraSpec(rank=16, alpha=32, dropout=0.0))
    lora.train()
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    batch = ids[:8]

    step(lora, optimizer, batch)  # warm-up
    step_s, _ = timed(lambda: step(lora, optimizer, batch))
    return {
        "forward_tokens_per_s": round(ids.numel() / forward_s, 1),
        "generate_tokens_per_s": round(new_tokens / generate_s, 1),
        "score_tokens_per_s": round(scored_tokens / score_s, 1),
        "lora_step_tokens_per_s": round(batch.numel() / step_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = gsm8k_rows(64)
    runs: dict[str, list[dict]] = {name: [] for name in DTYPES}
    for _ in range(args.repeats):
        for name, dtype in DTYPES.items():
            runs[name].append(measure(dtype, rows))
    best = {name: {key: max(run[key] for run in measured) for key in measured[0]} for name, measured in runs.items()}
    for name in best:  # generation and scoring against the ceiling of the same dtype
        best[name]["generate_vs_forward"] = round(best[name]["generate_tokens_per_s"] / best[name]["forward_tokens_per_s"], 3)
        best[name]["score_vs_forward"] = round(best[name]["score_tokens_per_s"] / best[name]["forward_tokens_per_s"], 3)
    results = {
        "config": {"model": "smollm2-135m (GGUF Q4_1 de-quantized)", "threads": args.threads, "repeats": args.repeats,
                   "torch": torch.__version__, "load_avg_1m_at_end": os.getloadavg()[0]},
        "best": best,
        "bf16_over_fp32": {key: round(best["bfloat16"][key] / best["float32"][key], 2)
                           for key in best["bfloat16"] if key.endswith("_per_s")},
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({key: results[key] for key in ("best", "bf16_over_fp32")}, indent=2))


if __name__ == "__main__":
    main()
