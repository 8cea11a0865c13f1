"""Configuration of a self-data distillation job (`sdd-ray distill`, `jobs/distill.py`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from sdd_ray.config import ModelSpec, StrictModel
from sdd_ray.data import DataSpec
from sdd_ray.distill.gate import QualityGate
from sdd_ray.vllm_engine import cluster_device

DEFAULT_TEMPLATES = {"general": "general", "math": "math", "mc": "mc"}


class VLLMOptions(StrictModel):
    """Engine settings of the `vllm` backend (`ray.data.llm.vLLMEngineProcessorConfig`)."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs one engine shards its weights over."""
    pipeline_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, gt=0)
    """Context length the engine allocates for; default: the model's."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    """Fraction of GPU memory for weights + KV cache; on `device: cpu`, of host memory, which the node shares
    with everything else. Default: 0.9 on a GPU, 0.1 on the CPU."""
    max_concurrent_batches: int = Field(default=8, ge=1)
    """Batches in flight per engine, to hide per-batch tail latency."""
    accelerator_type: str | None = None
    """Pin engines to one GPU type (`H100`, `A100`), as Ray's accelerator labels name them."""
    device: Literal["auto", "gpu", "cpu"] = "auto"
    """`cpu` runs engines on CPU-only nodes (a CPU build of vLLM) by giving each a CPU bundle.
    `auto`: `gpu` when the Ray cluster has GPUs, else `cpu`."""
    cpus_per_engine: float = Field(default=1.0, gt=0)
    """CPUs reserved per engine when `device` is `cpu`."""
    cpus_per_stage: float = Field(default=0.25, gt=0)
    """CPUs reserved by each actor of the chat-template, tokenize and detokenize stages."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra `vllm.EngineArgs` (e.g. `enable_prefix_caching`), merged over the settings above."""


class DistillConfig(StrictModel):
    """The teacher, the data, the templates, and how generation is spread over Ray."""

    teacher: ModelSpec
    """The unpruned model that rewrites the responses."""
    data: DataSpec
    """The fine-tuning data set (source, column mapping, limit)."""
    task_kind: Literal["auto", "math", "mc", "general"] = "auto"
    """How answers are checked. `auto`: each row's `kind` (toy rows carry one; gsm8k/openmath are math), else general."""
    templates: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    """Rewrite template per kind: a built-in name (general, math, mc) or a file path with `{instruction}` and `{reference}`."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """`hf`: transformers `generate` in a Ray actor pool; `vllm`: `ray.data.llm` (vLLM's CUDA or CPU build).
    `auto`: `vllm` where vLLM imports, else `hf` (see `resolve_backend`)."""
    num_workers: int = Field(default=1, ge=1)
    """Generation actors (hf) or vLLM engines (vllm)."""
    cpus_per_worker: float = Field(default=0.5, gt=0)
    """CPUs reserved per hf actor. Fractional on purpose: actors that take every CPU starve Ray Data's reads."""
    gpus_per_worker: float = Field(default=0.0, ge=0)
    """GPUs reserved per hf actor (0 on CPU machines)."""
    torch_threads: int | None = Field(default=None, ge=1)
    """Torch threads per hf actor; default: max(1, round(cpus_per_worker))."""
    batch_size: int = Field(default=16, ge=1)
    """Rows per generation batch."""
    max_new_tokens: int = Field(default=128, ge=1)
    """Token limit of a rewrite; a rewrite that reaches it is treated as truncated and not used."""
    shard_rows: int = Field(default=512, ge=1)
    """Rows (valid + rejected) per output shard: the unit of commit and resume."""
    max_shards: int | None = Field(default=None, ge=1)
    """Stop after writing this many shards in this run (an interrupted job, for tests and dry runs)."""
    max_teacher_failure_rate: float = Field(default=0.02, ge=0, le=1)
    """Fail the run when more than this fraction of the rows given to the teacher failed to generate
    (such rows are rejected as `teacher_failed`; past this rate the output is not self-distilled data)."""
    progress: bool = True
    """Show a progress bar with rows/s and tokens/s."""
    gate: QualityGate | None = None
    """The rewrite quality gate beyond the paper's selection (answer-only, loops, conflicting answers, leaks,
    non-answers, off-topic): a rewrite that fails it falls back to the reference. None: the paper's selection only."""
    drop_missing_context: bool = False
    """Reject rows whose instruction refers to a passage the row does not carry (`Given this paragraph...`
    with an empty `input`), as in copies of Dolly without `context`."""
    max_reference_words: int | None = Field(default=None, gt=0)
    """Reject rows whose reference response is longer than this many words (both arms lose them alike)."""
    gap_rows: int = Field(default=0, ge=0)
    """After distilling, score up to this many rows whose rewrite was selected: mean NLL/token of the rewrite
    and of the reference under the teacher (the distribution gap SDD relies on), in `stats.json`. 0: off."""
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)

    @field_validator("templates")
    @classmethod
    def _complete_templates(cls, templates: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(templates) - set(DEFAULT_TEMPLATES))
        if unknown:
            raise ValueError(f"unknown kind(s) {unknown}; kinds are {sorted(DEFAULT_TEMPLATES)}")
        return {**DEFAULT_TEMPLATES, **templates}


def word_level_tokenizer(model_path: str) -> bool:
    """Whether a local checkpoint's tokenizer is word-level (the toy tokenizer): its tokens carry no spaces and
    its decoder joins them with one, which vLLM's incremental detokenizer does not, so vLLM's texts differ."""
    tokenizer = Path(model_path) / "tokenizer.json"
    return tokenizer.is_file() and json.loads(tokenizer.read_text()).get("model", {}).get("type") == "WordLevel"


def resolve_backend(cfg: DistillConfig) -> DistillConfig:
    """`cfg` with `backend: auto` made concrete: `vllm` where vLLM imports (found, not imported: that takes
    seconds), unless the teacher's tokenizer is word-level, whose texts only transformers decodes as the
    tokenizer does; `hf` otherwise. A model vLLM cannot load fails at engine start: set `backend: hf`."""
    if cfg.backend != "auto":
        return cfg
    vllm = importlib.util.find_spec("vllm") is not None and not word_level_tokenizer(cfg.teacher.path)
    return cfg.model_copy(update={"backend": "vllm" if vllm else "hf"})


def resolve_engine_device(options: VLLMOptions, cluster_gpus: float) -> VLLMOptions:
    """`options` with `device` and `gpu_memory_utilization` made concrete for a cluster with `cluster_gpus` GPUs."""
    device = cluster_device(options.device, cluster_gpus, options.accelerator_type)
    memory = options.gpu_memory_utilization or (0.9 if device == "gpu" else 0.1)
    return options.model_copy(update={"device": device, "gpu_memory_utilization": memory})
