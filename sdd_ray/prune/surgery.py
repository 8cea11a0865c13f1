"""Remove decoder layers from a Hugging Face causal LM so that it stays a plain HF checkpoint.

Removing block [l, l+n) wires layer l-1's output straight into layer l+n: the decoder layers run in
sequence over the residual stream, so dropping them from the `ModuleList` is the whole rewiring.
What else must change for the result to load and run without sdd_ray code:

- `config.num_hidden_layers`, since the model class builds `range(num_hidden_layers)` layers;
- per-layer config lists (`layer_types` and any list as long as the old layer count), kept in step
  with the layers that remain, and a few known layer-index fields (`max_window_layers`, ...);
- every module's `layer_idx`, which indexes the KV cache: left alone, two layers would write the
  same cache slot after pruning.

The decoder-layer list is found generically (the one `ModuleList` with `num_hidden_layers` entries),
which covers the Llama layout (`model.model.layers`: Llama, Mistral, Qwen2, Gemma, Phi-3, ...)
without per-model code.
"""

from __future__ import annotations

import torch
from torch import nn

from sdd_ray.config import ConfigError

# Integer fields that count layers from the bottom ("layers below k are dense"): k becomes the
# number of kept layers below k.
LAYER_THRESHOLD_FIELDS = ("max_window_layers", "first_k_dense_replace")
# Fields that hold a list of layer indices, remapped to the new numbering.
LAYER_INDEX_LIST_FIELDS = ("mlp_only_layers",)


class UnsupportedArchitectureError(ConfigError):
    """The model's decoder layers could not be found, so layers cannot be removed safely."""


def text_config(model: nn.Module):
    """The config holding `num_hidden_layers` (the text config of a multimodal model)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, module) of the decoder-layer list: the one ModuleList of num_hidden_layers entries."""
    config = text_config(model)
    num_layers = getattr(config, "num_hidden_layers", None)
    architecture = type(model).__name__
    if not isinstance(num_layers, int):
        raise UnsupportedArchitectureError(f"{architecture}: config has no num_hidden_layers; cannot find its decoder layers")
    candidates = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
        and len({type(layer) for layer in module}) == 1
    ]
    if len(candidates) != 1:
        found = ", ".join(name for name, _ in candidates) or "none"
        raise UnsupportedArchitectureError(
            f"{architecture}: expected exactly one list of {num_layers} identical decoder layers "
            f"(as model.layers in Llama, Mistral, Qwen2, Gemma, Phi-3), found {found}"
        )
    return candidates[0]


def check_prunable(config, trust_remote_code: bool = False) -> None:
    """Build the model of `config` on the meta device (no memory, no weights) and find its decoder layers."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    find_decoder_layers(skeleton)


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _update_config(config, keep: list[int], old_count: int) -> None:
    kept_set = set(keep)
    new_index = {old: new for new, old in enumerate(keep)}
    for key in list(config.to_dict()):
        current = getattr(config, key, None)
        if isinstance(current, (list, tuple)) and len(current) == old_count and key not in LAYER_INDEX_LIST_FIELDS:
            setattr(config, key, type(current)(current[i] for i in keep))
    for key in LAYER_THRESHOLD_FIELDS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            setattr(config, key, sum(1 for i in keep if i < value))
    for key in LAYER_INDEX_LIST_FIELDS:
        value = getattr(config, key, None)
        if isinstance(value, (list, tuple)):
            setattr(config, key, [new_index[i] for i in value if i in kept_set])
    config.num_hidden_layers = len(keep)


def remove_layers(model: nn.Module, layers: list[int]) -> nn.Module:
    """Remove the decoder layers `layers` (0-based) from `model` in place and return it."""
    name, decoder_layers = find_decoder_layers(model)
    old_count = len(decoder_layers)
    drop = sorted(set(layers))
    if not drop:
        return model
    if drop[0] < 0 or drop[-1] >= old_count:
        raise ValueError(f"layers to remove must be in 0..{old_count - 1}, got {drop}")
    if len(drop) >= old_count:
        raise ValueError(f"cannot remove all {old_count} layers")
    keep = [i for i in range(old_count) if i not in set(drop)]
    kept = nn.ModuleList([decoder_layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx
    _set_module(model, name, kept)
    _update_config(text_config(model), keep, old_count)
    return model


def contiguous_block(start: int, size: int) -> list[int]:
    """The 0-based layers of the block of `size` layers starting at `start`."""
    return list(range(start, start + size))
