"""Self-data distillation: config, row functions, the hf generator, the vLLM config, shards, and an
interrupted-then-resumed 2-worker Ray Data run with malformed rows mixed in."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sdd_ray.config import ConfigError, validate_config
from sdd_ray.data import PRESETS, parse_batch
from sdd_ray.distill.config import DistillConfig
from sdd_ray.distill.dataflow import bypass, prepare_batch, select_batch, to_generate
from sdd_ray.distill.rewrite import load_templates, row_kind
from sdd_ray.distill.schema import EMPTY_GENERATED, PREPARED, PROCESSED
from sdd_ray.distill.shards import ShardWriter
from sdd_ray.toy.sources import toy_records


def make_cfg(teacher="toy-teacher", **overrides) -> DistillConfig:
    settings = {"teacher": {"path": str(teacher)}, "data": {"source": "toy:all"}, **overrides}
    return validate_config(DistillConfig, settings, source="test")


def test_config_defaults_and_errors():
    cfg = make_cfg(templates={"math": "/x/my_math.txt"})
    assert cfg.templates == {"general": "general", "math": "/x/my_math.txt", "mc": "mc"}
    assert cfg.cpus_per_worker == 0.5 and cfg.backend == "auto" and cfg.vllm.device == "auto"
    with pytest.raises(ConfigError, match="test: templates: unknown kind"):
        make_cfg(templates={"poem": "general"})
    with pytest.raises(ConfigError, match="test: num_workers: Input should be greater than or equal to 1"):
        make_cfg(num_workers=0)
    with pytest.raises(ConfigError, match="test: backend: Input should be 'auto', 'hf' or 'vllm'"):
        make_cfg(backend="tgi")


def test_auto_backend_is_vllm_where_it_imports_except_for_word_level_tokenizers(monkeypatch, tmp_path, toy_teacher):
    import importlib.util

    from sdd_ray.distill.config import resolve_backend, resolve_engine_device

    real_find_spec = importlib.util.find_spec
    for installed, teacher, expected in [(True, tmp_path, "vllm"), (False, tmp_path, "hf"), (True, toy_teacher, "hf")]:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: (object() if installed else None) if name == "vllm" else real_find_spec(name, *a))
        assert resolve_backend(make_cfg(teacher)).backend == expected, (installed, teacher)
        assert resolve_backend(make_cfg(teacher, backend="vllm")).backend == "vllm"

    cpu, gpu = resolve_engine_device(make_cfg().vllm, 0), resolve_engine_device(make_cfg().vllm, 8)
    assert (cpu.device, cpu.gpu_memory_utilization, gpu.device, gpu.gpu_memory_utilization) == ("cpu", 0.1, "gpu", 0.9)
    pinned = resolve_engine_device(make_cfg(vllm={"device": "gpu", "gpu_memory_utilization": 0.5}).vllm, 0)
    assert (pinned.device, pinned.gpu_memory_utilization) == ("gpu", 0.5)


def test_templates_from_files_must_have_placeholders(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("Rewrite {instruction}\nRef: {reference}\nAnswer:")
    assert load_templates({"general": str(good)})["general"].startswith("Rewrite")
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholders")
    with pytest.raises(ValueError, match="lacks the {instruction} placeholder"):
        load_templates({"general": str(bad)})
    assert row_kind({"kind": "mc"}, "auto") == "mc"
    assert row_kind({"kind": ""}, "auto") == "general"
    assert row_kind({"kind": "mc"}, "math") == "math"


def test_prepare_route_and_select_rows():
    lines = [json.dumps(r) for r in toy_records("toy:all", limit=3)] + ["{broken", json.dumps({"instruction": "x"})]
    done = frozenset({json.loads(lines[1])["id"]})
    prepared = prepare_batch(parse_batch(pa.table({"text": lines}), PRESETS["toy"], "default", ""), "auto",
                             load_templates({"general": "general", "math": "math", "mc": "mc"}), done)
    rows = prepared.to_pylist()
    assert prepared.schema == PREPARED
    assert [r["kind"] for r in rows[:3]] == ["math", "mc", "general"]
    assert rows[0]["prompt"].startswith("Below is a math problem") and rows[0]["response"] in rows[0]["prompt"]
    assert rows[1]["skip"] and rows[1]["prompt"] == ""
    assert rows[3]["reject_reason"].startswith("not valid JSON")
    assert rows[4]["reject_reason"] == "missing field 'response' (column 'response')"
    assert [r["id"] for r in to_generate(prepared).to_pylist()] == [rows[0]["id"], rows[2]["id"]]
    assert [r["id"] for r in bypass(prepared).to_pylist()] == [rows[1]["id"], rows[3]["id"], rows[4]["id"]]

    generated = [{**rows[0], **EMPTY_GENERATED, "teacher_response": "So 44.\n#### 44"},
                 {**rows[2], **EMPTY_GENERATED, "teacher_response": "words", "generation_error": "RuntimeError: x"},
                 {**rows[0], **EMPTY_GENERATED, "teacher_response": "#### 44", "truncated": True}]
    table = pa.Table.from_pylist([{**r, "selected_response": "", "source": "", "selection_reason": ""} for r in generated],
                                 schema=PROCESSED)
    selected = select_batch(table).to_pylist()
    assert rows[0]["response"].endswith("#### 44")
    assert [(r["source"], r["selection_reason"], r["reject_reason"]) for r in selected] == [
        ("teacher", "", ""), ("", "", "teacher_failed"), ("original", "truncated", "")]
    assert selected[0]["selected_response"] == "So 44.\n#### 44"
    assert selected[1]["selected_response"] == ""  # a failed row is quarantined, never passed off as kept


def test_hf_rewriter_rejects_long_prompts_and_isolates_errors(tiny_llama, monkeypatch):
    from sdd_ray.distill.generator import HFRewriter

    rewriter = HFRewriter({"path": str(tiny_llama)}, max_new_tokens=4, batch_size=4)
    base = {name: "" for name in PREPARED.names} | {"skip": False, "kind": "general", "task": "t"}
    rows = [base | {"id": "a", "prompt": "### Instruction:\nsay cat\n\n### Response:\n"},
            base | {"id": "b", "prompt": "cat " * 300},  # 300 words + BOS > 256 positions
            base | {"id": "c", "prompt": "### Instruction:\nsay dog\n\n### Response:\n"}]
    out = rewriter(pa.Table.from_pylist(rows, schema=PREPARED)).to_pylist()
    assert out[1]["reject_reason"].startswith("prompt too long: 301 tokens + max_new_tokens 4 > context 256")
    assert [r["generated_tokens"] for r in out] == [4, 0, 4] and out[0]["truncated"]  # random weights never stop
    assert out[0]["prompt_tokens"] == 13  # BOS ### Instruction : \n say cat \n \n ### Response : \n

    real_generate = rewriter.generate

    def failing(prompts):
        if any("dog" in p for p in prompts):
            raise RuntimeError("boom")
        return real_generate(prompts)

    monkeypatch.setattr(rewriter, "generate", failing)
    out = rewriter(pa.Table.from_pylist([rows[0], rows[2]], schema=PREPARED)).to_pylist()
    assert [r["generation_error"] for r in out] == ["", "RuntimeError: boom"]
    assert out[0]["generated_tokens"] == 4 and out[1]["teacher_response"] == ""


def test_vllm_processor_config(tmp_path):
    from sdd_ray.distill.vllm_backend import generated_columns, processor_config, request

    cfg = validate_config(DistillConfig, dict(
        teacher={"path": str(tmp_path), "dtype": "bfloat16"}, data={"source": "toy:all"},
        backend="vllm", num_workers=3, batch_size=32, max_new_tokens=50,
        vllm={"tensor_parallel_size": 2, "max_model_len": 2048,
              "engine_kwargs": {"enable_prefix_caching": True}}))
    config = processor_config(cfg, cluster_gpus=8)
    assert type(config).__module__ == "ray.data.llm"
    assert (config.model_source, config.concurrency, config.batch_size) == (str(tmp_path), 3, 32)
    assert config.engine_kwargs == {"tensor_parallel_size": 2, "pipeline_parallel_size": 1, "trust_remote_code": False,
                                    "gpu_memory_utilization": 0.9, "dtype": "bfloat16", "max_model_len": 2048,
                                    "enable_prefix_caching": True, "task_type": "generate"}
    assert config.should_continue_on_error and config.placement_group_config is None
    # sdd_ray renders and tokenizes (`PromptEncoder`): ray.data.llm's stages would add a second BOS
    assert config.chat_template_stage["enabled"] is False and config.tokenize_stage["enabled"] is False
    assert config.detokenize_stage == {"enabled": True, "num_cpus": 0.25}

    # `device: auto` on a cluster without GPUs: CPU bundles, and a tenth of host memory rather than 90%
    cpu = processor_config(cfg.model_copy(update={"vllm": cfg.vllm.model_copy(update={"cpus_per_engine": 2.0})}), cluster_gpus=0)
    assert [b["CPU"] for b in cpu.placement_group_config["bundles"]] == [2.0, 2.0]
    assert cpu.engine_kwargs["gpu_memory_utilization"] == 0.1

    assert request({"prompt": "P", "id": "a", "tokenized_prompt": [1, 2]}, 50) == {
        "prompt": "P", "id": "a", "tokenized_prompt": [1, 2], "sampling_params": {"temperature": 0.0, "max_tokens": 50}}
    base = {name: "" for name in PREPARED.names} | {"skip": False, "__inference_error__": ""}
    outputs = pa.Table.from_pylist([
        base | {"generated_text": " So 4. ", "num_input_tokens": 9, "num_generated_tokens": 3},
        base | {"generated_text": "x" * 5, "num_input_tokens": 9, "num_generated_tokens": 50},
        base | {"generated_text": "", "num_input_tokens": 0, "num_generated_tokens": 0, "__inference_error__": "bad"},
    ])
    rows = generated_columns(outputs, 50).to_pylist()
    assert [(r["teacher_response"], r["truncated"], r["prompt_tokens"], r["generation_error"]) for r in rows] == [
        ("So 4.", False, 9, ""), ("xxxxx", True, 9, ""), ("", False, 0, "bad")]


def test_vllm_prompts_are_the_hf_backend_s_token_ids(gqa_llama, toy_teacher):
    """`PromptEncoder` hands vLLM the ids the hf backend generates from: chat-templated without a second BOS,
    plain text (the toy teacher) with the tokenizer's own special tokens."""
    from sdd_ray.distill.rewrite import as_chat
    from sdd_ray.distill.vllm_backend import PromptEncoder
    from sdd_ray.models import load_tokenizer
    from sdd_ray.prompts import encode_prompt

    for model in (gqa_llama, toy_teacher):
        tokenizer = load_tokenizer(str(model))
        batch = pa.table({"id": ["a", "b"], "prompt": ["Add 2 and 3.", "Name a colour."]})
        out = PromptEncoder({"path": str(model)})(batch).to_pylist()
        assert [r["prompt"] for r in out] == [as_chat(tokenizer, p) for p in batch.column("prompt").to_pylist()]
        assert [r["tokenized_prompt"] for r in out] == [encode_prompt(tokenizer, r["prompt"]) for r in out]
        assert out[0]["tokenized_prompt"][:2] != [tokenizer.bos_token_id] * 2
        assert (out[0]["prompt"] != "Add 2 and 3.") == bool(tokenizer.chat_template)  # the template was applied


