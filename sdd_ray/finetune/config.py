"""Configuration of the fine-tuning stage (Ray Train + DeepSpeed ZeRO or DDP, LoRA or full).

The SFT and SDD arms of the paper use one config and differ only in `response_column`: a
distillation output carries both the teacher-rewritten `response` and the `original_response`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sdd_ray.config import ModelSpec, StrictModel
from sdd_ray.data import DataSpec

LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSpec(StrictModel):
    """LoRA adapters (peft); the paper fine-tunes with LoRA."""

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    """Scaling numerator: the adapter update is multiplied by alpha / rank."""
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEAR_MODULES), min_length=1)
    """Names of the linear layers that get adapters (Llama/Mistral/Qwen naming by default)."""


class FinetuneConfig(StrictModel):
    """Fine-tune `model` on `data` with Ray Train; every worker reads its settings from this config."""

    model: ModelSpec
    data: DataSpec
    """A distillation output directory (its `data/*.parquet`), a .parquet/.jsonl file or directory of them,
    a toy source (`toy:all`) or a Hugging Face dataset (`openai/gsm8k:main`), with its split, column
    preset and limit (`sdd_ray.data.DataSpec`). Local files in the canonical columns are read as they
    are (a distillation output keeps its `original_response`); other sources are mapped to them."""
    response_column: Literal["response", "original_response"] = "response"
    """`response`: the self-distilled response (SDD arm); `original_response`: the original label (SFT arm)."""

    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: Literal[2, 3] = 2
    offload_optimizer: bool = False
    """DeepSpeed: keep optimizer states in CPU memory (stepped by torch AdamW there, not DeepSpeed's JIT-built CPU Adam)."""
    offload_params: bool = False
    """DeepSpeed ZeRO-3 only: keep parameters in CPU memory."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them: far less
    activation memory (an 8B model at 2,048 tokens) for about a third more compute."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Compute precision. `auto`: bf16 on GPUs that support it and whenever `model.dtype` is bfloat16, else
    fp32. `bf16` with float32 weights is mixed precision (autocast for DDP, DeepSpeed's bf16 mode)."""

    method: Literal["lora", "full"] = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    save_adapter: bool = False
    """With LoRA, also write the adapter alone to `<out>/adapter/` (the model dir holds the merged weights)."""

    num_workers: int = Field(2, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs reserved per worker; on the CPU it is also the worker's torch thread count (rounded down, >= 1)."""

    epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides `epochs` when smaller)."""
    batch_size: int = Field(8, gt=0)
    """Sequences per worker per micro-batch."""
    grad_accum: int = Field(1, gt=0)
    """Micro-batches per optimizer step; the global batch is batch_size x grad_accum x num_workers."""
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """The cosine schedule decays to lr x min_lr_ratio."""
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    """Fraction of the optimizer steps spent in linear warm-up."""
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(512, gt=1)
    """Prompt + response tokens per sequence."""
    overlong: Literal["truncate", "reject"] = "truncate"
    """A longer sequence is cut to `max_length` (response end lost) or dropped; both are counted."""
    seed: int = 0
    batch_order: Literal["length", "row"] = "length"
    """`length`: each window of 16 global batches is grouped by sequence length (less padding). `row`: batches
    are the seeded shuffle of the rows alone, so two arms trained on the same rows (SFT and SDD, whose
    responses differ in length) see the same examples in the same batches in the same order."""

    checkpoint_every: int = Field(0, ge=0)
    """Save a resumable checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(1, gt=0)
    """Print progress and report metrics to Ray every N optimizer steps."""
    max_failures: int = Field(0, ge=0)
    """Worker-group restarts Ray Train may make; each restart resumes from the last checkpoint."""
    storage_path: str | None = None
    """Where Ray Train keeps checkpoints (default: `<out>/checkpoints`). A rerun with the same path and name resumes."""
    run_name: str = "finetune"
    fail_at_step: int | None = Field(None, gt=0)
    """Testing aid: raise in worker 0 after this optimizer step, once per run directory (needs storage_path)."""

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.offload_params and (self.strategy != "deepspeed" or self.zero_stage != 3):
            raise ValueError("offload_params needs strategy deepspeed with zero_stage 3")
        if self.offload_optimizer and self.strategy != "deepspeed":
            raise ValueError("offload_optimizer needs strategy deepspeed")
        if self.model.dtype == "float16":
            raise ValueError("model.dtype float16 cannot be trained here (no loss scaling); use bfloat16 or float32")
        if self.model.dtype == "bfloat16" and self.precision == "fp32":
            raise ValueError("precision fp32 contradicts model.dtype bfloat16; set one of them to the other's precision")
        return self


# Settings a resumed run may change; any other difference means the checkpoints belong to another run.
RESUMABLE_CHANGES = {"epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "max_failures",
                     "fail_at_step", "save_adapter", "storage_path"}
