"""Training in the model's dtype, in one process (no Ray): bf16 LoRA and full steps, ZeRO-3 loading
partitioned, and exports saved in the spec's dtype."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sdd_ray.config import ModelSpec
from sdd_ray.finetune.config import FinetuneConfig, LoraSpec


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group: what DDP and DeepSpeed need, without Ray Train's workers."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, world_size=1, is_master=True)  # binds a free port and keeps it
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key)
        else:
            os.environ[key] = value


def _cfg(model, **overrides) -> FinetuneConfig:
    settings = dict(model=ModelSpec(path=str(model), dtype="bfloat16"), data="toy:arith", num_workers=1,
                    batch_size=2, max_steps=1, lr=1e-2, warmup_ratio=0.0, lora=LoraSpec(rank=4, alpha=8, dropout=0.0))
    settings.update(overrides)
    return FinetuneConfig(**settings)


def _train_one_step(cfg: FinetuneConfig):
    """(engine, loss) after one optimizer step on a fixed random batch, built as `train_func` builds it."""
    from sdd_ray.finetune.engines import build_engine, deepspeed_config
    from sdd_ray.finetune.loop import _load_model, uses_bf16, weights_dtype

    device = torch.device("cpu")
    dtype = weights_dtype(cfg, device)
    bf16 = uses_bf16(cfg, dtype)
    model, _ = _load_model(cfg, dtype, deepspeed_config(cfg, 1, bf16))
    engine = build_engine(model, cfg, total_steps=1, device=device, bf16=bf16)
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (2, 16))
    loss = engine.loss(ids, torch.ones_like(ids), ids)
    engine.backward(loss, boundary=True)
    return engine, loss


def _export_and_reload(engine, cfg: FinetuneConfig, out):
    from transformers import AutoModelForCausalLM

    from sdd_ray.finetune.export import export_model

    export_model(engine.export_state_dict(), cfg.model, out, lora=cfg.lora if cfg.method == "lora" else None,
                 dtype="bfloat16")
    return AutoModelForCausalLM.from_pretrained(out, dtype="auto")


def _max_change(model, base_path) -> float:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(model.parameters(), base.parameters()))


@pytest.mark.timeout(180)
def test_bf16_lora_step_keeps_adapters_fp32_and_exports_bf16(process_group, tiny_llama, tmp_path):
    cfg = _cfg(tiny_llama, strategy="ddp", method="lora")
    engine, loss = _train_one_step(cfg)
    dtypes = {name: p.dtype for name, p in engine.module.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # trainable adapters: fp32
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}  # frozen base: bf16
    assert torch.isfinite(loss)
    reloaded = _export_and_reload(engine, cfg, tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config.get("torch_dtype", "bfloat16") == "bfloat16"
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert not any("lora_" in name for name in reloaded.state_dict())
    assert _max_change(reloaded, tiny_llama) > 0  # the trained adapters were folded in


@pytest.mark.timeout(180)
def test_bf16_full_fine_tuning_step_with_deepspeed(process_group, tiny_llama, tmp_path):
    cfg = _cfg(tiny_llama, strategy="deepspeed", zero_stage=2, method="full")
    engine, loss = _train_one_step(cfg)
    assert torch.isfinite(loss)
    assert {p.dtype for p in engine.engine.module.parameters()} == {torch.bfloat16}
    reloaded = _export_and_reload(engine, cfg, tmp_path / "full")
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert _max_change(reloaded, tiny_llama) > 0


@pytest.mark.timeout(180)
def test_zero3_loads_partitioned_and_never_moves_the_model(process_group, tiny_llama, tmp_path, monkeypatch):
    from sdd_ray.finetune.engines import deepspeed_config
    from sdd_ray.finetune.loop import _load_model

    cfg = _cfg(tiny_llama, strategy="deepspeed", zero_stage=3, method="lora")
    moves = []
    real_to = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        moves.append((type(module).__name__, args, kwargs))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    model, _ = _load_model(cfg, torch.bfloat16, deepspeed_config(cfg, 1, True))
    monkeypatch.setattr(torch.nn.Module, "to", real_to)
    assert not [m for m in moves if m[0].endswith("ForCausalLM")], moves  # the model was never moved whole
    base = [(name, p) for name, p in model.named_parameters() if "lora_" not in name]
    assert base and all(hasattr(p, "ds_id") and p.numel() == 0 for _, p in base)  # partitioned by zero.Init
    assert all(p.ds_tensor.dtype == torch.bfloat16 for _, p in base)

    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    assert not is_deepspeed_zero3_enabled()  # later loads build plain models again
    engine, loss = _train_one_step(cfg)
    assert torch.isfinite(loss)
    reloaded = _export_and_reload(engine, cfg, tmp_path / "zero3")
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert _max_change(reloaded, tiny_llama) > 0
