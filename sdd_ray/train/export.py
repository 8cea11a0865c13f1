"""LoRA wrapping and export of a trained model as a plain Hugging Face checkpoint.

The export rebuilds the model from its base checkpoint, loads the trained weights, and for LoRA
folds the adapters into the base weights (`merge_and_unload`), so that the result loads with
`transformers` (and vLLM) alone. The adapter can be written beside it for peft users.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.train.config import LoraSpec


def apply_lora(model, lora: LoraSpec):
    """`model` wrapped with peft LoRA adapters on `lora.target_modules`; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished directory into place (the old one, if any, is removed first)."""
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def export_model(
    state_dict: dict,
    spec: ModelSpec,
    out: str | Path,
    lora: LoraSpec | None = None,
    adapter_out: str | Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the model of `state_dict` (keys of the trained module, peft-wrapped for LoRA) to `out`.

    `spec` names the base checkpoint the training started from; its tokenizer is copied along.
    """
    import torch

    from sdd_ray.models import load_model, load_tokenizer, save_model

    out = Path(out)
    base = load_model(spec.model_copy(update={"device": "cpu", "dtype": "float32"}), eval_mode=False)
    tokenizer = load_tokenizer(spec)
    if lora is not None:
        wrapped = apply_lora(base, lora)
        wrapped.load_state_dict(state_dict, strict=True)
        if adapter_out is not None:
            adapter_tmp = Path(f"{adapter_out}.tmp")
            wrapped.save_pretrained(adapter_tmp, safe_serialization=True)
            _replace_dir(adapter_tmp, Path(adapter_out))
        model = wrapped.merge_and_unload()
    else:
        base.load_state_dict(state_dict, strict=True)
        model = base
    model.to(getattr(torch, dtype))
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model.eval(), tokenizer, tmp)
    _replace_dir(tmp, out)
    return out
