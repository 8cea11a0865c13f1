"""Atomic file output: every file is written to a temporary name and renamed into place.

A reader (a resumed job, the pipeline's cache, a user) therefore sees either the old file or the
whole new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _tmp_path(path: Path) -> Path:
    # Unique per process, so that two writers of one path never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(data, path: str | Path) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str))


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Save a matplotlib figure as PNG (dpi 120 unless given) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, **{"dpi": 120, **savefig_kwargs})
    plt.close(fig)
    tmp.replace(path)
    return path
