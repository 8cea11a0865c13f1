"""Configuration of the speculative decoding measurement (`sdd-ray specdec`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from sdd_ray.config import ModelSpec, StrictModel


class SpecDecConfig(StrictModel):
    """Measure one target with one or more drafts on the same prompts, against target-only decoding."""

    target: ModelSpec
    drafts: dict[str, ModelSpec] = Field(min_length=1)
    """Draft models by table name (e.g. `no-ft`, `sft`, `sdd`); each is measured on the same prompts."""
    data: str
    """A JSONL or Parquet file, or a hub data set (`openai/gsm8k:main`, read from `split`), whose rows
    give a user message in `prompt`, `instruction` (+ `input`) or `question` (GSM8K's layout), or `toy:<task>[,<task>...]` (toy eval-split tasks; `toy:all` for every
    toy task). Each message is rendered with the target's chat template, else the plain instruction format."""
    split: str = "test"
    """Split of a hub data set."""
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

    @field_validator("data")
    @classmethod
    def _data_names_a_source(cls, value: str) -> str:
        if value.startswith("toy:"):
            from sdd_ray.toy.tasks import TASKS

            tasks = value.removeprefix("toy:").split(",")
            unknown = [t for t in tasks if t not in (*TASKS, "all")]
            if unknown:
                raise ValueError(f"unknown toy task(s) {unknown}; choose from {list(TASKS)} or `all`")
        return value
