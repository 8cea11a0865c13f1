"""One model spec -> vLLM engine arguments, for every stage that runs vLLM (serve, distill, evaluate).

The CPU build of vLLM needs different settings from a GPU, and getting them wrong does not always
fail: it can give wrong text. vLLM's torch.compile mode once gave wrong speculative output here
(SmolLM2-135M drafting itself); eager mode was exact in every run and starts 3-6x faster
(`benchmarks/vllm_cpu_settings.py`, docs/serve.md). So the CPU defaults live in this one function
and every caller takes them from here.

Pure: nothing here imports vLLM, so configurations can be built and checked without it.
"""

from __future__ import annotations

from typing import Any, Literal

from sdd_ray.config import ModelSpec

Device = Literal["auto", "cpu", "gpu"]

CPU_DEFAULTS: dict[str, Any] = {
    # torch.compile (vLLM's default mode) once gave wrong speculative output on the CPU build;
    # eager was exact every time and starts 3-6x faster here.
    "enforce_eager": True,
}
"""Engine arguments that make vLLM's CPU backend give target-exact greedy output."""

CPU_MEMORY_UTILIZATION = 0.1
"""On the CPU backend `gpu_memory_utilization` is the share of host RAM reserved up front: keep it small."""
CPU_KV_CACHE_BYTES = 1 << 30
"""The CPU backend sizes its KV cache as that share minus the process's whole RSS (torch, both models),
which left 0.07 GiB here at 0.1 and failed start-up; an explicit size does not depend on what else
the process holds (1 GiB: 16 sequences of 1,024 tokens of SmolLM2 and its draft in float32)."""
GPU_MEMORY_UTILIZATION = 0.9


def resolve_device(device: Device, accelerator_type: str | None = None) -> Literal["cpu", "gpu"]:
    """`auto` in the process that runs the engine: a GPU when an accelerator type is named or CUDA is visible here.

    Only for code that runs on the engine's node (an evaluation task); a driver decides from the
    cluster instead (`cluster_device`)."""
    if device != "auto":
        return device
    if accelerator_type:
        return "gpu"
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def cluster_device(device: Device, cluster_gpus: float, accelerator_type: str | None = None) -> Literal["cpu", "gpu"]:
    """`auto` for engines a driver places on the cluster: a GPU when the cluster has (or can scale up to)
    GPUs or an accelerator type is named, else vLLM's CPU build. The driver's own CUDA does not count:
    on the manifests it runs on a CPU-only head."""
    if device != "auto":
        return device
    return "gpu" if accelerator_type or cluster_gpus > 0 else "cpu"


def engine_args(
    spec: ModelSpec,
    *,
    device: Device = "auto",
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    speculative_config: dict | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`vllm.EngineArgs` keyword arguments for `spec`, without the model path itself.

    Callers name the model in their own key (`model_source` for `ray.serve.llm` and `ray.data.llm`,
    `pretrained` for lm-eval). `overrides` (a user's `engine_kwargs`) win over everything, so a
    default can always be switched off explicitly.
    """
    resolved = resolve_device(device)
    args: dict[str, Any] = {
        "tensor_parallel_size": tensor_parallel_size,
        "pipeline_parallel_size": pipeline_parallel_size,
        "trust_remote_code": spec.trust_remote_code,
        "gpu_memory_utilization": gpu_memory_utilization
        or (CPU_MEMORY_UTILIZATION if resolved == "cpu" else GPU_MEMORY_UTILIZATION),
    }
    if spec.revision:
        args["revision"] = spec.revision
    if spec.dtype != "auto":
        args["dtype"] = spec.dtype
    elif resolved == "cpu":
        args["dtype"] = "float32"  # ModelSpec's `auto` on the CPU, so vLLM decodes as the HF reference does
    if max_model_len:
        args["max_model_len"] = max_model_len
    if seed is not None:
        args["seed"] = seed
    if speculative_config:
        args["speculative_config"] = speculative_config
    if resolved == "cpu":
        args.update(CPU_DEFAULTS)
        if gpu_memory_utilization is None:
            args["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return {**args, **(overrides or {})}


def draft_model_config(draft: ModelSpec, num_speculative_tokens: int) -> dict[str, Any]:
    """vLLM's `speculative_config` for a separate draft model proposing `num_speculative_tokens` per step."""
    config: dict[str, Any] = {"method": "draft_model", "model": draft.path, "num_speculative_tokens": num_speculative_tokens}
    if draft.revision:
        config["revision"] = draft.revision
    return config
