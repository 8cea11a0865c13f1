"""Atomic output: every file, and every directory a stage publishes, is written aside and renamed into place.

A reader (a resumed job, the pipeline's cache, a user) therefore sees either the old output or the
whole new one, never a half-written one. What is written aside is named `.NAME.<pid>.tmp` beside
`NAME`: a failed write removes it (`staged`), and one a killed process left is removed by the next
writer of the same path (`clear_stale`). A full disk is one line (`DiskFullError`), not a traceback.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdd_ray.errors import ConfigError

STAGE_MARKER = ".sdd-ray-stage.json"
"""The record a stage writes into its output folder: what made it, checked on resume (`guards.claim_out`)."""


class DiskFullError(ConfigError):
    """The disk filled up while an output was written; nothing half-written was published."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a full disk or quota: an OSError, or a library's own error wrapping one (safetensors')."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return any(sign in text for sign in ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded"))


@contextmanager
def disk_full_as_error(out: str | Path, flag: str = "--out") -> Iterator[None]:
    """Turn a full disk inside the block into a `DiskFullError` naming `out` and the space left."""
    try:
        yield
    except Exception as error:
        if not is_disk_full(error):
            raise
        existing = next(p for p in (Path(out), *Path(out).absolute().parents) if p.exists())
        free = shutil.disk_usage(existing).free / 2**20
        raise DiskFullError(f"{flag} {out}: no space left on the device while writing ({free:.0f} MiB free now); "
                            f"free some space or give {flag} a folder on another disk") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clear_stale(path: str | Path) -> list[Path]:
    """Remove what dead processes left while writing `path` (`.NAME.<pid>.tmp` files and folders); the removed."""
    path = Path(path)
    removed = []
    for item in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = item.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item)
    return removed


def _tmp_path(path: Path) -> Path:
    # Unique per process, so that two writers of one path never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def staged_file(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """A temporary name for `path`: renamed into place when the block ends, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)
    tmp = _tmp_path(path)
    try:
        with disk_full_as_error(path, flag):
            yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_text(path: str | Path, text: str) -> Path:
    with staged_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data, path: str | Path) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str))


def staging_dir(out: str | Path) -> Path:
    """A fresh, empty sibling of `out` to write a directory into; `publish_dir` then puts it in place."""
    out = Path(out)
    clear_stale(out)
    tmp = _tmp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


@contextmanager
def staged(out: str | Path, flag: str = "--out") -> Iterator[Path]:
    """A staging folder for `out`: published as `out` when the block ends, removed when it fails."""
    tmp = staging_dir(out)
    try:
        with disk_full_as_error(out, flag):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out)


def publish_dir(tmp: str | Path, out: str | Path) -> Path:
    """Swap the finished directory `tmp` in as `out` (whatever `out` held is removed first)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    Path(tmp).replace(out)
    return out