def test_vllm_error_rows_become_teacher_failures_or_too_long_prompts():
    """ray.data.llm's error rows (`__inference_error__` set, no `generated_text`: they skip detokenize)."""
    from sdd_ray.distill.vllm_backend import generated_columns

    base = {name: "" for name in PREPARED.names} | {"skip": False, "kind": "general", "response": "r"}
    outputs = pa.Table.from_pylist([
        base | {"id": "ok", "generated_text": "fine", "num_input_tokens": 4, "num_generated_tokens": 1,
                "__inference_error__": ""},
        base | {"id": "dead", "num_input_tokens": 0, "__inference_error__": "RuntimeError: engine step failed"},
        base | {"id": "long", "num_input_tokens": 0, "__inference_error__":
                "ValueError: The decoder prompt (length 9000) is longer than the maximum model length of 4096."},
    ])
    generated = generated_columns(outputs, 50)
    selected = select_batch(pa.Table.from_pylist(
        [r | {"selected_response": "", "source": "", "selection_reason": ""} for r in generated.to_pylist()],
        schema=PROCESSED)).to_pylist()
    assert [(r["id"], r["reject_reason"][:24], r["source"]) for r in selected] == [
        ("ok", "", "teacher"), ("dead", "teacher_failed", ""), ("long", "prompt too long: ValueEr", "")]
    assert selected[1]["generation_error"] == "RuntimeError: engine step failed" and not selected[2]["generation_error"]


