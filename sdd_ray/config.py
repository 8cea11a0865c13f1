"""Typed configuration: a strict pydantic base, the shared model spec, and YAML loading.

Every stage has its own config model (`sdd_ray/<stage>/config.py`); the whole run composes them
(`sdd_ray.pipeline.config.RunConfig`). Every command goes YAML, then the flags typed on the command
line, -> validated config -> `run_<stage>(cfg)` through one loader (`load_config`), and a bad config
fails before any work starts, naming the file, the field and the reason.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sdd_ray.convert import converted_dir, gguf_source, is_gguf_reference
from sdd_ray.errors import ConfigError, UserError  # noqa: F401  (re-exported: the config layer's errors)


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelSpec(StrictModel):
    """Where a model comes from and how to load it; one spec shared by every stage."""

    path: str
    """A local Hugging Face checkpoint directory or a hub id (`meta-llama/Llama-3.1-8B-Instruct`)."""
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 on a GPU that supports it, float32 on the CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    trust_remote_code: bool = False
    """Run modelling code shipped with the checkpoint. Off unless asked: it executes arbitrary code."""
    gguf: str | None = None
    """The GGUF file `path` is converted from (set when `path` names a `.gguf` file or a packaged model)."""

    @model_validator(mode="before")
    @classmethod
    def _gguf_to_checkpoint(cls, data):
        """`path: model.gguf` or `path: smollm2-135m` -> the converted checkpoint's cache directory.

        Only the location is decided here (a `stat`, no conversion): the first stage that loads the
        model converts it (`sdd_ray.models.check_model_exists`).
        """
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or data.get("gguf"):
            return data
        if not is_gguf_reference(data["path"]):
            return data
        source = gguf_source(data["path"])
        if not source.is_file():
            raise ValueError(f"{source}: no such GGUF file")
        dtype = data.get("dtype", "auto")
        return {**data, "gguf": str(source), "path": str(converted_dir(source, "bfloat16" if dtype == "auto" else dtype))}


C = TypeVar("C", bound=BaseModel)


def format_validation_error(error: ValidationError, source: str) -> str:
    """One `source: dotted.field: reason` line per problem."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(root)"
        message = problem["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}: {field}: {message}")
    return "\n".join(lines)


def validate_config(cls: type[C], data: dict, source: str = "<config>", context: dict | None = None) -> C:
    """`cls` validated from `data`, or a `ConfigError` naming `source` and each bad field."""
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def _nested_model(cls: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The config model of field `name` of `cls` (`lora` -> LoraSpec), if it is one."""
    if cls is None or name not in cls.model_fields:
        return None
    annotation = cls.model_fields[name].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def apply_overrides(cls: type[BaseModel], data: dict, overrides: dict[str, Any]) -> dict:
    """`data` with `overrides` set on top; dotted keys reach nested fields (`lora.rank`).

    A nested config written in its short form (`data: toy:all`) is expanded first, so that
    `data.limit` adds to it instead of replacing it.
    """
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        level, model = data, cls
        for key in parents:
            model = _nested_model(model, key)
            current = level.get(key)
            if not isinstance(current, dict):
                short = current is not None and model is not None
                current = model.model_validate(current).model_dump(exclude_unset=True) if short else {}
                level[key] = current
            level = current
        level[leaf] = value
    return data


def load_config(cls: type[C], path: str | Path | None, overrides: dict[str, Any] | None = None) -> C:
    """The one way a command builds its config: a YAML file (optional) with `overrides` (flags) on top.

    Errors name the file, or `command line` when there is none, and the field.
    """
    data = read_yaml(path) if path is not None else {}
    apply_overrides(cls, data, overrides or {})
    return validate_config(cls, data, str(path) if path is not None else "command line")


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write `config` as YAML that `load_config` reads back to an equal object."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
