"""`sdd-ray serve --engine vllm`: the same pair served by `ray.serve.llm` with vLLM's draft-model speculation.

vLLM does what `SpeculativeEngine` does, with paged KV caches and continuous batching: the draft
runs inside the target's engine (`speculative_config` with `method: draft_model`). The engine is
`ray.serve.llm`'s `LLMServer` deployment built from one `LLMConfig`; in front of it sits the
ingress both engines share (`sdd_ray.serve.ingress`), so that both answer bad input and report
acceptance the same way.

The configuration is plain dicts in `ray.serve.llm`'s schema (`LLMConfig`), built here without
importing vLLM so that it can be checked on machines that do not have it; the engine arguments come
from `sdd_ray.vllm_engine.engine_args`, where the CPU-correct defaults live.
"""

from __future__ import annotations

from sdd_ray.serve.config import ServeConfig
from sdd_ray.vllm_engine import draft_model_config, engine_args, resolve_device

REPLICA_NUM_CPUS = 0.1
"""The LLMServer replica actor itself (HTTP glue, detokenization); the engine's bundle is `engine_num_cpus`."""


class VLLMUnavailableError(RuntimeError):
    pass


def speculative_config(cfg: ServeConfig) -> dict:
    """vLLM's `speculative_config`: the pruned draft proposes `k` tokens per step."""
    return draft_model_config(cfg.draft, cfg.k)


def llm_config(cfg: ServeConfig) -> dict:
    """One `ray.serve.llm.LLMConfig`, as a dict."""
    device = resolve_device(cfg.device, cfg.accelerator_type)
    engine_kwargs = engine_args(
        cfg.target, device=device, max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size, speculative_config=speculative_config(cfg),
        # vLLM's own Prometheus logger keeps its counters in the replica process, where `/metrics` reads them.
        overrides={"disable_log_stats": False, **cfg.engine_kwargs},
    )
    deployment = {"num_replicas": cfg.replicas, "max_ongoing_requests": cfg.max_ongoing_requests}
    config = {
        "model_loading_config": {"model_id": cfg.served_name, "model_source": cfg.target.path},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment,
        # True would swap vLLM's in-process Prometheus logger for Ray's exporter, whose counters
        # cannot be read back in the replica; `/metrics` needs them.
        "log_engine_metrics": False,
    }
    if cfg.accelerator_type:
        config["accelerator_type"] = cfg.accelerator_type
    if device == "cpu":
        # Without bundles ray.serve.llm asks for a GPU per engine worker and a CPU-only cluster never
        # schedules it; fractional CPUs so that the app fits a 2-CPU machine beside other Ray work.
        config["placement_group_config"] = {"bundles": [{"CPU": cfg.engine_num_cpus}] * cfg.tensor_parallel_size}
        deployment["ray_actor_options"] = {"num_cpus": REPLICA_NUM_CPUS}
    return config


def build_vllm_app(cfg: ServeConfig):
    """The Serve application: ray.serve.llm's LLMServer (vLLM) behind sdd_ray's OpenAI ingress."""
    try:
        from sdd_ray.serve.vllm_deployments import build_app
    except ImportError as error:
        raise VLLMUnavailableError(
            f"--engine vllm needs vLLM on the cluster (`make setup` installs it; `pip install 'sdd_ray[gpu]'` on GPU nodes): {error}"
        ) from None
    return build_app(cfg, llm_config(cfg))
