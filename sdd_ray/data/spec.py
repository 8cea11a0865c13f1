"""The data spec every stage takes: its source, split, column mapping and row limit, and the column presets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from sdd_ray.config import StrictModel
from sdd_ray.data.sources import source_type
from sdd_ray.toy.sources import toy_tasks

CANONICAL = ("id", "task", "kind", "instruction", "input", "response")


class ColumnMap(StrictModel):
    """Which source column holds each canonical field. Optional columns may be absent from the data."""

    instruction: str = "instruction"
    """The prompt / question column (required in every row)."""
    input: str | None = "input"
    """Extra context for the instruction (optional; missing or null reads as "")."""
    response: str = "response"
    """The reference response column (required in every row)."""
    id: str | None = "id"
    """A stable row id; when absent the id is a sha1 of the row's content."""
    task: str | None = "task"
    """The task name of the row; when absent the data set's `task` name is used."""
    kind: str | None = "kind"
    """The task kind (math|mc|general) of the row, if the data carries it."""


PRESETS: dict[str, ColumnMap] = {
    "toy": ColumnMap(),
    "gsm8k": ColumnMap(instruction="question", response="answer"),
    "alpaca": ColumnMap(instruction="instruction", input="input", response="output"),
    "dolly": ColumnMap(instruction="instruction", input="context", response="response", task="category"),
    "openmath": ColumnMap(instruction="problem", response="generated_solution"),
}
PRESET_KIND = {"gsm8k": "math", "openmath": "math", "alpaca": "general", "dolly": "general"}


class DataSpec(StrictModel):
    """A data set as every stage takes it: its source, split, column mapping, and how much of it to use."""

    source: str
    """`toy:<task>[,<task>]|toy:all`, a local .jsonl/.json/.parquet file or directory, or a HF dataset name[:config]."""
    columns: str | ColumnMap = "auto"
    """A preset (toy, gsm8k, alpaca, dolly, openmath), an explicit mapping, or `auto` (guessed from the source name)."""
    split: str = "train"
    """Split of a Hugging Face dataset; of a toy source: train (fine-tuning), test or calibration."""
    task: str | None = None
    """Task name for rows without a task column (default: the preset name, else `default`)."""
    limit: int | None = Field(default=None, gt=0)
    """Use only the first `limit` rows (for toy sources, rows are interleaved across tasks first)."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data):
        """`"openai/gsm8k:main"` is short for `{source: "openai/gsm8k:main"}`."""
        return {"source": data} if isinstance(data, str) else data

    @field_validator("source")
    @classmethod
    def _known_toy_tasks(cls, source: str) -> str:
        if source.startswith("toy:"):
            toy_tasks(source)
        return source


def with_split(value: Any, split: str, toy_only: bool = False) -> Any:
    """A DataSpec value (a string or a mapping) with a stage's own default `split` when it names none.

    Specdec measures on `test`; pruning calibrates toy sources on their `calibration` split.
    """
    spec = {"source": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or "split" in spec or (toy_only and not str(spec.get("source", "")).startswith("toy:")):
        return value
    return {**spec, "split": split}


def capped(spec: DataSpec, limit: int | None) -> DataSpec:
    """`spec` reading at most `limit` rows as well as at most its own `limit` (a stage's sample size)."""
    limits = [n for n in (spec.limit, limit) if n is not None]
    return spec.model_copy(update={"limit": min(limits) if limits else None})


def preset_name(spec: DataSpec) -> str | None:
    """The column preset in use: named, or guessed from the source (`toy:`, `gsm8k`, `alpaca`, ...)."""
    if isinstance(spec.columns, ColumnMap):
        return None
    if spec.columns != "auto":
        if spec.columns not in PRESETS:
            raise ValueError(f"unknown column preset {spec.columns!r}; choose from {sorted(PRESETS)} or give a mapping")
        return spec.columns
    kind = source_type(spec.source)
    if kind == "toy":
        return "toy"
    # a local file by its own name only: a folder (runs/gsm8k-sdd, a distillation output) picks no preset
    path = Path(spec.source)
    lowered = (spec.source if kind == "hf" else path.name if path.is_file() else "").lower()
    return next((name for name in PRESETS if name in lowered), None)


def column_map(spec: DataSpec) -> ColumnMap:
    if isinstance(spec.columns, ColumnMap):
        return spec.columns
    name = preset_name(spec)
    return PRESETS[name] if name else ColumnMap()


def default_task(spec: DataSpec) -> str:
    if spec.task:
        return spec.task
    return preset_name(spec) or "default"


def default_kind(spec: DataSpec) -> str:
    """The kind implied by the preset (gsm8k -> math), or "" when the preset does not say."""
    return PRESET_KIND.get(preset_name(spec) or "", "")
