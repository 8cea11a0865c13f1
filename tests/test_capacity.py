"""Capacity settings of the GPU configs, built with the real classes: context lengths that fit an A100 40 GB,
GPU engines decided in the config (not by the driver), gradient checkpointing, batching sized for vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdd_ray.config import load_config, validate_config
from sdd_ray.serve.config import ServeConfig

ROOT = Path(__file__).resolve().parents[1]
GPU_RUNS = ["llama3.1-8b-sdd", "llama3.1-8b-sweep", "mistral-7b-sdd"]


@pytest.mark.parametrize("name", GPU_RUNS)
def test_gpu_run_configs_name_their_device_context_and_memory_savers(name):
    from sdd_ray.distill.vllm_backend import processor_config
    from sdd_ray.pipeline.config import load_run_config

    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml", check_model=False)
    assert cfg.distill.vllm.device == "gpu" and cfg.distill.vllm.max_model_len == 4096
    assert cfg.finetune.gradient_checkpointing and cfg.finetune.max_length <= cfg.distill.vllm.max_model_len
    assert cfg.evaluate.batch_size == "auto" and cfg.evaluate.harness.max_model_len == 4096
    # a cluster whose GPU group is scaled to zero still gets GPU engines
    from sdd_ray.distill.config import DistillConfig

    engines = processor_config(DistillConfig(teacher=cfg.model, **cfg.distill.model_dump()), cluster_gpus=0)
    assert engines.placement_group_config is None and engines.engine_kwargs["max_model_len"] == 4096


def test_8b_serve_config_fits_an_a100_40gb_and_batches_continuously():
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    from sdd_ray.serve.vllm_app import GPU_MAX_ONGOING_REQUESTS, llm_config

    cfg = load_config(ServeConfig, ROOT / "configs" / "serve_llama3.1-8b.yaml")
    llm = llm_config(cfg, cluster_gpus=0)  # decided by `device: gpu`, whatever the cluster has now
    assert llm["engine_kwargs"]["max_model_len"] == 8192 and "placement_group_config" not in llm
    assert llm["deployment_config"]["max_ongoing_requests"] == GPU_MAX_ONGOING_REQUESTS
    assert LLMConfig.model_validate(llm).max_request_context_length == 8192
    # KV of one full-length sequence of target + 26-layer draft (8 KV heads x 128 x K,V x bf16 per layer)
    kv_per_token = (32 + 26) * 8 * 128 * 2 * 2
    assert 8192 * kv_per_token < 2 * 2**30 < 131072 * kv_per_token


def test_max_ongoing_requests_as_set_else_sized_for_the_engine():
    from sdd_ray.serve.vllm_app import ongoing_requests

    base = {"target": {"path": "/t"}, "draft": {"path": "/d"}, "engine": "vllm"}
    unset = validate_config(ServeConfig, base)
    assert (ongoing_requests(unset, "gpu"), ongoing_requests(unset, "cpu")) == (256, 8)
    tuned = validate_config(ServeConfig, {**base, "engine_kwargs": {"max_num_seqs": 64}})
    assert ongoing_requests(tuned, "gpu") == 64
    assert ongoing_requests(validate_config(ServeConfig, {**base, "max_ongoing_requests": 16}), "gpu") == 16


def test_batch_size_auto_is_for_lm_eval_only():
    from sdd_ray.config import ConfigError
    from sdd_ray.evaluate.config import EvaluateConfig

    model = {"path": "/m"}
    assert validate_config(EvaluateConfig, {"model": model, "evaluator": "harness", "batch_size": "auto"}).batch_size == "auto"
    with pytest.raises(ConfigError, match="batch_size: auto is for the harness evaluator"):
        validate_config(EvaluateConfig, {"model": model, "batch_size": "auto"})
    with pytest.raises(ConfigError):
        validate_config(EvaluateConfig, {"model": model, "evaluator": "harness", "batch_size": 0})


def test_gradient_checkpointing_gives_the_same_lora_gradients(tmp_path):
    """On: each layer's activations are recomputed in backward (non-reentrant, so LoRA adapters inside a
    frozen base still get gradients); the gradients equal those without it."""
    import torch
    from conftest import make_tiny_llama

    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.loop import _load_model

    path = make_tiny_llama(tmp_path / "m", num_layers=2)
    grads = {}
    for on in (False, True):
        cfg = validate_config(FinetuneConfig, {"model": {"path": str(path)}, "data": {"source": "toy:all"},
                                               "gradient_checkpointing": on, "lora": {"dropout": 0.0}})
        model, _ = _load_model(cfg, torch.float32, None)
        model.train()
        assert model.base_model.model.is_gradient_checkpointing is on
        ids = torch.arange(1, 17).unsqueeze(0)
        model(input_ids=ids, labels=ids).loss.backward()
        grads[on] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads[True] and grads[True].keys() == grads[False].keys()
    assert all(torch.allclose(grads[True][n], grads[False][n], atol=1e-6) for n in grads[True])
    assert any(g.abs().sum() > 0 for g in grads[True].values())
    assert FinetuneConfig.model_fields["gradient_checkpointing"].default is False


def test_gradient_checkpointing_leaves_the_stage_key_alone():
    """A memory setting: turning it on (the 8B configs) must not invalidate finished fine-tuning runs."""
    from sdd_ray.pipeline.config import FinetuneBlock
    from sdd_ray.pipeline.plan import _settings

    off, on = FinetuneBlock(), FinetuneBlock(gradient_checkpointing=True)
    assert on.gradient_checkpointing and _settings(on) == _settings(off)
