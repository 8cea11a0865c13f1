"""Fine-tuning: data encoding, batch plan, LoRA export, and real 2-worker Ray Train runs (DeepSpeed ZeRO, DDP)."""

from __future__ import annotations

import json

import pytest
import torch

from sdd_ray.config import ConfigError, ModelSpec, UserError, validate_config
from sdd_ray.finetune.config import FinetuneConfig, LoraSpec
from sdd_ray.finetune.data import (
    IGNORE_INDEX,
    DataError,
    encode_row,
    epoch_plan,
    tokenize_rows,
    worker_slice,
)
from sdd_ray.finetune.engines import cosine_schedule

STEPS = 6


def _config(model, tmp_path, **overrides) -> FinetuneConfig:
    settings = dict(model=ModelSpec(path=str(model)), data={"source": "toy:arith", "limit": 64}, num_workers=2, batch_size=4,
                    max_steps=STEPS, lr=3e-3, warmup_ratio=0.0, checkpoint_every=3, method="full",
                    storage_path=str(tmp_path / "ckpt"))
    settings.update(overrides)
    return FinetuneConfig(**settings)


# ---- pure parts -------------------------------------------------------------------------------------


def test_encode_row_masks_the_prompt_and_ends_with_eos(tiny_llama):
    from sdd_ray.models import load_tokenizer
    from sdd_ray.prompts import render_prompt

    tok = load_tokenizer(str(tiny_llama))
    ids, labels, status = encode_row(tok, "Add 2 and 3.", "", "5", max_length=200, overlong="truncate")
    prompt = tok(render_prompt(tok, "Add 2 and 3.", "")).input_ids
    answer = tok("5", add_special_tokens=False).input_ids
    assert status == "ok"
    assert ids == prompt + answer + [tok.eos_token_id]
    assert labels == [IGNORE_INDEX] * len(prompt) + answer + [tok.eos_token_id]


def test_overlong_rows_are_truncated_or_rejected_and_counted(tiny_llama):
    from sdd_ray.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    long = " ".join(["cat"] * 50)
    rows = [{"id": "a", "instruction": "Say cat.", "response": "cat"},
            {"id": "b", "instruction": "Say cat.", "response": long},
            {"id": "c", "instruction": long, "response": "cat"},
            {"id": "d", "instruction": "Say cat.", "response": "  "}]
    examples, stats = tokenize_rows(rows, tok, "response", max_length=30, overlong="truncate")
    assert (stats.used, stats.truncated, stats.rejected) == (2, 1, 2)
    assert stats.reasons == {"prompt alone fills max_length": 1, "empty response": 1}
    assert max(len(ids) for ids, _ in examples) == 30
    _, stats = tokenize_rows(rows, tok, "response", max_length=30, overlong="reject")
    assert (stats.used, stats.truncated, stats.rejected) == (1, 0, 3)


def test_row_order_gives_two_arms_the_same_batches_whatever_their_lengths():
    sft_lengths, sdd_lengths = [10 + 7 * (i % 5) for i in range(64)], [40 - 3 * (i % 7) for i in range(64)]
    by_row = [epoch_plan(lengths, global_batch=8, seed=1, epoch=0, window=1) for lengths in (sft_lengths, sdd_lengths)]
    assert [sorted(b) for b in by_row[0]] == [sorted(b) for b in by_row[1]]
    by_length = [epoch_plan(lengths, global_batch=8, seed=1, epoch=0) for lengths in (sft_lengths, sdd_lengths)]
    assert [sorted(b) for b in by_length[0]] != [sorted(b) for b in by_length[1]]


