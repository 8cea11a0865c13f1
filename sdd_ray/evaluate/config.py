"""Configuration of the evaluation stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sdd_ray.config import ModelSpec, StrictModel


class EvaluateConfig(StrictModel):
    """Evaluate one model on a task suite, optionally against an unpruned baseline."""

    model: ModelSpec
    tasks: list[str] = Field(default_factory=lambda: ["arith", "facts", "instruct"], min_length=1)
    evaluator: Literal["builtin", "harness"] = "builtin"
    limit: int | None = Field(200, gt=0)
    """Examples per task (None: the whole task)."""
    batch_size: int = Field(32, gt=0)
    baseline: str | None = None
    """A `results.json` of the unpruned model, or a model to evaluate first; gives `recovery_pct`."""
