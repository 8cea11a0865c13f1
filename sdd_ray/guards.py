"""Guards on inputs and outputs: nothing lost, nothing silently wrong.

Three ideas, shared by every stage and by the pipeline's cache:

- a *fingerprint* of a file or folder (size + a sha256 of the content for small files, size +
  modification time for large ones), so that "the same input" means the same content, not the same
  path: the pipeline's cache keys and a stage folder's resume record both use it;
- an *output claim*: a stage writes only into a new folder, an empty one, or one it wrote before
  (its marker file `.sdd-ray-stage.json`, or the stage's own result file), never into one of its
  inputs; a resume checks that the recorded settings and input fingerprints are the ones given now;
- an *output lock*: an advisory lock (`flock`) per `--out` folder, held while a run writes there, so a
  second run on the same folder refuses at once, naming the first one's pid;
- a *resource check*: workers x resources per worker against what the Ray cluster has in all, or can
  reach through its autoscaler, so a job that can never be scheduled fails with the numbers instead of
  waiting forever, and one the autoscaler can serve waits (bounded) for the nodes.

Every refusal is an `InputError` (a `UserError`): the CLI prints it as one line and exits 2.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from sdd_ray.convert import cache_root
from sdd_ray.errors import InputError, UserError  # noqa: F401  (InputError is raised here and re-exported)
from sdd_ray.io import STAGE_MARKER, write_json
from sdd_ray.runtime import max_cluster_resources

SMALL_FILE = 64 * 2**20
"""Files up to this size are fingerprinted by content (sha256); larger ones by size + mtime."""


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= SMALL_FILE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return f"{stat.st_size}:{digest.hexdigest()[:16]}"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def fingerprint(path: str | Path) -> str | None:
    """A short digest of a file's or folder's content; None when `path` is not a local file or folder.

    A folder's digest covers every file under it (names and fingerprints) except hidden ones (temporary
    files, stage markers), so replacing weights at the same path changes it, and so does adding a file.
    """
    path = Path(path)
    if path.is_file():
        return _file_fingerprint(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path)
        if item.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}={_file_fingerprint(item)}\n".encode())
    return digest.hexdigest()[:16]


def _overlaps(out: Path, source: Path) -> bool:
    out, source = out.expanduser().resolve(), source.expanduser().resolve()
    return out == source or source in out.parents or out in source.parents


def check_out(out: str | Path, stage: str, inputs: dict | list[tuple[str, str | Path | None]], own_files: tuple[str, ...] = (),
              flag: str = "--out") -> Path:
    """Refuse an output that is a file, overlaps an input, or is a non-empty folder another program wrote.

    `inputs` maps a flag (`--model`) to its local path (hub ids and `toy:` sources are skipped; a list of
    pairs where a flag repeats);
    `own_files` are files whose presence shows the folder is an earlier output of this stage.
    """
    out = Path(out)
    for name, source in (inputs.items() if isinstance(inputs, dict) else inputs):
        if source is None or not Path(source).exists():
            continue
        if _overlaps(out, Path(source)):
            raise InputError(f"{flag} {out}: is (or overlaps) the input {name} {source}; writing there would "
                             f"replace it; give {flag} a new folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: is a file; give {flag} a folder (new or empty)")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in (STAGE_MARKER, *own_files)):
        raise InputError(f"{flag} {out}: a non-empty folder that `sdd-ray {stage}` did not write; "
                         f"give {flag} a new or empty folder")
    marker = out / STAGE_MARKER
    if marker.is_file():
        written_by = json.loads(marker.read_text()).get("stage")
        if written_by != stage:
            raise InputError(f"{flag} {out}: holds the output of `sdd-ray {written_by}`, not `{stage}`; "
                             f"give {flag} a new folder")
    lock_out(out, flag)
    return out


_LOCKS: dict[str, int] = {}
"""Lock file -> open descriptor, for the output folders this process writes."""


def lock_file(out: str | Path) -> Path:
    """The lock file of an output folder: in the cache (`$SDD_RAY_CACHE/locks`), named by the folder's full path,
    so that nothing is left beside `--out` and two spellings of one folder share one lock."""
    resolved = str(Path(out).expanduser().resolve())
    return cache_root() / "locks" / f"out-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.lock"


def lock_out(out: str | Path, flag: str = "--out") -> None:
    """Hold an advisory lock on `out` until `release_outs` (or the process ends); refuse one another run holds.

    The lock file holds the holder's pid, read by the run that is refused.
    """
    lock = lock_file(out)
    if str(lock) in _LOCKS:
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(f"{flag} {out}: another run is writing there (pid {holder}); wait for it to end, "
                         f"or give {flag} another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[str(lock)] = fd


def release_outs() -> None:
    """Release every output lock this process holds (the CLI does it when a command ends)."""
    while _LOCKS:
        _, fd = _LOCKS.popitem()
        os.close(fd)


def claim_out(out: str | Path, stage: str, record: dict, overwrite: bool = False,
              clear: tuple[str, ...] = (), flag: str = "--out") -> None:
    """Record `record` (settings and input fingerprints) in `out`, or check it against an earlier record.

    A resume with a different record stops, naming what differs; with `overwrite` the earlier output
    (`clear`: the names this stage writes) is removed first and the stage starts over.
    """
    out = Path(out)
    marker = out / STAGE_MARKER
    if marker.is_file():
        before = json.loads(marker.read_text()).get("record", {})
        changed = sorted(key for key in set(before) | set(record) if before.get(key) != record.get(key))
        if changed and not overwrite:
            details = "; ".join(f"{key}: {_short(before.get(key))} -> {_short(record.get(key))}" for key in changed[:3])
            raise InputError(f"{flag} {out}: holds a {stage} run with other inputs or settings ({details}); "
                             f"give {flag} a new folder, or pass --overwrite to start over")
        start_over = bool(changed)
    else:
        start_over = overwrite
    if start_over:
        for name in clear:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_json({"stage": stage, "record": record}, marker)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def model_record(spec) -> dict:
    """A model as a resume record sees it: a local one by content (`m` and `./m/` are one), a hub one by name."""
    found = fingerprint(spec.path)
    return {"fingerprint": found} if found is not None else {"path": str(spec.path), "revision": spec.revision}


def source_record(source: str) -> dict:
    """A data source as a resume record sees it: a local file or folder by content, anything else by name."""
    found = fingerprint(source)
    return {"fingerprint": found} if found is not None else {"source": source}


SCALE_UP_TIMEOUT_S = 900.0
"""How long a resource check waits for an autoscaler to add nodes (env `SDD_RAY_SCALE_UP_TIMEOUT_S`)."""


def check_cluster_resources(what: str, workers: int, cpus_per_worker: float = 0.0, gpus_per_worker: float = 0.0,
                            flags: str = "--num-workers or --cpus-per-worker", timeout_s: float | None = None) -> None:
    """Refuse `workers` x resources beyond what the Ray cluster has or its autoscaler can add (they would wait
    forever); when only the autoscaler can provide them, ask it to and wait up to `timeout_s`, saying so."""
    import ray

    bundle = {r: per for r, per in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)) if per}
    most = max_cluster_resources()
    total = ray.cluster_resources()
    for resource, per_worker in bundle.items():
        need, have = workers * per_worker, float(total.get(resource, 0.0))
        reachable = max(have, float(most.get(resource, 0.0)))
        if need > reachable + 1e-9:
            scale = f" (its autoscaler: at most {reachable:g})" if reachable > have else ""
            raise InputError(f"{what}: {workers} workers x {per_worker:g} {resource} = {need:g} {resource}, but the "
                             f"Ray cluster has {have:g} {resource} in all{scale}; lower {flags}")
    if _lacking(bundle, workers, total):
        _wait_for_scale_up(what, bundle, workers, timeout_s)


def _lacking(bundle: dict[str, float], workers: int, total: dict) -> dict[str, float]:
    """What the cluster lacks now of `workers` x `bundle`: {resource: missing amount}."""
    return {r: workers * per - float(total.get(r, 0.0)) for r, per in bundle.items()
            if workers * per > float(total.get(r, 0.0)) + 1e-9}


def _wait_for_scale_up(what: str, bundle: dict[str, float], workers: int, timeout_s: float | None,
                       poll_s: float = 5.0) -> None:
    """Ask the autoscaler for `workers` x `bundle` and wait until the cluster holds it, at most `timeout_s`."""
    import ray
    from ray.autoscaler.sdk import request_resources

    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("SDD_RAY_SCALE_UP_TIMEOUT_S", SCALE_UP_TIMEOUT_S))
    missing = ", ".join(f"{amount:g} {r}" for r, amount in _lacking(bundle, workers, ray.cluster_resources()).items())
    print(f"{what}: waiting up to {timeout_s:g} s for the autoscaler to add {missing}", file=sys.stderr, flush=True)
    request_resources(bundles=[bundle] * workers)
    deadline = time.monotonic() + timeout_s
    try:
        while _lacking(bundle, workers, ray.cluster_resources()):
            if time.monotonic() >= deadline:
                raise InputError(f"{what}: the autoscaler did not add {missing} within {timeout_s:g} s "
                                 f"(SDD_RAY_SCALE_UP_TIMEOUT_S); check the cluster's node limits and quotas")
            time.sleep(poll_s)
    finally:
        request_resources(bundles=[])  # the job's own actors hold the nodes from here
    print(f"{what}: the cluster now has the resources", file=sys.stderr, flush=True)


def check_out_file(out: str | Path, inputs: dict | list = (), flag: str = "--out") -> Path:
    """An output that is one file (results.json, specdec.json): not a folder, not one of the inputs."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{flag} {out}: is a folder; give {flag} a file name (e.g. {out / 'results.json'})")
    for name, source in (inputs.items() if isinstance(inputs, dict) else inputs):
        if source is not None and Path(source).exists() and _overlaps(out, Path(source)):
            raise InputError(f"{flag} {out}: is (or is inside) the input {name} {source}; give {flag} another file")
    return out
