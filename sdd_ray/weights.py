"""Checkpoint integrity: the safetensors files are whole and their tensors cover the config.

Two checks, so that no stage ever runs on randomly initialised layers or drops weights silently:

- before loading (`check_checkpoint`, cheap: safetensors headers only): every file is as long as its
  header says (a truncated copy fails here), and the decoder-layer indices in the tensor names are
  exactly 0..num_hidden_layers-1 (a config.json that disagrees with the weights fails here);
- after loading (`check_loading_info`): transformers' own list of missing and unexpected tensors is
  empty (tied weights are not missing).

Each failure is one `CheckpointError` line naming the file and the first offending tensor.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from sdd_ray.config import UserError

LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


class CheckpointError(UserError):
    """A checkpoint whose weights are damaged or do not match its config."""


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file, after checking the file holds every byte it promises."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if 8 + length > size:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its header alone needs {8 + length})")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not a safetensors file (unreadable header)") from None
    end = max((info["data_offsets"][1] for name, info in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its tensors need {8 + length + end})")
    return header


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (those its index names, when it has one)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [name for name in names if not (path / name).is_file()]
        if missing:
            raise CheckpointError(f"{path / missing[0]}: named by {index.name} but missing")
        return [path / name for name in names]
    return sorted(path.glob("*.safetensors"))


def check_checkpoint(path: str | Path) -> None:
    """Fail with one line unless every weight file is whole and the layers match `num_hidden_layers`."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return
    files = weight_files(path)
    tensors: dict[str, Path] = {}
    for file in files:
        tensors.update({name: file for name in read_header(file) if name != "__metadata__"})
    if not files:
        return
    config = json.loads((path / "config.json").read_text())
    text_config = config.get("text_config", config)
    expected = text_config.get("num_hidden_layers")
    if not isinstance(expected, int):
        return
    layers = {int(m.group(1)) for name in tensors if (m := LAYER_INDEX.search(name))}
    if not layers:
        return  # not a layer-indexed architecture this check understands; the load-time check still runs
    missing = sorted(set(range(expected)) - layers)
    extra = sorted(layers - set(range(expected)))
    if missing:
        example = next(name for name in sorted(tensors) if LAYER_INDEX.search(name)).replace(
            f".layers.{min(layers)}.", f".layers.{missing[0]}.", 1)
        raise CheckpointError(f"{path / 'config.json'}: num_hidden_layers is {expected} but the weights in {path} "
                              f"have {len(layers)} layers; first missing tensor {example}")
    if extra:
        first = next(name for name in sorted(tensors) if (m := LAYER_INDEX.search(name)) and int(m.group(1)) == extra[0])
        raise CheckpointError(f"{path / 'config.json'}: num_hidden_layers is {expected} but {tensors[first]} holds "
                              f"{len(layers)} layers; first unexpected tensor {first}")


def check_loading_info(path: str | Path, info: dict) -> None:
    """Raise unless transformers loaded every tensor of the model from the checkpoint and used every one."""
    for kind, words in (("missing_keys", "missing tensor"), ("unexpected_keys", "unexpected tensor"),
                        ("mismatched_keys", "tensor of the wrong shape")):
        found = sorted(str(key[0] if isinstance(key, tuple) else key) for key in info.get(kind) or ())
        if found:
            raise CheckpointError(f"{path}: the weights do not match config.json: {len(found)} {words}(s), "
                                  f"first {found[0]}")
