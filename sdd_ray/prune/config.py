"""Configuration of the pruning stage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from sdd_ray.config import ModelSpec, StrictModel
from sdd_ray.data import DataSpec, with_split
from sdd_ray.models import model_num_layers


class PruneConfig(StrictModel):
    """Prune one block of contiguous decoder layers, chosen on calibration data."""

    model: ModelSpec
    """The unpruned model."""
    block_size: int = Field(0, ge=0)
    """Layers to remove (n). 0: a dry run that only computes and plots the distances."""
    metric: Literal["angular", "bi"] = "angular"
    """`angular`: angular distance of the last token's state across the block (Gromov et al.);
    `bi`: mean Block Influence of the block's layers over all tokens (ShortGPT)."""
    calib: DataSpec = Field(default_factory=lambda: DataSpec(source="toy:all", split="calibration"))
    """Calibration texts (`sdd_ray.data.DataSpec`): a toy source (its `calibration` split unless another
    is named), a local .jsonl/.parquet file, or a hub dataset `org/name[:config]` (streamed from its `split`)."""
    text_field: str = "text"
    """Field (column) holding the text (toy rows: the prompt and the teacher-style response)."""
    num_samples: int = Field(256, gt=0)
    """At most this many calibration texts."""
    max_length: int | None = Field(None, gt=0)
    """Truncate texts to this many tokens (at most the model's context). None: whole texts, each of which
    must then fit the context."""
    batch_size: int = Field(8, gt=0)
    num_workers: int = Field(1, ge=0)
    """Ray Data actors that run the calibration; 0 runs it in this process, without Ray."""
    cpus_per_worker: float = Field(0.5, gt=0)
    """CPUs reserved by each actor; below 1 so that the actor pool leaves CPUs for Ray Data's own tasks."""
    gpus_per_worker: float = Field(0.0, ge=0)
    """GPUs per actor (1 on a GPU cluster; 0 on CPU)."""

    @field_validator("calib", mode="before")
    @classmethod
    def _toy_calibration_split(cls, value):
        return with_split(value, "calibration", toy_only=True)

    @field_validator("block_size")
    @classmethod
    def _block_fits_model(cls, block_size: int, info: ValidationInfo) -> int:
        """Checked against a local model's config.json (cheap); hub models are checked in `run_prune`."""
        model = info.data.get("model")
        if block_size and model is not None and Path(model.path).is_dir():
            check_block_size(block_size, model_num_layers(model))
        return block_size


def check_block_size(block_size: int, num_layers: int) -> None:
    if block_size >= num_layers:
        raise ValueError(f"must be < num_hidden_layers ({num_layers}), got {block_size}")
