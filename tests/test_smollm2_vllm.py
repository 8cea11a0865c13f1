"""A pruned SmolLM2 checkpoint loads in vLLM's CPU build and generates HF's greedy tokens (`make test-vllm`).

`make test-vllm` prunes SmolLM2 (6 of 30 layers) with the main environment first and passes the
checkpoint in `SDD_RAY_PRUNED_SMOLLM2`; this test runs in `.venv-vllm`, where vLLM imports.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
pytest.importorskip("vllm", reason="vLLM is not installed here; run `make test-vllm`")

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Natalia sold 48 clips. How many are left?"]


def test_pruned_smollm2_in_vllm_gives_hf_greedy_tokens():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    path = os.environ.get("SDD_RAY_PRUNED_SMOLLM2")
    if not path or not (Path(path) / "config.json").is_file():
        pytest.skip("set SDD_RAY_PRUNED_SMOLLM2 to a pruned SmolLM2 checkpoint (make test-vllm does)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    expected = []
    for ids in prompt_ids:
        out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=[], pad_token_id=0)
        expected.append(out[0, len(ids):].tolist())

    # On the CPU backend gpu_memory_utilization is the share of host RAM reserved for the KV cache.
    llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=512, seed=0, gpu_memory_utilization=0.1)
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected
