"""The `vllm` backend run for real: ray.data.llm with a CPU build of vLLM (part of `make test`).

Runs only where `vllm` imports (`make setup` installs it); elsewhere it is skipped. The job runs
as `python jobs/distill.py` in a subprocess because vLLM starts its engine in spawned processes,
which re-import the main module (hence the `__main__` guard of the job script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1500)
def test_vllm_backend_matches_hf_greedy(tmp_path, toy_teacher, vllm_engine):
    config = tmp_path / "distill.yaml"
    config.write_text(json.dumps({
        "backend": "vllm", "max_new_tokens": 32, "batch_size": 6,
        "vllm": {"device": "cpu", "cpus_per_engine": 1, "max_model_len": 512, "gpu_memory_utilization": 0.08,
                 "engine_kwargs": {"dtype": "float32", "enforce_eager": True}},
    }))
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "jobs/distill.py", "--teacher", str(toy_teacher), "--data", "toy:all", "--limit", "6",
         "--out", str(out), "--config", str(config), "--no-progress"],
        cwd=ROOT, check=True, timeout=1400,
    )
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_in"], stats["rows_out"], stats["backend"]) == (6, 6, "vllm")
    rows = sorted(pq.read_table(out / "data").to_pylist(), key=lambda r: r["id"])
    assert all(r["teacher_response"] for r in rows)

    # Greedy decoding of the same prompts with transformers gives the same rewrites.
    from sdd_ray.distill.config import DEFAULT_TEMPLATES
    from sdd_ray.distill.rewrite import load_templates, prompt_for
    from sdd_ray.generation import generate_texts
    from sdd_ray.models import load_model_and_tokenizer
    from sdd_ray.toy.sources import toy_records

    templates = load_templates(DEFAULT_TEMPLATES)
    source = {r["id"]: r for r in toy_records("toy:all", limit=6)}
    model, tokenizer = load_model_and_tokenizer(str(toy_teacher))
    prompts = [prompt_for(source[r["id"]], source[r["id"]]["kind"], templates) for r in rows]
    expected = [g.text for g in generate_texts(model, tokenizer, prompts, max_new_tokens=32)]
    # (whitespace normalised: vLLM's incremental detokenizer spaces the word-level toy vocabulary differently)
    assert [" ".join(r["teacher_response"].split()) for r in rows] == [" ".join(text.split()) for text in expected]


def bos_adding_copy(model: Path, out: Path) -> Path:
    """`model` with a tokenizer that prepends its BOS to any text, under the chat template that writes it first:
    the shape of Llama-3.1 (`<|begin_of_text|>`), on which text tokenized with special tokens gets two."""
    out.mkdir()
    for item in model.iterdir():
        if item.name != "tokenizer.json":
            (out / item.name).symlink_to(item.resolve())
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    bos = json.loads((model / "tokenizer_config.json").read_text())["bos_token"]
    bos_id = tokenizer["model"]["vocab"].get(bos) or next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == bos)
    first = {"SpecialToken": {"id": bos, "type_id": 0}}
    tokenizer["post_processor"] = {
        "type": "TemplateProcessing", "single": [first, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [first, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    return out


@pytest.mark.timeout(1500)
def test_vllm_and_hf_backends_give_the_teacher_the_same_prompt_tokens(tmp_path):
    """One BOS on both paths: ray.data.llm's own tokenize stage would add a second one to the templated text.
    SmolLM2 (`SDD_RAY_SMOLLM2`, `make test-vllm` makes it): vLLM's CPU attention needs its head size of 64."""
    from transformers import AutoTokenizer

    from sdd_ray.prompts import encode_prompt

    dolly = ROOT.parent / "shared" / "data" / "finetune" / "dolly_partial" / "train.jsonl"
    smollm2 = Path(os.environ.get("SDD_RAY_SMOLLM2", "/nonexistent"))
    if not dolly.is_file() or not (smollm2 / "config.json").is_file():
        pytest.skip(f"needs {dolly} (the shared data) and SDD_RAY_SMOLLM2 (a SmolLM2 checkpoint: `make test-vllm`)")
    teacher = bos_adding_copy(smollm2, tmp_path / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    templated = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert tokenizer(templated).input_ids[:2] == [tokenizer.bos_token_id] * 2  # the trap is set
    assert encode_prompt(tokenizer, templated)[:2] != [tokenizer.bos_token_id] * 2

    config = tmp_path / "distill.yaml"
    config.write_text(json.dumps({
        "max_new_tokens": 4, "batch_size": 4, "data": {"source": str(dolly), "columns": "dolly"},
        "vllm": {"device": "cpu", "cpus_per_engine": 1, "max_model_len": 1024,  # KV cache: vllm_engine's CPU default
                 "engine_kwargs": {"dtype": "float32"}},
    }))
    tokens = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        subprocess.run(
            [sys.executable, "jobs/distill.py", "--teacher", str(teacher), "--limit", "4", "--backend", backend,
             "--out", str(out), "--config", str(config), "--no-progress"],
            cwd=ROOT, check=True, timeout=700,
        )
        stats = json.loads((out / "stats.json").read_text())
        assert (stats["backend"], stats["rows_in"], stats["rows_out"]) == (backend, 4, 4)
        tokens[backend] = stats["prompt_tokens"]
    assert tokens["vllm"] == tokens["hf"] > 4 * 20
