"""The interpolation factor t per tensor (constant, or by name filter and depth), and the method registry.

t follows mergekit's `parameters: t:` conventions so that its configs carry over unchanged:

- a number: the same t for every tensor;
- a list of numbers (a *gradient*) `[v0, v1, ..., vk]`: anchors spread evenly over the depth, linearly
  interpolated at the tensor's position p in [0, 1]: x = p * k, t = (1 - frac(x)) v[floor x] + frac(x) v[floor x + 1];
- a list of entries `{filter: str, value: number | gradient}`: the first entry whose filter is a
  substring of the tensor name wins; an entry without filter (or `filter: "*"`) matches every tensor.

The position of layer i of L decoder layers (the index parsed from `...layers.<i>.` in the name) is
i / (L - 1), so the first layer gets the gradient's first value and the last layer its last value
(a single layer gets 1, as in mergekit). Tensors outside the layers follow mergekit's planner:
embeddings (a name containing `embed`) sit before the first layer (p = 0), everything else (final
norm, lm_head) after the last (p = 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import field_validator

from sdd_ray.config import StrictModel
from sdd_ray.merge.slerp import slerp_with_info

Gradient = list[float]


class TEntry(StrictModel):
    """One conditional setting: `value` for the tensors whose name contains `filter`."""

    filter: str | None = None
    """Substring of the tensor name (e.g. `self_attn`, `mlp`); None or `*`: every tensor."""
    value: float | Gradient
    """A constant t, or a gradient of anchors interpolated across the layers."""

    @field_validator("value")
    @classmethod
    def _in_unit_interval(cls, value):
        return check_values(value)


TSetting = float | Gradient | list[TEntry]
"""What `t` may be: a number, a gradient, or a list of filtered entries."""

LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def check_values(value: float | Gradient) -> float | Gradient:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("a gradient needs at least one value")
    for item in values:
        if not 0.0 <= item <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {item}")
    return value


def layer_index(name: str) -> int | None:
    """Decoder-layer index of a tensor name (`model.layers.3.mlp.up_proj.weight` -> 3), else None."""
    match = LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def position(name: str, num_layers: int) -> float:
    """Where the tensor sits along the depth, in [0, 1] (see the module docstring)."""
    index = layer_index(name)
    if index is None:
        return 0.0 if "embed" in name else 1.0
    if num_layers <= 1:
        return 1.0
    return index / (num_layers - 1)


def interpolate_gradient(values: Gradient, pos: float) -> float:
    """The gradient's value at position `pos` in [0, 1] (piecewise linear between evenly spread anchors)."""
    scaled = pos * (len(values) - 1)
    lower = min(int(scaled), len(values) - 1)
    upper = min(lower + 1, len(values) - 1)
    frac = scaled - lower
    return (1.0 - frac) * values[lower] + frac * values[upper]


def _value_at(value: float | Gradient, pos: float) -> float:
    return interpolate_gradient(value, pos) if isinstance(value, list) else float(value)


def resolve_t(setting: TSetting, name: str, num_layers: int) -> float:
    """t for tensor `name` of a model with `num_layers` decoder layers."""
    pos = position(name, num_layers)
    if not isinstance(setting, list) or all(isinstance(item, (int, float)) for item in setting):
        return _value_at(setting, pos)
    for entry in setting:
        entry = entry if isinstance(entry, TEntry) else TEntry.model_validate(entry)
        if entry.filter in (None, "*") or entry.filter in name:
            return _value_at(entry.value, pos)
    raise ValueError(
        f"t: no entry matches tensor {name!r}; add a default entry without `filter` (e.g. `- value: 0.5`)"
    )


def check_setting(value: TSetting) -> TSetting:
    """Validate a whole t setting: numbers in [0, 1], no empty list (entries check themselves)."""
    if isinstance(value, list) and not value:
        raise ValueError("an empty list is neither a gradient nor a list of entries")
    if isinstance(value, list) and isinstance(value[0], TEntry):
        return value
    return check_values(value)


MergeFn = Callable[..., tuple]
"""(a, b, t) -> (merged tensor, info); a is the base model's tensor."""

MERGE_METHODS: dict[str, MergeFn] = {"slerp": slerp_with_info}


def get_merge_method(name: str) -> MergeFn:
    """The merge function registered as `name`; unknown names are errors that list the known ones."""
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; available: {', '.join(sorted(MERGE_METHODS))}") from None
