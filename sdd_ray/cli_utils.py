"""Small helpers shared by the stage commands, and the one way a command turns its flags into its config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from sdd_ray.config import load_config
from sdd_ray.models import as_spec

console = Console(stderr=True)

C = TypeVar("C")
NOT_CONFIG = ("config", "out", "overwrite")
"""Options of every stage command that are not fields of its config."""


DATA_FLAGS = {"data": "data.source", "columns": "data.columns", "split": "data.split", "limit": "data.limit"}
"""The data flags of every command that reads a data set, and the `DataSpec` fields they set."""
Columns = Annotated[str | None, typer.Option(help="Column preset: auto, toy, gsm8k, alpaca, dolly, openmath. [default: auto]")]
Split = Annotated[str | None, typer.Option(help="Split of a Hugging Face dataset; toy: train, test or calibration. [default: train]")]


def parse_list(value: str) -> list[str]:
    """`"a, b,c"` -> `["a", "b", "c"]`."""
    return [item.strip() for item in value.split(",") if item.strip()]


def given_flags(ctx: typer.Context, fields: dict[str, str] | None = None,
                convert: dict[str, Callable[[Any], Any]] | None = None, skip: tuple[str, ...] = NOT_CONFIG) -> dict:
    """The options typed on the command line as config overrides: {dotted field: value}.

    Options left at their defaults are not overrides (the config file, else the config's own default,
    decides); `fields` renames an option to the config field it sets (`lora_rank` -> `lora.rank`),
    `convert` turns its value into the field's (`--model toy-teacher` -> a model spec).
    """
    fields, convert = fields or {}, convert or {}
    # by name: typer ships its own copy of click, whose ParameterSource is not click's
    typed = {name: value for name, value in ctx.params.items()
             if name not in skip and ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}
    return {fields.get(name, name): convert[name](value) if name in convert else value for name, value in typed.items()}


def stage_config(ctx: typer.Context, cls: type[C], fields: dict[str, str] | None = None,
                 convert: dict[str, Callable[[Any], Any]] | None = None, skip: tuple[str, ...] = NOT_CONFIG) -> C:
    """`cls` from `--config FILE` (when given) with the typed flags on top (`given_flags`)."""
    return load_config(cls, ctx.params.get("config"), given_flags(ctx, fields, convert, skip))


def model_spec(value: str) -> dict:
    """`--model PATH|HUB_ID|toy-teacher|GGUF` -> a model spec mapping."""
    return as_spec(value).model_dump()
