"""Greedy decoding on CPU, transformers vs vLLM's CPU build, each next to the model's forward pass (the ceiling).

For each teacher, the same prompts (its distill workload: the toy teacher rewrites 64 toy rows, SmolLM2
64 GSM8K questions, both through the distill templates) and the same prompt token ids go to:
- forward: one no-grad forward pass over the prompts, batch 32, left-padded (tokens/s counts real
  tokens): the rate at which this machine pushes tokens through the model, which decoding approaches
  only when every step carries as many tokens as a prompt;
- hf: `generate_texts` (the `hf` distill backend), batch 32;
- vllm: `vllm.LLM.generate` on the CPU build (`enforce_eager`: no compile step; a small
  `gpu_memory_utilization`, which the CPU backend reads as a share of *host* memory), all prompts at once.
Both engines decode greedily to the same `max_new_tokens`, stopping at the end token, so they make the
same tokens (checked: `same_tokens`). Engine start (model load, vLLM's engine processes) is timed apart.
Writes benchmarks/results/engine_ceiling.json. Needs vLLM (`make setup` installs it).

    .venv/bin/python benchmarks/engine_ceiling.py [--rows 64] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import torch
from distill_throughput import prompts_for  # the distill prompts: templates filled with each row

RESULTS = Path(__file__).parent / "results" / "engine_ceiling.json"
TEACHERS = {"toy-teacher": ("float32", "toy:all"), "smollm2-135m": ("bfloat16", "openai/gsm8k:main")}
BATCH = 32


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@torch.no_grad()
def forward_rate(model, tokenizer, prompts: list[str]) -> float:
    """Real (unpadded) prompt tokens per second through one forward pass per batch."""
    from sdd_ray.generation import left_padded_batch

    batches = [left_padded_batch(tokenizer, prompts[i : i + BATCH], model.device) for i in range(0, len(prompts), BATCH)]
    model(**{k: v[:2, -16:] for k, v in batches[0].items()})  # warm-up
    seconds, _ = timed(lambda: [model(**batch) for batch in batches])
    return sum(int(b["attention_mask"].sum()) for b in batches) / seconds


def hf_side(spec, prompts: list[str], max_new_tokens: int) -> tuple[dict, list[list[int]]]:
    from sdd_ray.distill.rewrite import as_chat
    from sdd_ray.generation import generate_texts
    from sdd_ray.models import load_model_and_tokenizer
    from sdd_ray.prompts import encode_prompt

    load_s, (model, tokenizer) = timed(lambda: load_model_and_tokenizer(spec))
    prompts = [as_chat(tokenizer, p) for p in prompts]  # as the distill backends prompt a chat model
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    forward = forward_rate(model, tokenizer, prompts)
    seconds, generations = timed(lambda: generate_texts(model, tokenizer, prompts, max_new_tokens, BATCH))
    tokens = sum(g.new_tokens for g in generations)
    return ({"load_s": round(load_s, 1), "forward_tokens_per_s": round(forward, 1), "generated_tokens": tokens,
             "generate_s": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
             "prompt_tokens": sum(map(len, ids))}, ids)


def vllm_side(spec, ids: list[list[int]], max_new_tokens: int) -> tuple[dict, list[list[int]]]:
    from vllm import LLM, SamplingParams

    start_s, llm = timed(lambda: LLM(model=spec.path, dtype=spec.dtype, enforce_eager=True, gpu_memory_utilization=0.08,
                                     max_model_len=max(map(len, ids)) + max_new_tokens, seed=0))
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    seconds, outputs = timed(lambda: llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False))
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    generated = sum(map(len, tokens))
    return ({"engine_start_s": round(start_s, 1), "generated_tokens": generated, "generate_s": round(seconds, 1),
             "tokens_per_s": round(generated / seconds, 1)}, tokens)


def hf_tokens(spec, ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy tokens for the first prompts, one at a time (no padding), to compare with vLLM's."""
    from sdd_ray.models import load_model_and_tokenizer
    from sdd_ray.prompts import stop_token_ids

    model, tokenizer = load_model_and_tokenizer(spec)
    stops = stop_token_ids(tokenizer, model.generation_config)
    rows = []
    for prompt in ids:
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
        rows.append(out[0, len(prompt) :].tolist())
    return rows


def measure(name: str, rows: int, max_new_tokens: int) -> dict:
    from sdd_ray.config import ModelSpec
    from sdd_ray.models import TOY_TEACHER

    dtype, source = TEACHERS[name]
    spec = ModelSpec(path=str(TOY_TEACHER) if name == "toy-teacher" else name, dtype=dtype)  # smollm2: its GGUF
    prompts = prompts_for(source, rows)
    hf, ids = hf_side(spec, prompts, max_new_tokens)
    gc.collect()  # the hf model goes before the engine starts
    vllm, vllm_tokens = vllm_side(spec, ids, max_new_tokens)
    gc.collect()
    check = 4
    same = [a == b[: len(a)] or b == a[: len(b)] for a, b in zip(hf_tokens(spec, ids[:check], max_new_tokens), vllm_tokens)]
    ceiling = hf.pop("forward_tokens_per_s")
    return {"model": name, "dtype": dtype, "prompts": len(prompts), "source": source, "max_new_tokens": max_new_tokens,
            "forward_tokens_per_s": ceiling, "hf": hf, "vllm": vllm,
            "hf_vs_forward": round(hf["tokens_per_s"] / ceiling, 3),
            "vllm_vs_forward": round(vllm["tokens_per_s"] / ceiling, 3),
            "vllm_vs_hf": round(vllm["tokens_per_s"] / hf["tokens_per_s"], 2),
            "same_tokens": f"{sum(same)}/{check} (first prompts, hf unbatched vs vllm; a prefix counts)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the hf side")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import vllm

    torch.set_num_threads(args.threads)
    load = [round(os.getloadavg()[0], 2)]
    results = []
    for name in TEACHERS:
        results.append(measure(name, args.rows, args.max_new_tokens))
        load.append(round(os.getloadavg()[0], 2))
        write(args, vllm.__version__, load, results)  # after each model: a later failure keeps the earlier ones
    print(args.out.read_text())


def write(args, vllm_version: str, load: list[float], results: list[dict]) -> None:
    result = {
        "command": f"python benchmarks/engine_ceiling.py --rows {args.rows} --max-new-tokens {args.max_new_tokens} "
                   f"--threads {args.threads}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "vllm": vllm_version, "load_average_1min": load},
        "batch_size_hf": BATCH,
        "results": results,
        "notes": "forward = prompt tokens/s of one forward pass (the ceiling); *_vs_forward = greedy tokens/s over it. "
                 "The machine was shared: load_average_1min is sampled at the start and after each model.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
