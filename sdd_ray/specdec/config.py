"""Configuration of the speculative decoding measurement (`sdd-ray specdec`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from sdd_ray.config import ModelSpec, StrictModel
from sdd_ray.data import DataSpec, with_split


class SpecDecConfig(StrictModel):
    """Measure one target with one or more drafts on the same prompts, against target-only decoding."""

    target: ModelSpec
    drafts: dict[str, ModelSpec] = Field(min_length=1)
    """Draft models by table name (e.g. `no-ft`, `sft`, `sdd`); each is measured on the same prompts."""
    data: DataSpec
    """The prompts (`sdd_ray.data.DataSpec`, its `test` split unless another is named): a JSONL or Parquet
    file or a hub data set (`openai/gsm8k:main`) whose rows give a user message in `prompt`, `instruction`
    (+ `input`) or `question` (GSM8K's layout), or a toy source (`toy:arith,facts`, `toy:all`). Each
    message is rendered with the target's chat template, else the plain instruction format."""
    k: int = Field(4, ge=1, le=32)
    """Tokens the draft proposes per step (vLLM's `num_speculative_tokens`)."""
    max_new_tokens: int = Field(64, gt=0, le=4096)
    limit: int | None = Field(20, gt=0)
    """Prompts to use (None: all of them)."""
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    """0: greedy (outputs must match target-only decoding token for token); > 0: rejection sampling."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    warmup: int = Field(1, ge=0)
    """Prompts decoded once, untimed, before measuring (first-call allocations, lazy inits)."""

    @field_validator("data", mode="before")
    @classmethod
    def _test_split(cls, value):
        return with_split(value, "test")
