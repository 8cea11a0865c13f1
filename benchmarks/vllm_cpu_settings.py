"""Which vLLM settings make draft-model speculative decoding exact on the CPU build (issue #17).

Greedy speculative decoding must reproduce the target's own greedy tokens. This runs vLLM's offline
`LLM` with the pruned draft under each setting in `SETTINGS` (one engine per subprocess, one at a
time), on the same chat prompts, and compares every output with HF transformers' target-only greedy
tokens (float32, the same reference as the serve start-up greedy check). Also records engine start time and
vLLM's acceptance counters. Writes `benchmarks/results/vllm_cpu_settings.json`.

    .venv-vllm/bin/python benchmarks/vllm_cpu_settings.py --target smollm2-135m \
        --draft runs/test-vllm/smollm2-pruned-6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdd_ray.serve.greedy_check import QUESTIONS as CHECK_QUESTIONS

QUESTIONS = CHECK_QUESTIONS[:4]  # the start-up greedy check's first prompts: the results above used these four

# name -> (engine kwargs over the base, environment, use the draft). `compiled-warm` reuses the
# compile cache that `compiled-cold` left, as a second start on the same machine would;
# `compiled-on-target-only-cache` reuses the cache a non-speculative run of the target left (the case
# that gave wrong text in docs' first look).
SETTINGS: dict[str, tuple[dict, dict, bool]] = {
    "eager": ({"enforce_eager": True}, {}, True),
    "eager-no-prefix-cache-no-chunked-prefill": (
        {"enforce_eager": True, "enable_prefix_caching": False, "enable_chunked_prefill": False}, {}, True),
    "compiled-cold": ({}, {"VLLM_CACHE_ROOT": "{cache}"}, True),
    "compiled-warm": ({}, {"VLLM_CACHE_ROOT": "{cache}"}, True),
    "compiled-no-compile-cache": ({}, {"VLLM_DISABLE_COMPILE_CACHE": "1", "VLLM_CACHE_ROOT": "{cache2}"}, True),
    "compiled-target-only": ({}, {"VLLM_CACHE_ROOT": "{cache3}"}, False),
    "compiled-on-target-only-cache": ({}, {"VLLM_CACHE_ROOT": "{cache3}"}, True),
}


def reference(target: str, max_tokens: int) -> tuple[list[list[int]], list[str]]:
    """HF target-only greedy token ids (float32) and the rendered prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdd_ray.prompts import encode_prompt, render_prompt, stop_token_ids
    from sdd_ray.specdec.engine import target_only_generate

    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    stops = stop_token_ids(tokenizer, model.generation_config)
    prompts = [render_prompt(tokenizer, q) for q in QUESTIONS]
    outputs = [target_only_generate(model, encode_prompt(tokenizer, p), max_tokens, eos_token_id=stops)[0]
               for p in prompts]
    return outputs, prompts


def own_engine(target: str, draft: str, prompts: list[str], k: int, max_tokens: int) -> dict:
    """sdd_ray's own speculative decoder on the same prompts: its acceptance, vLLM's definitions."""
    from sdd_ray.models import load_model, load_tokenizer
    from sdd_ray.prompts import encode_prompt, stop_token_ids
    from sdd_ray.specdec.engine import DecodeMetrics, SpeculativeDecoder

    tokenizer = load_tokenizer(target)
    model = load_model(target)
    decoder = SpeculativeDecoder(model, load_model(draft), k, stop_token_ids(tokenizer, model.generation_config))
    total, tokens = DecodeMetrics(requests=0), []
    for prompt in prompts:
        out, metrics = decoder.generate(encode_prompt(tokenizer, prompt), max_tokens)
        total, tokens = total.merge(metrics), tokens + [out]
    return {"metrics": total.as_dict(), "tokens": tokens}


def run_one(args) -> None:
    """Child process: one engine, greedy on the prompts; prints one JSON line."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from sdd_ray.config import ModelSpec
    from sdd_ray.prompts import encode_prompt
    from sdd_ray.vllm_engine import draft_model_config, engine_args

    kwargs, _, use_draft = SETTINGS[args.one]
    spec = draft_model_config(ModelSpec(path=args.draft), args.k) if use_draft else None
    overrides = {"enforce_eager": False, **kwargs}
    engine = engine_args(ModelSpec(path=args.target), device="cpu", max_model_len=1024, seed=0,
                         speculative_config=spec, overrides={**overrides, "disable_log_stats": False})
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    prompts = json.loads(Path(args.prompts).read_text())
    start = time.perf_counter()
    llm = LLM(model=args.target, **engine)
    started = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    start = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": encode_prompt(tokenizer, p)} for p in prompts], params)
    seconds = time.perf_counter() - start
    counters = {m.name: getattr(m, "value", getattr(m, "values", None)) for m in llm.get_metrics()
                if m.name.startswith("vllm:spec_decode")}
    print("RESULT " + json.dumps({"engine_start_s": started, "generate_s": seconds, "engine_kwargs": engine,
                                  "tokens": [list(o.outputs[0].token_ids) for o in outputs], "spec": counters}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/vllm_cpu_settings.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from sdd_ray.models import as_spec

    args.target = as_spec(args.target).path
    if args.one:
        return run_one(args)
    expected, prompts = reference(args.target, args.max_tokens)
    own = own_engine(args.target, args.draft, prompts, args.k, args.max_tokens)
    own["identical"] = [got == want for got, want in zip(own.pop("tokens"), expected)]
    results = {"target": args.target, "draft": args.draft, "k": args.k, "max_tokens": args.max_tokens,
               "questions": QUESTIONS, "own_engine": own, "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        caches = {name: str(Path(tmp) / name) for name in ("cache", "cache2", "cache3")}
        for name in args.settings:
            env = {**os.environ, **{k: v.format(**caches) for k, v in SETTINGS[name][1].items()}}
            command = [sys.executable, __file__, "--target", args.target, "--draft", args.draft, "--k", str(args.k),
                       "--max-tokens", str(args.max_tokens), "--one", name, "--prompts", str(prompts_file)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                results["settings"][name] = {"error": done.stderr[-2000:]}
            else:
                row = json.loads(line.removeprefix("RESULT "))
                row["identical"] = [got == want for got, want in zip(row["tokens"], expected)]
                row["all_identical"] = all(row["identical"])
                results["settings"][name] = row
            print(name, {k: v for k, v in results["settings"][name].items() if k not in ("tokens", "engine_kwargs")},
                  flush=True)
            results["reference_tokens"] = expected
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")  # after each setting: a long run may be cut


if __name__ == "__main__":
    main()