def test_epoch_plan_is_seeded_and_covers_every_full_batch():
    lengths = [i % 7 for i in range(50)]
    plan = epoch_plan(lengths, global_batch=8, seed=3, epoch=0)
    assert plan == epoch_plan(lengths, global_batch=8, seed=3, epoch=0)
    assert plan != epoch_plan(lengths, global_batch=8, seed=3, epoch=1)
    assert [len(b) for b in plan] == [8] * 6  # 50 rows -> 6 full batches, 2 left out
    assert len({i for b in plan for i in b}) == 48
    assert worker_slice(plan[0], 1, 2) == plan[0][4:]


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    factor = cosine_schedule(total_steps=10, warmup_steps=2, min_ratio=0.1)
    assert [factor(0), factor(1), factor(2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(10) == pytest.approx(0.1)


def test_config_rejects_impossible_combinations(tiny_llama):
    base = {"model": {"path": str(tiny_llama)}, "data": "toy:arith"}
    with pytest.raises(ConfigError, match="offload_params needs strategy deepspeed with zero_stage 3"):
        validate_config(FinetuneConfig, {**base, "offload_params": True, "zero_stage": 2})
    with pytest.raises(ConfigError, match="zero_stage"):
        validate_config(FinetuneConfig, {**base, "zero_stage": 1})
    with pytest.raises(ConfigError, match="response_column"):
        validate_config(FinetuneConfig, {**base, "response_column": "answer"})
    with pytest.raises(ConfigError, match="model.dtype float16 cannot be trained here"):
        validate_config(FinetuneConfig, {**base, "model": {"path": str(tiny_llama), "dtype": "float16"}})
    with pytest.raises(ConfigError, match="precision fp32 contradicts model.dtype bfloat16"):
        validate_config(FinetuneConfig, {**base, "model": {"path": str(tiny_llama), "dtype": "bfloat16"},
                                         "precision": "fp32"})


def test_one_resume_record_covers_out_and_a_run_dir_outside_it(tiny_llama, tmp_path):
    """Checkpoints inside --out: its record alone; elsewhere: the same record in the run directory, compared
    the same way, so new checkpoints of another run's settings are refused there too."""
    from sdd_ray.finetune.preflight import claim_finetune_out
    from sdd_ray.guards import InputError
    from sdd_ray.io import STAGE_MARKER

    default = _config(tiny_llama, tmp_path, storage_path=None)
    claim_finetune_out(default, tmp_path / "inside", overwrite=False)
    assert [p.name for p in (tmp_path / "inside").iterdir()] == [STAGE_MARKER]

    cfg = _config(tiny_llama, tmp_path)
    out, run_dir = tmp_path / "out", tmp_path / "ckpt" / cfg.run_name
    claim_finetune_out(cfg, out, overwrite=False)
    assert (run_dir / STAGE_MARKER).read_text() == (out / STAGE_MARKER).read_text()
    (run_dir / "checkpoint_1").mkdir()
    claim_finetune_out(cfg.model_copy(update={"max_steps": 12, "epochs": 3}), out, overwrite=False)  # may go further
    other = cfg.model_copy(update={"response_column": "original_response", "lr": 1.0})
    with pytest.raises(InputError, match=rf"^storage_path/run_name {run_dir}: .*\(lr: 0.003 -> 1.0; response_column: "
                                         r"null -> \"original_response\"\); give storage_path/run_name a new folder"):
        claim_finetune_out(other, tmp_path / "out2", overwrite=False)  # a new --out, the same checkpoints
    assert (run_dir / "checkpoint_1").is_dir()
    claim_finetune_out(other, tmp_path / "out2", overwrite=True)
    assert [p.name for p in run_dir.iterdir()] == [STAGE_MARKER]


def test_lora_merged_export_gives_the_adapter_models_logits(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from sdd_ray.finetune.export import apply_lora, export_model
    from sdd_ray.models import load_model

    torch.manual_seed(0)
    lora = LoraSpec(rank=4, alpha=8, dropout=0.0)
    wrapped = apply_lora(load_model(str(tiny_llama)), lora)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; make the adapters matter
                param.normal_(0, 0.2)
    ids = torch.randint(5, 500, (2, 12))
    with torch.no_grad():
        expected = wrapped(input_ids=ids).logits
    export_model(wrapped.state_dict(), ModelSpec(path=str(tiny_llama)), tmp_path / "merged", lora=lora,
                 adapter_out=tmp_path / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        got, plain = merged(input_ids=ids).logits, base(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert (plain - expected).abs().max() > 1e-2  # the adapters did change the outputs
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not any(k.startswith("base_model") for k in merged.state_dict())


# ---- data errors through Ray Data ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_empty_and_column_less_data_fail_before_training(ray_local, tiny_llama, tmp_path):
    from sdd_ray.finetune.trainer import load_checked_dataset

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_checked_dataset(_config(tiny_llama, tmp_path, data=str(empty)))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("\n".join(json.dumps({"question": "q", "answer": "a"}) for _ in range(4)))
    with pytest.raises(DataError, match=r"no valid rows \(4 rejected; first: missing field 'instruction'"):
        load_checked_dataset(_config(tiny_llama, tmp_path, data=str(wrong)))
    (tmp_path / "nodata").mkdir()
    with pytest.raises(UserError, match=r"no data/\*.parquet"):
        load_checked_dataset(_config(tiny_llama, tmp_path, data=str(tmp_path / "nodata")))


# ---- real Ray Train runs (2 workers, CPU, gloo) -------------------------------------------------------


@pytest.fixture(scope="module")
def deepspeed_run(ray_local, tiny_llama, tmp_path_factory):
    """ZeRO-2 full fine-tuning that fails after step 4 and restarts from the step-3 checkpoint."""
    from sdd_ray.finetune.run import run_finetune

    tmp = tmp_path_factory.mktemp("ds")
    cfg = _config(tiny_llama, tmp, strategy="deepspeed", zero_stage=2, fail_at_step=4, max_failures=1)
    return run_finetune(cfg, tmp / "out"), tmp / "out"


@pytest.fixture(scope="module")
def ddp_run(ray_local, tiny_llama, tmp_path_factory):
    from sdd_ray.finetune.run import run_finetune

    tmp = tmp_path_factory.mktemp("ddp")
    return run_finetune(_config(tiny_llama, tmp, strategy="ddp"), tmp / "out"), tmp / "out"


@pytest.mark.timeout(900)
def test_deepspeed_zero2_lowers_the_loss_and_resumes_after_a_failure(deepspeed_run):
    metrics, out = deepspeed_run
    losses = [s["loss"] for s in metrics["steps"]]
    assert [s["step"] for s in metrics["steps"]] == list(range(1, STEPS + 1))  # curve continues over the restart
    assert metrics["resumed_from_step"] == 3
    assert losses[-1] < losses[0] - 0.3
    assert len(metrics["peak_memory_mib"]) == 2 and min(metrics["peak_memory_mib"]) > 0
    assert metrics["data"] == {"rows": 64, "used": 64, "truncated": 0, "rejected": 0}
    assert metrics["tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert json.loads((out / "train_metrics.json").read_text())["final_loss"] == losses[-1]
    assert (out / "loss.png").stat().st_size > 0


@pytest.mark.timeout(900)
def test_ddp_follows_the_same_curve_as_resumed_deepspeed(ddp_run, deepspeed_run):
    """Same data order, init and AdamW: DDP and the interrupted ZeRO-2 run give the same losses."""
    ddp = [s["loss"] for s in ddp_run[0]["steps"]]
    ds = [s["loss"] for s in deepspeed_run[0]["steps"]]
    assert ddp[-1] < ddp[0] - 0.3
    assert ddp == pytest.approx(ds, abs=2e-3)


@pytest.mark.timeout(900)
def test_exported_model_reloads_with_transformers_alone(ddp_run, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = ddp_run[1]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    tuned = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("### Instruction:\nTom has 3 coins.", return_tensors="pt").input_ids
    with torch.no_grad():
        tuned_loss = tuned(input_ids=ids, labels=ids).loss
        base_loss = base(input_ids=ids, labels=ids).loss
    assert tuned_loss < base_loss  # the fine-tuned weights, not the base ones, were exported


@pytest.mark.timeout(900)
def test_zero3_lora_runs_and_exports_a_merged_model(ray_local, tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from sdd_ray.finetune.run import run_finetune

    cfg = _config(tiny_llama, tmp_path, strategy="deepspeed", zero_stage=3, method="lora", lr=1e-2, max_steps=2,
                  checkpoint_every=0, save_adapter=True)
    metrics = run_finetune(cfg, tmp_path / "out")
    assert len(metrics["steps"]) == 2
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    diff = max((a - b).abs().max().item() for a, b in zip(merged.parameters(), base.parameters()))
    assert diff > 0  # adapters were trained and folded in
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