def _distill_in_process(teacher, out, failing_ids: set[str], **overrides) -> dict:
    """The pipeline's row path without Ray Data: prepare -> HFRewriter (failing on `failing_ids`) -> select -> shards."""
    from sdd_ray.distill.dataflow import finish
    from sdd_ray.distill.generator import HFRewriter

    cfg = make_cfg(teacher, max_new_tokens=3, batch_size=4, progress=False, **overrides)
    records = [json.dumps(r) for r in toy_records("toy:all", limit=10)]
    prepared = prepare_batch(parse_batch(pa.table({"text": records}), PRESETS["toy"], "default", ""), "auto",
                             load_templates(cfg.templates), frozenset())
    rewriter = HFRewriter({"path": str(teacher)}, max_new_tokens=3, batch_size=4)
    ids_of = {row["prompt"]: row["id"] for row in prepared.to_pylist()}
    real_generate = rewriter.generate

    def failing(prompts):
        if any(ids_of.get(p) in failing_ids for p in prompts):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_generate(prompts)

    rewriter.generate = failing
    writer = ShardWriter(out, shard_rows=4)
    for row in select_batch(rewriter(to_generate(prepared))).to_pylist():
        writer.add(row)
        if writer.full:
            writer.flush()
    writer.flush()
    return finish(cfg, writer, wall=1.0, first_output=None, complete=True)


