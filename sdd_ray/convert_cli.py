"""`sdd-ray convert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console
from sdd_ray.config import ConfigError
from sdd_ray.convert import convert_gguf


def convert(
    gguf: Annotated[str, typer.Argument(help="A .gguf file, or a packaged model name (smollm2-135m).")],
    out: Annotated[Path | None, typer.Option(help="Directory for the HF checkpoint (default: the cache, reused by `--model GGUF`).")] = None,
    dtype: Annotated[str, typer.Option(help="bfloat16, float32 or float16: the dtype of the saved safetensors.")] = "bfloat16",
) -> None:
    """Convert a GGUF checkpoint into a plain Hugging Face checkpoint (safetensors, tokenizer, chat template)."""
    if dtype not in ("bfloat16", "float32", "float16"):
        raise ConfigError(f"command line: dtype: {dtype!r} is not one of bfloat16, float32, float16")
    path = convert_gguf(gguf, dtype, out)
    console.print(f"wrote {path}")
