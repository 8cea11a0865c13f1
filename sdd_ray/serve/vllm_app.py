"""`sdd-ray serve --engine vllm`: the same pair served by `ray.serve.llm` with vLLM's draft-model speculation.

On a GPU cluster vLLM does what `SpeculativeEngine` does, with paged KV caches and continuous
batching: the draft runs inside the target's engine (`speculative_config` with `method:
draft_model`), and `build_openai_app` gives the OpenAI routes (`/v1/completions`,
`/v1/chat/completions`, `/v1/models`). vLLM's speculative counters (drafts, accepted tokens, per
position) are exported as Prometheus metrics (`log_engine_metrics`) instead of in `usage`.

The configuration is plain dicts in `ray.serve.llm`'s schema (`LLMConfig`, `LLMServingArgs`), built
without importing vLLM, so that it can be checked on machines that do not have it.
"""

from __future__ import annotations

from sdd_ray.serve.config import ServeConfig


class VLLMUnavailableError(RuntimeError):
    pass


def speculative_config(cfg: ServeConfig) -> dict:
    """vLLM's `speculative_config`: the pruned draft proposes `k` tokens per step."""
    spec = {"method": "draft_model", "model": cfg.draft.path, "num_speculative_tokens": cfg.k}
    if cfg.draft.revision:
        spec["revision"] = cfg.draft.revision
    return spec


def llm_config(cfg: ServeConfig) -> dict:
    """One `ray.serve.llm.LLMConfig`, as a dict."""
    engine_kwargs = {
        "speculative_config": speculative_config(cfg),
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "dtype": cfg.target.dtype,
        "trust_remote_code": cfg.target.trust_remote_code,
    }
    if cfg.target.revision:
        engine_kwargs["revision"] = cfg.target.revision
    if cfg.max_model_len:
        engine_kwargs["max_model_len"] = cfg.max_model_len
    config = {
        "model_loading_config": {"model_id": cfg.served_name, "model_source": cfg.target.path},
        "engine_kwargs": engine_kwargs,
        "deployment_config": {"num_replicas": cfg.replicas, "max_ongoing_requests": cfg.max_ongoing_requests},
        "log_engine_metrics": True,
    }
    if cfg.accelerator_type:
        config["accelerator_type"] = cfg.accelerator_type
    return config


def serving_args(cfg: ServeConfig) -> dict:
    """`ray.serve.llm.LLMServingArgs`, as the dict `build_openai_app` takes."""
    return {"llm_configs": [llm_config(cfg)]}


def build_vllm_app(cfg: ServeConfig):
    """The Serve application from `ray.serve.llm.build_openai_app` (needs vLLM installed)."""
    args = serving_args(cfg)
    try:
        from ray.serve.llm import build_openai_app
    except ImportError as error:
        raise VLLMUnavailableError(
            f"--engine vllm needs vLLM on the cluster (`make setup` installs it; `pip install 'sdd_ray[gpu]'` on GPU nodes): {error}"
        ) from None
    return build_openai_app(args)
