"""Configuration of the merge stage; also reads mergekit-style SLERP configs.

Native form:

    models: [runs/ft_arith, runs/ft_instruct]
    t: 0.5                      # or a gradient [0, 0.5, 1], or [{filter: self_attn, value: [0, 1]}, {value: 0.5}]
    dtype: bfloat16

mergekit form (accepted as is; see docs/merge.md):

    slices:
      - sources:
          - {model: runs/ft_arith, layer_range: [0, 10]}
          - {model: runs/ft_instruct, layer_range: [0, 10]}
    merge_method: slerp
    base_model: runs/ft_arith
    parameters:
      t: [{filter: self_attn, value: [0, 0.5, 1]}, {value: 0.5}]
    dtype: bfloat16
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sdd_ray.config import ModelSpec, StrictModel, apply_overrides, read_yaml, validate_config
from sdd_ray.merge.schedule import TSetting, check_setting, get_merge_method
from sdd_ray.models import as_spec

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def _model_entry(entry, where: str):
    """A model given as a path, a ModelSpec mapping, or a mergekit `{model: path}` entry."""
    if isinstance(entry, str):
        return as_spec(entry).model_dump()
    if isinstance(entry, dict) and "model" in entry:
        extra = set(entry) - {"model", "layer_range"}
        if extra:
            raise ValueError(
                f"{where}: per-model {', '.join(sorted(extra))} not supported; set t under the top-level `parameters`"
            )
        return as_spec(entry["model"]).model_dump()
    return entry


def _from_slices(slices) -> tuple[list, list[int] | None]:
    """(models, layer_range) of a mergekit `slices:` list of exactly one two-source slice."""
    if not isinstance(slices, list) or len(slices) != 1 or not isinstance(slices[0], dict):
        raise ValueError("slices: exactly one slice is supported (frankenmerges that stack slices are not)")
    sources = slices[0].get("sources")
    extra = set(slices[0]) - {"sources"}
    if extra:
        raise ValueError(f"slices[0]: unsupported keys {sorted(extra)}; put t under the top-level `parameters`")
    if not isinstance(sources, list) or len(sources) != 2:
        raise ValueError("slices[0].sources: SLERP merges exactly two models")
    ranges = [tuple(source.get("layer_range") or ()) for source in sources]
    if ranges[0] != ranges[1]:
        raise ValueError(f"slices[0].sources: layer_range must be the same for both models, got {ranges}")
    return [_model_entry(source, "slices[0].sources") for source in sources], list(ranges[0]) or None


class MergeConfig(StrictModel):
    """SLERP-merge two checkpoints of one architecture (e.g. one pruned model fine-tuned on two SDD sets)."""

    models: list[ModelSpec] = Field(min_length=2, max_length=2)
    """The two parents: HF checkpoint directories, or LoRA adapter directories (folded into their base first)."""
    base_model: str | None = None
    """The parent at t = 0 whose config and tokenizer the output gets (a path in `models`; default the first)."""
    merge_method: str = "slerp"
    """A registered merge method (`sdd_ray.merge.schedule.MERGE_METHODS`)."""
    t: TSetting = 0.5
    """Interpolation factor: a number, a gradient over the layers, or filtered entries (mergekit semantics)."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """Output dtype; None keeps the base model's (the maths is float32 either way)."""
    layer_range: list[int] | None = Field(None, min_length=2, max_length=2)
    """From a mergekit `slices:` config: must cover every layer ([0, num_layers])."""
    max_shard_mb: float = Field(1024, gt=0)
    """Output shard size; also bounds the memory the writer holds."""

    @model_validator(mode="before")
    @classmethod
    def _accept_mergekit(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "slices" in data:
            if "models" in data:
                raise ValueError("give either `models` or `slices`, not both")
            data["models"], data["layer_range"] = _from_slices(data.pop("slices"))
        elif isinstance(data.get("models"), list):
            data["models"] = [_model_entry(entry, "models") for entry in data["models"]]
        if "parameters" in data:
            parameters = data.pop("parameters") or {}
            unknown = set(parameters) - {"t"}
            if unknown:
                raise ValueError(f"parameters: only `t` is used by slerp, got {sorted(unknown)}")
            if "t" in parameters:
                if "t" in data:
                    raise ValueError("t is given both at the top level and under `parameters`")
                data["t"] = parameters["t"]
        if data.get("tokenizer_source") not in (None, "base"):
            raise ValueError("tokenizer_source: only `base` is supported (the tokenizer is the base model's)")
        data.pop("tokenizer_source", None)
        if data.get("out_dtype") is not None:
            data["dtype"] = data["out_dtype"]
        data.pop("out_dtype", None)
        if isinstance(data.get("dtype"), str):
            data["dtype"] = DTYPE_ALIASES.get(data["dtype"], data["dtype"])
        if isinstance(data.get("base_model"), str):
            data["base_model"] = as_spec(data["base_model"]).path
        return data

    @field_validator("t")
    @classmethod
    def _check_t(cls, value):
        return check_setting(value)

    @field_validator("merge_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        get_merge_method(value)
        return value

    @model_validator(mode="after")
    def _base_is_a_parent(self):
        paths = [model.path for model in self.models]
        if self.base_model is not None and _path_key(self.base_model) not in map(_path_key, paths):
            raise ValueError(f"base_model {self.base_model!r} must be one of the models {paths}")
        if _path_key(paths[0]) == _path_key(paths[1]):
            raise ValueError(f"models: the two parents are the same checkpoint {paths[0]!r}")
        return self

    @property
    def base_index(self) -> int:
        """Index in `models` of the t = 0 parent."""
        keys = [_path_key(model.path) for model in self.models]
        return keys.index(_path_key(self.base_model)) if self.base_model else 0


def _path_key(path: str) -> str:
    """One spelling per model: `m`, `./m/` and `/abs/m` name one local folder."""
    return str(Path(path).resolve()) if os.path.exists(path) else os.path.normpath(path)


def load_merge_config(path: str | Path | None, overrides: dict | None = None) -> MergeConfig:
    """A MergeConfig from a native or mergekit-style YAML file (optional), with the command line's `overrides`.

    `load_config`, plus the one mergekit rule: flags replace the file's `slices` and `parameters.t`.
    """
    data = read_yaml(path) if path is not None else {}
    overrides = overrides or {}
    if "models" in overrides:
        data.pop("slices", None)  # models from the command line replace the file's slices
    if "t" in overrides and isinstance(data.get("parameters"), dict):
        data["parameters"] = {k: v for k, v in data["parameters"].items() if k != "t"}
    apply_overrides(MergeConfig, data, overrides)
    return validate_config(MergeConfig, data, str(path) if path is not None else "command line")
