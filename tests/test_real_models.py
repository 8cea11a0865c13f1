"""Real-model plumbing: GGUF conversion, the prompt-and-token layer, and every stage on a GQA model
carrying SmolLM2's real tokenizer and chat template (byte-level BPE, ChatML, pad = EOS)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pyarrow as pa
import pytest
import torch

from sdd_ray.config import ModelSpec
from sdd_ray.prompts import IncrementalDetokenizer, encode_prompt, prompt_token_ids, render_prompt, stop_token_ids

MULTIBYTE = "ありがとう (arigatou) 👍🏽 café — naïve 中文 ok"


# ---- GGUF conversion: bad input ------------------------------------------------------------------


def _write_gguf(path, architecture: str, with_tokenizer: bool):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    if with_tokenizer:
        writer.add_tokenizer_model("gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SDD_RAY_CACHE", str(root))
    return root


def _cache_is_clean(root) -> bool:
    models = root / "models"
    return not models.exists() or not any(models.iterdir())


def test_unsupported_architecture_is_named_and_nothing_is_cached(tmp_path, cache):
    from sdd_ray.convert import ConversionError, convert_gguf

    path = _write_gguf(tmp_path / "bert.gguf", "bert", with_tokenizer=True)
    with pytest.raises(ConversionError, match=r"bert\.gguf: GGUF architecture 'bert' is not supported"):
        convert_gguf(path)
    assert _cache_is_clean(cache)


def test_truncated_gguf_is_named_and_nothing_is_cached(tmp_path, cache):
    from sdd_ray.convert import ConversionError, convert_gguf

    path = _write_gguf(tmp_path / "cut.gguf", "llama", with_tokenizer=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ConversionError, match=r"cut\.gguf: truncated"):
        convert_gguf(path)
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(ConversionError, match=r"not\.gguf: not a GGUF file"):
        convert_gguf(tmp_path / "not.gguf")
    assert _cache_is_clean(cache)


def test_gguf_without_tokenizer_is_named_and_nothing_is_cached(tmp_path, cache):
    from sdd_ray.convert import ConversionError, convert_gguf

    path = _write_gguf(tmp_path / "notok.gguf", "llama", with_tokenizer=False)
    with pytest.raises(ConversionError, match=r"notok\.gguf: no usable tokenizer"):
        convert_gguf(path)
    assert _cache_is_clean(cache)


def test_gguf_path_resolves_to_a_cache_directory_without_converting(tmp_path, cache):
    path = _write_gguf(tmp_path / "m.gguf", "llama", with_tokenizer=True)
    spec = ModelSpec(path=str(path))
    assert spec.gguf == str(path.resolve())
    assert spec.path.startswith(str(cache / "models")) and "bfloat16" in spec.path
    assert ModelSpec(**spec.model_dump()) == spec  # a dumped spec validates to itself
    assert _cache_is_clean(cache)
    with pytest.raises(ValueError, match="no such GGUF file"):
        ModelSpec(path=str(tmp_path / "missing.gguf"))


# ---- the prompt-and-token layer ------------------------------------------------------------------


def test_template_that_writes_bos_tokenizes_with_exactly_one_bos(tiny_llama):
    """A Llama-3-style template starts with the BOS text; a tokenizer that adds BOS must not add another."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert tokenizer("a").input_ids[0] == tokenizer.bos_token_id  # this tokenizer adds BOS to plain text
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n"
                               "{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}")
    text = render_prompt(tokenizer, "say cat")
    assert text.startswith(tokenizer.bos_token)
    naive = tokenizer(text).input_ids
    assert naive[:2] == [tokenizer.bos_token_id] * 2  # what the old code did
    ids = encode_prompt(tokenizer, text)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert prompt_token_ids(tokenizer, "say cat") == ids


