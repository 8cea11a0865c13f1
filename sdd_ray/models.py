"""Model I/O in one place: load any Hugging Face causal LM, save a plain HF checkpoint.

Loading accepts a local checkpoint directory or a hub id, reads safetensors only (pickle-based
`.bin` weights can execute code), and runs checkpoint-supplied code only when the spec says
`trust_remote_code: true`. Saving writes `config.json`, `model.safetensors` and the tokenizer files,
which `transformers` and vLLM load with no sdd_ray code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sdd_ray.config import ModelSpec
from sdd_ray.convert import convert_gguf
from sdd_ray.weights import check_checkpoint, check_loading_info

if TYPE_CHECKING:
    import torch

TOY_TEACHER = Path(__file__).parent / "toy" / "teacher"


class ModelNotFoundError(FileNotFoundError):
    """A model that is not there, or not a checkpoint this transformers can load; one line."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")
"""Files of which a local checkpoint needs at least one for its tokenizer to load."""


def as_spec(model: str | Path | ModelSpec) -> ModelSpec:
    """A `ModelSpec` from a spec, a path or a hub id; `toy-teacher` names the committed toy teacher."""
    if isinstance(model, ModelSpec):
        return model
    model = str(model)
    if model == "toy-teacher":
        model = str(TOY_TEACHER)
    return ModelSpec(path=model)


def resolve_device(spec: ModelSpec) -> torch.device:
    import torch  # here, not at the top: `sdd-ray --help` and the CLI's error handling import this module

    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec.device)


def resolve_dtype(spec: ModelSpec) -> torch.dtype:
    import torch

    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    device = resolve_device(spec)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_model_exists(spec: ModelSpec) -> None:
    """Fail early with a clear message when the model is neither on disk nor on the hub.

    A spec converted from GGUF (`spec.gguf`) is converted here on first use, once, into its cache path.
    """
    if spec.gguf:
        convert_gguf(spec.gguf, spec.dtype, out=spec.path)
    path = Path(spec.path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: not a Hugging Face checkpoint (no config.json)")
        if not any(path.glob("*.safetensors")):
            raise ModelNotFoundError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
        check_architecture(path, spec.trust_remote_code)
        check_checkpoint(path)  # truncated files, layers that disagree with config.json
        return
    looks_like_hub_id = spec.path.count("/") == 1 and not spec.path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelNotFoundError(f"model {spec.path!r}: no such directory, and not a hub id (org/name)")
    from huggingface_hub import file_exists
    from huggingface_hub.errors import HfHubHTTPError

    try:
        found = file_exists(spec.path, "config.json", revision=spec.revision)
    except (HfHubHTTPError, OSError) as error:
        raise ModelNotFoundError(
            f"model {spec.path!r}: not a local directory, and the hub could not be reached ({error.__class__.__name__})"
        ) from None
    if not found:
        raise ModelNotFoundError(f"model {spec.path!r}: not a local directory, and not found on the hub")


def check_architecture(path: Path, trust_remote_code: bool = False) -> None:
    """Refuse a checkpoint whose `model_type` this transformers does not know (unless it ships its own code)."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        config = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(f"{path}/config.json: not valid JSON ({error.__class__.__name__})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if trust_remote_code and isinstance(config, dict) and config.get("auto_map"):
        return
    if model_type not in CONFIG_MAPPING:
        raise ModelNotFoundError(
            f"{path}: architecture model_type {model_type!r} is unknown to transformers {__version__}; "
            "upgrade transformers, or set trust_remote_code if the checkpoint ships its own code")


def check_tokenizer_files(path: Path) -> None:
    """A local checkpoint has tokenizer files (without them transformers ends in a misleading sentencepiece hint)."""
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelNotFoundError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...); copy them "
                                 "from the model this checkpoint was made from")


def check_same_vocabulary(target: ModelSpec, draft: ModelSpec, flags: tuple[str, str] = ("--target", "--draft")) -> None:
    """A draft model proposes token ids the target verifies: both need one vocabulary (checked from config.json)."""
    from transformers import AutoConfig

    if not (Path(target.path).is_dir() and Path(draft.path).is_dir()):
        return  # hub models: their configs are read (and the engines check) when they load
    sizes = []
    for spec in (target, draft):
        config = AutoConfig.from_pretrained(spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        sizes.append((config.get_text_config() if hasattr(config, "get_text_config") else config).vocab_size)
    if sizes[0] != sizes[1]:
        raise ModelNotFoundError(f"{flags[1]} {draft.path}: vocabulary of {sizes[1]} tokens, but {flags[0]} "
                                 f"{target.path} has {sizes[0]}; a draft must share its target's tokenizer")


def load_tokenizer(model: str | Path | ModelSpec):
    from transformers import AutoTokenizer

    spec = as_spec(model)
    check_model_exists(spec)
    check_tokenizer_files(Path(spec.path))
    tokenizer = AutoTokenizer.from_pretrained(
        spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: str | Path | ModelSpec, eval_mode: bool = True):
    """The causal LM of `model` on its device and dtype (float32 on the CPU by default)."""
    from transformers import AutoModelForCausalLM

    spec = as_spec(model)
    check_model_exists(spec)
    loaded, info = AutoModelForCausalLM.from_pretrained(
        spec.path,
        revision=spec.revision,
        dtype=resolve_dtype(spec),
        trust_remote_code=spec.trust_remote_code,
        use_safetensors=True,
        output_loading_info=True,
    )
    check_loading_info(spec.path, info)  # never run on randomly initialised or dropped weights
    if resolve_device(spec).type != "cpu":  # loaded on the CPU; a ZeRO-3 model is placed by DeepSpeed instead
        loaded.to(resolve_device(spec))
    return loaded.eval() if eval_mode else loaded


def load_model_and_tokenizer(model: str | Path | ModelSpec, eval_mode: bool = True):
    return load_model(model, eval_mode), load_tokenizer(model)


def save_model(model, tokenizer, out: str | Path) -> Path:
    """Save a plain HF checkpoint (safetensors) with its tokenizer."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def model_num_layers(model: str | Path | ModelSpec) -> int:
    """`num_hidden_layers` from the checkpoint's config, without loading weights."""
    return int(text_config(model).num_hidden_layers)


def text_config(model: str | Path | ModelSpec):
    """The checkpoint's (text) config, without loading weights."""
    from transformers import AutoConfig

    spec = as_spec(model)
    check_model_exists(spec)
    config = AutoConfig.from_pretrained(spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    return config.get_text_config() if hasattr(config, "get_text_config") else config
