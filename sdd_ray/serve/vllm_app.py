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

from sdd_ray.runtime import cluster_gpus
from sdd_ray.serve.config import ServeConfig
from sdd_ray.vllm_engine import cluster_device, draft_model_config, engine_args

REPLICA_NUM_CPUS = 0.1
"""The LLMServer replica actor itself (HTTP glue, detokenization); the engine's bundle is `engine_num_cpus`."""
GPU_MAX_ONGOING_REQUESTS = 256
"""Requests a GPU replica takes at once when `max_ongoing_requests` is not set: vLLM batches every running
sequence into each step (its own default `max_num_seqs` is 256 or more), so the 8 that suit the own
engine's threads would leave most of a GPU idle."""


class VLLMUnavailableError(RuntimeError):
    pass


def speculative_config(cfg: ServeConfig) -> dict:
    """vLLM's `speculative_config`: the pruned draft proposes `k` tokens per step."""
    return draft_model_config(cfg.draft, cfg.k)


def llm_config(cfg: ServeConfig, cluster_gpus: float) -> dict:
    """One `ray.serve.llm.LLMConfig`, as a dict, for a cluster with (or able to scale up to) `cluster_gpus` GPUs.

    The device is the cluster's (`cluster_device`), as distill's: the driver runs on a CPU-only head."""
    device = cluster_device(cfg.device, cluster_gpus, cfg.accelerator_type)
    engine_kwargs = engine_args(
        cfg.target, device=device, max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size, speculative_config=speculative_config(cfg),
        # vLLM's own Prometheus logger keeps its counters in the replica process, where `/metrics` reads them.
        overrides={"disable_log_stats": False, **cfg.engine_kwargs},
    )
    deployment = {"num_replicas": cfg.replicas, "max_ongoing_requests": ongoing_requests(cfg, device)}
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


def ongoing_requests(cfg: ServeConfig, device: str) -> int:
    """`max_ongoing_requests` per replica: as set, else sized for continuous batching on a GPU."""
    if "max_ongoing_requests" in cfg.model_fields_set or device == "cpu":
        return cfg.max_ongoing_requests
    return cfg.engine_kwargs.get("max_num_seqs", GPU_MAX_ONGOING_REQUESTS)


def build_vllm_app(cfg: ServeConfig):
    """The Serve application: ray.serve.llm's LLMServer (vLLM) behind sdd_ray's OpenAI ingress."""
    try:
        from sdd_ray.serve.vllm_deployments import build_app
    except ImportError as error:
        raise VLLMUnavailableError(
            f"--engine vllm needs vLLM on the cluster (`make setup` installs it; `pip install 'sdd_ray[gpu]'` on GPU nodes): {error}"
        ) from None
    llm = llm_config(cfg, cluster_gpus())
    per_replica = llm["deployment_config"]["max_ongoing_requests"]  # the ingress admits what the engines take
    return build_app(cfg.model_copy(update={"max_ongoing_requests": per_replica}), llm)
