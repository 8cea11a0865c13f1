"""Merge two safetensors checkpoints tensor by tensor, streaming from disk to disk.

Memory stays at about one tensor of each parent, the merged tensor and the output shard being
filled (`max_shard_bytes`): each tensor is read on its own (a `safe_open` held only while it is
read, so the mapped file pages are released too), merged, and appended to the current output
shard, which is written out as soon as it is full. Neither parent nor the result is ever whole in
memory, so a 70B merge needs a few GB, not hundreds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdd_ray.config import ConfigError
from sdd_ray.merge.schedule import TSetting, layer_index, resolve_t

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PRUNING_JSON = "pruning.json"
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


class MergeMismatchError(ConfigError):
    """The two checkpoints cannot be merged tensor by tensor (different tensors, shapes or depth)."""


@dataclass(frozen=True)
class TensorMeta:
    file: Path
    dtype: str
    """safetensors dtype code (F32, BF16, ...)."""
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Checkpoint:
    """The tensors of an HF checkpoint directory (single file or sharded), read one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tensors: dict[str, TensorMeta] = {}
        for file in self._weight_files():
            with safe_open(file, framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    view = handle.get_slice(name)
                    self.tensors[name] = TensorMeta(file, view.get_dtype(), tuple(view.get_shape()))

    @property
    def removed_layers(self) -> list[int] | None:
        """Layers removed by `sdd-ray prune`, when the directory holds its pruning.json."""
        record = self.path / PRUNING_JSON
        return json.loads(record.read_text()).get("removed_layers") if record.is_file() else None

    def _weight_files(self) -> list[Path]:
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return [self.path / name for name in sorted(set(weight_map.values()))]
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise MergeMismatchError(f"{self.path}: no *.safetensors weights")
        return files

    @property
    def num_layers(self) -> int:
        """Decoder layers, counted from the tensor names (`...layers.<i>.`)."""
        indices = {layer_index(name) for name in self.tensors} - {None}
        return max(indices) + 1 if indices else 0

    def torch_dtype(self, name: str) -> torch.dtype:
        return SAFETENSORS_DTYPES[self.tensors[name].dtype]

    def read(self, name: str) -> torch.Tensor:
        with safe_open(self.tensors[name].file, framework="pt", device="cpu") as handle:
            return handle.get_tensor(name)


def _layer_list(indices: set[int]) -> str:
    return ", ".join(str(i) for i in sorted(indices))


def check_compatible(a: Checkpoint, b: Checkpoint, limit: int = 20) -> None:
    """Raise `MergeMismatchError` naming every tensor that differs between `a` and `b`, and why."""
    problems = []
    if a.num_layers != b.num_layers:
        problems.append(f"decoder layers: {a.num_layers} in A vs {b.num_layers} in B")
    only_a = sorted(set(a.tensors) - set(b.tensors))
    only_b = sorted(set(b.tensors) - set(a.tensors))
    for side, names in (("A", only_a), ("B", only_b)):
        layers = {layer_index(name) for name in names} - {None}
        if layers:
            problems.append(f"layers only in {side}: {_layer_list(layers)}")
        problems += [f"{name}: only in {side}" for name in names if layer_index(name) is None]
    for name in sorted(set(a.tensors) & set(b.tensors)):
        if a.tensors[name].shape != b.tensors[name].shape:
            problems.append(f"{name}: shape {list(a.tensors[name].shape)} in A vs {list(b.tensors[name].shape)} in B")
    removed_a, removed_b = a.removed_layers, b.removed_layers
    if removed_a is not None and removed_b is not None and sorted(removed_a) != sorted(removed_b):
        problems.append(f"pruned blocks differ: A removed layers {removed_a}, B removed layers {removed_b}")
    elif problems and (removed_a is not None or removed_b is not None):
        problems.append(f"pruning.json: A removed layers {removed_a}, B removed layers {removed_b}")
    if problems:
        shown = problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])
        raise MergeMismatchError(
            f"cannot merge A={a.path} and B={b.path}: the checkpoints differ "
            "(only models of the same architecture, pruned at the same block, can be merged):\n  "
            + "\n  ".join(shown)
        )


class TensorShardWriter:
    """Append tensors to numbered safetensors shards, writing each shard once it reaches `max_bytes`."""

    def __init__(self, out: Path, max_bytes: int):
        self.out = out
        self.max_bytes = max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        if not self.pending:
            return
        path = self.out / f"shard-{len(self.shards):05d}.partial"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Give the shards their HF names (and write the index when there are several)."""
        self.flush()
        if len(self.shards) == 1:
            self.shards[0][0].replace(self.out / SINGLE_FILE)
            return [SINGLE_FILE]
        names, weight_map = [], {}
        for number, (path, tensors) in enumerate(self.shards, start=1):
            name = f"model-{number:05d}-of-{len(self.shards):05d}.safetensors"
            path.replace(self.out / name)
            names.append(name)
            weight_map.update({tensor: name for tensor in tensors})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / INDEX_FILE).write_text(json.dumps(index, indent=2))
        return names


def merge_checkpoints(
    base: Checkpoint,
    other: Checkpoint,
    out: Path,
    t: TSetting,
    method: Callable,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 1 << 30,
) -> dict[str, dict]:
    """Write `method(base_tensor, other_tensor, t)` for every tensor into `out`; per-tensor report.

    t = 0 keeps `base`, t = 1 gives `other`. `dtype` None keeps each base tensor's dtype (when the
    parents' dtypes differ the maths runs on float32 copies and the result is cast back).
    """
    check_compatible(base, other)
    num_layers = base.num_layers
    schedule = {name: resolve_t(t, name, num_layers) for name in base.tensors}  # fail before any work
    writer = TensorShardWriter(out, max_shard_bytes)
    report = {}
    for name in base.tensors:
        tensor_a, tensor_b = base.read(name), other.read(name)
        if not tensor_a.is_floating_point():  # integer/bool buffers: nothing to interpolate, keep the base's
            merged, info = tensor_a, {"t": schedule[name], "method": "copy", "theta": None}
        else:
            if tensor_a.dtype != tensor_b.dtype:
                tensor_a, tensor_b = tensor_a.float(), tensor_b.float()
            merged, slerp_info = method(tensor_a, tensor_b, schedule[name])
            merged = merged.to(dtype or base.torch_dtype(name))
            info = {"t": schedule[name], "method": slerp_info.method, "theta": slerp_info.theta}
        del tensor_a, tensor_b
        writer.add(name, merged)
        del merged
        report[name] = info
    writer.finish()
    return report
