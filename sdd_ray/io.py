"""Atomic output: every file, and every directory a stage publishes, is written aside and renamed into place.

A reader (a resumed job, the pipeline's cache, a user) therefore sees either the old output or the
whole new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
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


def staging_dir(out: str | Path) -> Path:
    """A fresh, empty sibling of `out` to write a directory into; `publish_dir` then puts it in place."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: str | Path, out: str | Path) -> Path:
    """Swap the finished directory `tmp` in as `out` (whatever `out` held is removed first)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    Path(tmp).replace(out)
    return out
