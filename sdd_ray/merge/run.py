"""Run a merge: fold LoRA adapters if given, stream the SLERP merge, copy config and tokenizer, write merge.json."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from sdd_ray.config import ConfigError, ModelSpec
from sdd_ray.guards import check_out
from sdd_ray.io import staged, write_json
from sdd_ray.merge.config import MergeConfig
from sdd_ray.merge.merge import Checkpoint, merge_checkpoints
from sdd_ray.merge.schedule import get_merge_method
from sdd_ray.models import ModelNotFoundError, as_spec
from sdd_ray.weights import check_checkpoint

ADAPTER_CONFIG = "adapter_config.json"
METADATA_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
)
"""Non-weight files of an HF checkpoint that the merged model takes from its base parent."""


def copy_metadata(source: Path, target: Path, dtype: str | None = None) -> None:
    """Copy config and tokenizer files; with `dtype`, record it in config.json."""
    for name in METADATA_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if dtype is not None and (target / "config.json").is_file():
        config = json.loads((target / "config.json").read_text())
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
        (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _adapter_base(adapter_dir: Path) -> Path:
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelNotFoundError(f"{adapter_dir}: {ADAPTER_CONFIG} names no base_model_name_or_path")
    path = Path(as_spec(base).path)
    if not path.is_absolute() and not path.exists() and (adapter_dir / path).exists():
        path = adapter_dir / path
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{adapter_dir}: the adapter's base model {base!r} is not a local checkpoint; merges read local files only"
        )
    return path


def fold_adapter(adapter_dir: Path, out: Path, trust_remote_code: bool = False) -> Path:
    """Write base + LoRA (peft `merge_and_unload`) as a plain checkpoint in `out`, in the base's dtype.

    This loads one whole model (the adapter's base); the merge itself then streams as usual.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir = _adapter_base(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype="auto", trust_remote_code=trust_remote_code, use_safetensors=True
    )
    folded = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    folded.save_pretrained(out, safe_serialization=True)
    copy_metadata(base_dir, out)
    for name in METADATA_FILES[2:]:  # a tokenizer saved beside the adapter wins over the base's
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, out / name)
    return out


def prepare_parent(spec: ModelSpec, scratch: Path) -> tuple[Path, dict]:
    """A local checkpoint directory for one parent (folding a LoRA adapter), and what was done."""
    path = Path(spec.path)
    if not path.is_dir():
        raise ModelNotFoundError(f"model {spec.path!r}: no such directory (merges read local checkpoints only)")
    if (path / ADAPTER_CONFIG).is_file() and not any(path.glob("model*.safetensors")):
        folded = fold_adapter(path, scratch, spec.trust_remote_code)
        return folded, {"path": spec.path, "lora_adapter": True, "adapter_base": str(_adapter_base(path))}
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path}: not a Hugging Face checkpoint (no config.json) nor a LoRA adapter")
    return path, {"path": spec.path, "lora_adapter": False}


def check_parent_weights(path: Path) -> None:
    """Whole safetensors files whose layers match config.json (a LoRA adapter's folder has no config.json)."""
    if path.is_dir():
        check_checkpoint(path)


def _check_layer_range(cfg: MergeConfig, num_layers: int) -> None:
    if cfg.layer_range is not None and list(cfg.layer_range) != [0, num_layers]:
        raise ConfigError(
            f"layer_range {cfg.layer_range}: only whole-model merges are supported; "
            f"the models have {num_layers} layers, so use [0, {num_layers}]"
        )


def _method_counts(tensors: dict[str, dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in tensors.values():
        counts[info["method"]] = counts.get(info["method"], 0) + 1
    return counts


def run_merge(cfg: MergeConfig, out: str | Path) -> dict:
    """Merge `cfg.models` into the HF checkpoint `out` (written whole, then renamed); returns merge.json."""
    import torch

    out = Path(out)
    check_out(out, "merge", [("--models", spec.path) for spec in cfg.models], own_files=("merge.json",))
    for spec in cfg.models:
        check_parent_weights(Path(spec.path))
    if out.exists() and any(out.iterdir()) and not (out / "merge.json").is_file():
        raise ConfigError(f"--out {out}: exists and is not a merge output; choose another directory")
    started = time.time()
    base_index = cfg.base_index
    with staged(out) as partial:  # removed if anything below fails; published whole at the end
        with tempfile.TemporaryDirectory(prefix=".fold-", dir=partial.parent) as scratch:
            parents = [prepare_parent(spec, Path(scratch) / f"parent{i}") for i, spec in enumerate(cfg.models)]
            base_dir, other_dir = parents[base_index][0], parents[1 - base_index][0]
            base, other = Checkpoint(base_dir), Checkpoint(other_dir)
            _check_layer_range(cfg, base.num_layers)
            tensors = merge_checkpoints(
                base, other, partial, cfg.t, get_merge_method(cfg.merge_method),
                dtype=getattr(torch, cfg.dtype) if cfg.dtype else None,
                max_shard_bytes=int(cfg.max_shard_mb * 2**20),
            )
            copy_metadata(base_dir, partial, cfg.dtype)
        summary = {
            "method": cfg.merge_method,
            "models": [info for _, info in parents],
            "base_model": cfg.models[base_index].path,
            "t": cfg.model_dump(mode="json")["t"],
            "dtype": cfg.dtype,
            "num_layers": base.num_layers,
            "num_tensors": len(tensors),
            "num_parameters": sum(meta.numel for meta in base.tensors.values()),
            "methods": _method_counts(tensors),
            "seconds": round(time.time() - started, 3),
            "tensors": tensors,
        }
        write_json(summary, partial / "merge.json")
    return summary