def test_plain_prompts_keep_the_tokenizers_bos(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ids = prompt_token_ids(tokenizer, "say cat")
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_stop_ids_are_the_generation_configs_list_and_the_tokenizers_eos(gqa_llama):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(gqa_llama)
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[128001, 128008, 128009])) == [
        128001, 128008, 128009, tokenizer.eos_token_id]
    assert stop_token_ids(tokenizer, None) == [tokenizer.eos_token_id]


def test_generation_stops_on_any_configured_end_id(gqa_llama):
    """The second id of a generation config's eos list ends generation, not only the tokenizer's EOS."""
    from sdd_ray.generation import generate_texts
    from sdd_ray.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(gqa_llama)
    prompt = render_prompt(tokenizer, "Say something")
    free = generate_texts(model, tokenizer, [prompt], max_new_tokens=6)[0]
    assert free.truncated and free.new_tokens == 6
    first = model.generate(torch.tensor([encode_prompt(tokenizer, prompt)]), max_new_tokens=1, do_sample=False)[0, -1].item()
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first]
    stopped = generate_texts(model, tokenizer, [prompt], max_new_tokens=6)[0]
    assert not stopped.truncated and stopped.new_tokens == 1 and stopped.text == ""


def test_incremental_detokenizer_never_splits_a_character(gqa_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gqa_llama)
    ids = tokenizer(MULTIBYTE, add_special_tokens=False).input_ids
    split = [i for i in range(1, len(ids)) if "\ufffd" in tokenizer.decode(ids[:i])]
    assert split, "the text must contain characters spread over several tokens"
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push([token]) for token in ids] + [detokenizer.finish()]
    assert "".join(pieces).encode() == tokenizer.decode(ids).encode() == MULTIBYTE.encode()
    assert not any("\ufffd" in piece for piece in pieces)


# ---- every stage on the GQA model with the real tokenizer ----------------------------------------


@pytest.fixture(scope="module")
def gqa_pruned(gqa_llama, tmp_path_factory):
    """The GQA model with its most redundant 2-layer block removed (in-process calibration)."""
    from sdd_ray.prune.config import PruneConfig
    from sdd_ray.prune.run import run_prune

    root = tmp_path_factory.mktemp("gqa_prune")
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": f"Question {i}: what is {i} plus {i}? {MULTIBYTE}"}) + "\n" for i in range(16)))
    cfg = PruneConfig(model=ModelSpec(path=str(gqa_llama)), block_size=2, calib=str(calib), num_samples=16,
                      batch_size=8, num_workers=0)
    report = run_prune(cfg, root / "pruned")
    return root / "pruned", report


def test_prune_keeps_gqa_shapes_and_the_chat_template(gqa_pruned, gqa_llama):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out, report = gqa_pruned
    assert report["num_layers_before"] == 6 and report["num_layers_after"] == 4
    config = AutoConfig.from_pretrained(out)
    assert (config.num_attention_heads, config.num_key_value_heads, config.num_hidden_layers) == (9, 3, 4)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(gqa_llama).chat_template
    ids = torch.tensor([prompt_token_ids(tokenizer, "hello")])
    cached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_distill_rewriter_prompts_with_the_chat_template_and_one_bos(gqa_llama):
    from sdd_ray.distill.generator import HFRewriter
    from sdd_ray.distill.schema import PREPARED

    rewriter = HFRewriter({"path": str(gqa_llama)}, max_new_tokens=4, batch_size=4)
    base = {name: "" for name in PREPARED.names} | {"skip": False, "kind": "general", "task": "t"}
    out = rewriter(pa.Table.from_pylist([base | {"id": "a", "prompt": "Rewrite: the cat sat."}], schema=PREPARED)).to_pylist()
    prompt = out[0]["prompt"]
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert out[0]["prompt_tokens"] == len(encode_prompt(rewriter.tokenizer, prompt))
    assert encode_prompt(rewriter.tokenizer, prompt).count(rewriter.tokenizer.bos_token_id) == prompt.count("<|im_start|>")


