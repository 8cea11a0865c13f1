"""LoRA wrapping and export of a trained model as a plain Hugging Face checkpoint.

The export builds the architecture of the base checkpoint with no weights, puts the trained weights
in it, and for LoRA folds the adapters into the base weights (`merge_and_unload`), so that the
result loads with `transformers` (and vLLM) alone. The adapter can be written beside it for peft users.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ModelSpec
from sdd_ray.finetune.config import LoraSpec
from sdd_ray.io import staged
from sdd_ray.models import load_tokenizer, save_model


def apply_lora(model, lora: LoraSpec):
    """`model` wrapped with peft LoRA adapters on `lora.target_modules`; only the adapters train.

    The adapters are float32 even on a bfloat16 base (`autocast_adapter_dtype`): an AdamW step on a
    LoRA weight is often below bfloat16's resolution (8 bits of mantissa: an update under ~1/256 of
    the weight is rounded away), so pure-bf16 adapters learn slowly or not at all. They are a small
    fraction of the parameters, so fp32 adapters cost little memory; the frozen base stays bf16.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def empty_model(spec: ModelSpec, dtype):
    """The architecture of `spec`'s checkpoint with no weights (meta tensors), for a state dict to fill."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=spec.trust_remote_code)


def export_model(
    state_dict: dict,
    spec: ModelSpec,
    out: str | Path,
    lora: LoraSpec | None = None,
    adapter_out: str | Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the model of `state_dict` (keys of the trained module, peft-wrapped for LoRA) to `out` in `dtype`.

    The tensors of `state_dict` become the model's weights (`assign`, no copy), and the dict is
    emptied, so that casting to `dtype` frees each old tensor as it goes: the export holds one set
    of weights, not the old three (a reloaded base, a float32 copy, a cast copy). LoRA adapters are
    folded in from their training precision, in place: a module that shares these tensors (the
    trained one, on the CPU) is changed too, so export last. `spec` names the base checkpoint
    (architecture, tokenizer).
    """
    import torch

    out = Path(out)
    model = empty_model(spec, getattr(torch, dtype))
    if lora is not None:
        model = apply_lora(model, lora)
    model.load_state_dict(state_dict, strict=True, assign=True)
    state_dict.clear()
    if lora is not None:
        if adapter_out is not None:
            with staged(adapter_out) as adapter_tmp:
                model.save_pretrained(adapter_tmp, safe_serialization=True)
        model = model.merge_and_unload()
    model.tie_weights()
    model.to(getattr(torch, dtype))
    with staged(out) as tmp:
        save_model(model.eval(), load_tokenizer(spec), tmp)
    return out
