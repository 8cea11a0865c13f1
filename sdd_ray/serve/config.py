"""Configuration of the Ray Serve application (`sdd-ray serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sdd_ray.config import ModelSpec, StrictModel


class ServeConfig(StrictModel):
    """A target/draft pair behind an OpenAI-compatible HTTP API."""

    target: ModelSpec
    draft: ModelSpec
    model_name: str | None = None
    """The `model` clients ask for (default: the target directory's name)."""
    engine: Literal["hf", "vllm"] = "hf"
    """`hf`: sdd_ray's speculative decoder (CPU or GPU, transformers); `vllm`: `ray.serve.llm` with
    vLLM's draft-model speculative decoding (vLLM's CUDA build on GPUs, its CPU build elsewhere)."""
    k: int = Field(4, ge=1, le=32)
    """Tokens the draft proposes per step."""
    host: str = "127.0.0.1"
    """Bind address; loopback unless asked otherwise."""
    port: int = Field(8000, ge=1, le=65535)
    api_key: str | None = Field(None, repr=False)
    """When set, every request must send `Authorization: Bearer <api_key>`; an empty key is an error, not "no key"."""
    max_tokens_limit: int = Field(512, ge=1, le=32768)
    """Largest `max_tokens` a request may ask for."""
    default_max_tokens: int = Field(64, ge=1)
    max_body_bytes: int = Field(2 << 20, ge=1024)
    """Largest request body; a longer one is refused (413) before it is parsed or tokenized."""
    replicas: int = Field(1, ge=1, le=64)
    """Engine replicas (each holds a target and a draft)."""
    engine_num_cpus: float = Field(0.5, gt=0)
    """CPUs reserved per engine replica; fractional so that the ingress, the proxy and Ray Data still fit on 2 CPUs."""
    engine_num_gpus: float = Field(0.0, ge=0)
    ingress_num_cpus: float = Field(0.25, gt=0)
    max_ongoing_requests: int = Field(8, ge=1)
    """Requests a replica works on at once (threads sharing the weights, one KV cache pair each)."""
    torch_threads: int = Field(1, ge=1)
    """Intra-op threads per engine replica (small on a shared CPU: concurrent requests already use threads)."""
    accelerator_type: str | None = None
    """vLLM engine only: e.g. `H100`, `A10G` (Ray's accelerator types)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM engine only."""
    max_model_len: int | None = Field(None, gt=0)
    """Context length (default: the model's): vLLM allocates it; the ingress refuses longer requests for both engines."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """vLLM engine only: `auto` is a GPU when `accelerator_type` is set or the Ray cluster has (or can scale up to)
    GPUs, else vLLM's CPU build (`sdd_ray.vllm_engine.cluster_device`; the driver's own CUDA does not count)."""
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """vLLM engine only: the share of GPU memory (of host RAM on the CPU build) vLLM reserves; None: 0.9 GPU, 0.1 CPU."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """vLLM engine only: extra `vllm.EngineArgs`, over sdd_ray's defaults (`sdd_ray.vllm_engine`)."""
    verify_prompts: int = Field(3, ge=0, le=16)
    """vLLM engine only: prompts on which start-up checks that greedy output equals the target's own (0: off)."""
    verify_max_tokens: int = Field(32, ge=1)

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, value):
        if value is not None and not value.strip():
            raise ValueError("the API key is empty (an empty variable or file would leave the server open)")
        return value

    @model_validator(mode="after")
    def _default_within_limit(self):
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit ({self.max_tokens_limit})")
        return self

    @property
    def served_name(self) -> str:
        return self.model_name or Path(self.target.path.rstrip("/")).name or self.target.path