def test_merge_evaluate_and_specdec_on_the_gqa_pair(gqa_pruned, gqa_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.evaluate.run import evaluate_model
    from sdd_ray.merge.config import MergeConfig
    from sdd_ray.merge.run import run_merge
    from sdd_ray.specdec.config import SpecDecConfig
    from sdd_ray.specdec.run import measure

    pruned, _ = gqa_pruned
    other = tmp_path / "other"
    shutil.copytree(pruned, other)
    model = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(other)
    run_merge(MergeConfig(models=[ModelSpec(path=str(pruned)), ModelSpec(path=str(other))], t=0.5), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.config.num_key_value_heads == 3 and merged.config.num_hidden_layers == 4

    results = evaluate_model(EvaluateConfig(model=ModelSpec(path=str(tmp_path / "merged")), limit=4, batch_size=4))
    assert {"arith", "facts", "instruct"} <= set(results["tasks"])

    cfg = SpecDecConfig(target=ModelSpec(path=str(gqa_llama)), drafts={"pruned": ModelSpec(path=str(pruned))},
                        data="toy:arith", limit=2, max_new_tokens=12, warmup=0)
    report = measure(cfg, [("What is 2 plus 3?", ""), (MULTIBYTE, "")])
    assert report["drafts"][0]["outputs_identical"] is True


def test_serve_engine_streams_what_it_answers_with_the_chat_template(gqa_pruned, gqa_llama):
    """The deployment's logic in-process: chat template, single BOS, stop ids, streamed text == answer."""
    from sdd_ray.serve.app import HFClient, SpeculativeEngine
    from sdd_ray.serve.config import ServeConfig
    from sdd_ray.serve.ingress import Front

    pruned, _ = gqa_pruned
    cfg = ServeConfig(target=ModelSpec(path=str(gqa_llama)), draft=ModelSpec(path=str(pruned)), k=3, model_name="m")
    engine = SpeculativeEngine.func_or_class(cfg.model_dump(mode="json"))
    request = {"model": "m", "messages": [{"role": "user", "content": MULTIBYTE}], "max_tokens": 24,
               "temperature": 1.5, "seed": 7}
    job = Front(cfg, client=None).job(json.dumps(request).encode(), chat=True)
    assert job.prompt_ids[:3] == encode_prompt(engine.tokenizer, "<|im_start|>system\n")  # the template's, no extra BOS
    payload = HFClient.payload(job)

    async def streamed():
        return [event["text"] async for event in engine.stream(payload)]

    answer = asyncio.run(engine.generate(payload))
    assert "".join(asyncio.run(streamed())).encode() == answer["text"].encode()


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("strategy", "zero_stage", "method"), [("deepspeed", 3, "lora"), ("ddp", 2, "full")])
def test_finetune_gqa_with_the_real_tokenizer(ray_local, gqa_llama, tmp_path, strategy, zero_stage, method):
    """ZeRO-3 + LoRA and full DDP fine-tuning of the GQA chat model; the export keeps GQA and the template."""
    from transformers import AutoConfig, AutoTokenizer

    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.run import run_finetune

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i} in words {MULTIBYTE}", "response": f"{i} {MULTIBYTE}"}) + "\n"
                            for i in range(16)))
    cfg = FinetuneConfig(model=ModelSpec(path=str(gqa_llama)), data=str(data), num_workers=1, batch_size=4, max_steps=2,
                         lr=1e-3, warmup_ratio=0.0, checkpoint_every=0, strategy=strategy, zero_stage=zero_stage,
                         method=method, storage_path=str(tmp_path / "ckpt"), max_length=128)
    metrics = run_finetune(cfg, tmp_path / "out")
    assert len(metrics["steps"]) == 2 and all(step["loss"] == step["loss"] for step in metrics["steps"])
    config = AutoConfig.from_pretrained(tmp_path / "out")
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == AutoTokenizer.from_pretrained(gqa_llama).chat_template