def test_teacher_failures_are_counted_quarantined_and_bounded(tiny_llama, tmp_path):
    from sdd_ray.distill.failures import TeacherFailureError

    ids = [r["id"] for r in toy_records("toy:all", limit=10)]
    stats = _distill_in_process(tiny_llama, tmp_path / "ok", {ids[2]}, max_teacher_failure_rate=0.1)
    assert stats["teacher_failed"] == 1 and stats["error"] is None
    assert stats["teacher_failures"] == {
        "rows_to_teacher": 10, "rate": 0.1, "max_rate": 0.1, "reasons": {"RuntimeError": 1},
        "examples": [{"id": ids[2], "error": "RuntimeError: CUDA error: an illegal memory access was encountered"}]}
    assert (stats["rows_in"], stats["rows_out"], stats["rows_rejected"]) == (10, 9, 1)  # in = out + rejected
    assert stats["teacher_selected"] + stats["original_selected"] == 9  # the failed row is not "original kept"
    rejected = [json.loads(line) for line in (tmp_path / "ok" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [(ids[2], "teacher_failed")]
    assert ids[2] not in pq.read_table(tmp_path / "ok" / "data").column("id").to_pylist()

    with pytest.raises(TeacherFailureError) as failure:  # 2 of 10 > the default 2%
        _distill_in_process(tiny_llama, tmp_path / "bad", {ids[0], ids[5]})
    message = str(failure.value)
    assert "\n" not in message and message.startswith("distill: the teacher failed on 2 of 10 rows (20.0% > "
                                                      "max_teacher_failure_rate 2.0%; RuntimeError x2)")
    stats = json.loads((tmp_path / "bad" / "stats.json").read_text())  # written before failing
    assert stats["teacher_failed"] == 2 and stats["error"] == message


def test_shard_writer_recovers_from_a_kill_between_renames(tmp_path):
    writer = ShardWriter(tmp_path, shard_rows=2)
    row = {name: "" for name in PROCESSED.names} | {"skip": False, "truncated": False, "prompt_tokens": 3,
                                                    "generated_tokens": 5, "source": "teacher", "task": "t"}
    for row_id in ("a", "b", "c"):
        writer.add(row | {"id": row_id})
        if writer.full:
            writer.flush()
    writer.add(row | {"id": "bad", "reject_reason": "empty", "raw": "{}"})
    writer.flush()
    (tmp_path / "data" / "part-00002.parquet.tmp").write_text("half a shard")
    (tmp_path / "shards" / "part-00002.json").write_text(json.dumps({"rejected": [{"id": "lost"}]}))

    resumed = ShardWriter(tmp_path, shard_rows=2)
    assert dict(resumed.accounted) == {"a": 1, "b": 1, "c": 1, "bad": 1}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert not (tmp_path / "shards" / "part-00002.json").exists() and resumed.next_index == 2
    totals = resumed.totals()["totals"]
    assert (totals["rows_out"], totals["rows_rejected"], totals["generated_tokens"]) == (3, 1, 15)
    assert totals["by_task"] == {"t": {"rows": 3, "teacher": 3, "original": 0, "teacher_fraction": 1.0}}


def write_mixed_jsonl(path, n_valid: int):
    """Toy fine-tuning rows with malformed rows and one repeated row mixed in."""
    valid = toy_records("toy:all", limit=n_valid)
    malformed = ["{not json", json.dumps([1, 2]), json.dumps({"instruction": "", "response": "x"}),
                 json.dumps({"instruction": "Add 2 and 2.", "response": 4}), json.dumps({"response": "no prompt"})]
    lines = [json.dumps(r) for r in valid]
    for i, bad in enumerate(malformed):
        lines.insert(3 + 5 * i, bad)
    lines.append(json.dumps(valid[0]))
    path.write_text("\n".join(lines) + "\n")
    return {r["id"] for r in valid}


@pytest.mark.timeout(480)
def test_interrupted_two_worker_run_resumes_exactly_once(tiny_llama, tmp_path, ray_local):
    from sdd_ray.cli import app
    from sdd_ray.distill.run import run_distill

    source = tmp_path / "toy_mixed.jsonl"
    ids = write_mixed_jsonl(source, 30)
    out = tmp_path / "out"
    cfg = make_cfg(tiny_llama, data={"source": str(source)}, num_workers=2, batch_size=4, max_new_tokens=6,
                   shard_rows=8, max_shards=1, progress=False)
    first = run_distill(cfg, out)
    assert not first["complete"] and first["this_run"]["shards"] == 1
    committed = pq.read_table(out / "data").column("id").to_pylist()
    assert 1 <= len(committed) <= 8
    # A run killed while writing: a half-written shard and a manifest whose shard never landed.
    (out / "data" / "part-00007.parquet.tmp").write_bytes(b"PAR1 partial")
    (out / "shards" / "part-00007.json").write_text(json.dumps({"rejected": [{"id": "phantom"}]}))

    result = CliRunner().invoke(app, [
        "distill", "--teacher", str(tiny_llama), "--data", str(source), "--out", str(out), "--num-workers", "2",
        "--batch-size", "4", "--max-new-tokens", "6", "--no-progress"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    table = pq.read_table(out / "data")
    assert sorted(table.column("id").to_pylist()) == sorted(ids)  # every valid id exactly once
    assert table.schema.names[:9] == ["id", "task", "kind", "instruction", "input", "original_response",
                                      "teacher_response", "response", "source"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted([
        "not valid JSON (Expecting property name enclosed in double quotes)", "expected a JSON object, got list",
        "instruction (column 'instruction') is empty", "response (column 'response'): expected a string, got int",
        "missing field 'instruction' (column 'instruction')", f"duplicate id {sorted(ids & {r['id'] for r in rejected}).pop()!r}"])
    assert (stats["rows_in"], stats["rows_out"], stats["rows_rejected"]) == (36, 30, 6)
    assert stats["rows_in"] == stats["rows_out"] + stats["rows_rejected"] and stats["complete"]
    assert stats["this_run"]["resumed"] == len(committed) + first["rows_rejected"]
    assert stats["teacher_selected"] + stats["original_selected"] == 30
    assert stats["generated_tokens"] > 0 and stats["num_workers"] == 2 and stats["backend"] == "hf"
    assert not list(out.rglob("*.tmp")) and not (out / "shards" / "part-00007.json").exists()
