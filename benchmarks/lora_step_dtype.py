"""One LoRA training step in bfloat16 vs float32 on the CPU: tokens/s and resident weight memory.

A random Llama shaped like SmolLM2-135M (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 KV
heads, head_dim 64, vocab 49152, tied embeddings), LoRA r=16 on every projection (`apply_lora`, as
fine-tuning uses it: in the bf16 run the frozen base is bf16 and the adapters fp32), AdamW over
the adapters, one step = forward + backward + optimizer step on 8 sequences of 256 tokens. Each
dtype gets one warm-up step, then `--steps` timed steps; the two dtypes alternate, so load on a
shared machine hits both alike, and each step's CPU time (all threads of this process) is recorded
beside its wall time: tokens per CPU-second stays comparable when other jobs take the cores, and
the fastest step of each dtype is the one least disturbed by them.
Writes benchmarks/results/lora_step_dtype.json.

    .venv/bin/python benchmarks/lora_step_dtype.py [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "lora_step_dtype.json"
BATCH, SEQ = 8, 256


def smollm2_shaped(dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(dtype)


def lora_trainer(dtype: torch.dtype):
    """(model, optimizer) for one dtype."""
    from sdd_ray.finetune.config import LoraSpec
    from sdd_ray.finetune.export import apply_lora

    model = apply_lora(smollm2_shaped(dtype), LoraSpec(rank=16, alpha=32, dropout=0.0))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def step(model, optimizer, ids: torch.Tensor) -> float:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def weight_mib(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = torch.randint(0, 49152, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    runs = {name: lora_trainer(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    seconds = {name: [] for name in runs}
    cpu_seconds = {name: [] for name in runs}
    losses = {name: [] for name in runs}
    for name, (model, optimizer) in runs.items():
        losses[name].append(step(model, optimizer, ids))  # warm-up
    for _ in range(args.steps):
        for name, (model, optimizer) in runs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            losses[name].append(step(model, optimizer, ids))
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
    results = {
        "config": {"model": "random Llama shaped like SmolLM2-135M", "lora_rank": 16, "batch": BATCH, "seq": SEQ,
                   "timed_steps": args.steps, "threads": args.threads, "torch": torch.__version__,
                   "cpu": platform.processor() or platform.machine(), "load_avg_1m_at_end": os.getloadavg()[0]},
        **{name: {"tokens_per_s": round(BATCH * SEQ * len(s) / sum(s), 1), "step_s": [round(x, 2) for x in s],
                  "best_step_tokens_per_s": round(BATCH * SEQ / min(s), 1),
                  "tokens_per_cpu_s": round(BATCH * SEQ * len(s) / sum(cpu_seconds[name]), 1),
                  "step_cpu_s": [round(x, 2) for x in cpu_seconds[name]],
                  "weights_mib": round(weight_mib(runs[name][0]), 1), "losses": [round(x, 4) for x in losses[name]]}
           for name, s in seconds.items()},
    }
    results["bf16_speedup"] = round(results["bfloat16"]["tokens_per_s"] / results["float32"]["tokens_per_s"], 2)
    results["bf16_speedup_per_cpu_s"] = round(results["bfloat16"]["tokens_per_cpu_s"]
                                              / results["float32"]["tokens_per_cpu_s"], 2)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
