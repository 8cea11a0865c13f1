"""Where a data spec's rows come from: a toy source, a local file or folder, a local copy of a hub data set, the hub.

`resolve` decides once, for every stage, and refuses what cannot be read whole: a path that does not
exist, a folder without data files, a folder mixing Parquet and JSON lines, and a distillation output
that did not finish (its `stats.json` missing or not `complete`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sdd_ray.errors import InputError
from sdd_ray.io import STAGE_MARKER

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
JSON_SUFFIXES = (".jsonl", ".json")

LOCAL_COPIES = {
    "openai/gsm8k": "gsm8k/{split}.jsonl",
    "gsm8k": "gsm8k/{split}.jsonl",
    "databricks/databricks-dolly-15k": "finetune/dolly_partial/{split}.jsonl",
    "tatsu-lab/alpaca": "finetune/alpaca_demo/{split}.jsonl",
}
"""Hub data sets -> their copy under the local data folder (hub layout, one JSON object a line).
The Dolly and Alpaca copies hold a subset of the hub's rows (see the data folder's README)."""

DATA_DIR_ENV = "SDD_RAY_DATA_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
"""Local copies of public data sets: `$SDD_RAY_DATA_DIR`, else a `shared/data` folder beside the repository."""


@dataclass(frozen=True)
class Source:
    """A resolved source: `kind` is toy, jsonl, parquet or hf; `files` the local files, in order."""

    kind: str
    name: str
    """The toy source, the hub name (`openai/gsm8k`), or the local path as given."""
    files: tuple[Path, ...] = ()
    config: str | None = None
    """The hub data set's config (`main` of `openai/gsm8k:main`)."""


def looks_local(source: str) -> bool:
    """Whether `source` names a path (it exists, or is spelled like one) rather than a hub data set."""
    path = Path(source).expanduser()
    return (path.suffix in DATA_SUFFIXES or path.exists() or source.startswith((".", "/", "~"))
            or source.count("/") > 1)


def source_type(source: str) -> str:
    """`toy`, `local` (a path) or `hf` (a hub name), from the string and the file system; never raises."""
    if source.startswith("toy:"):
        return "toy"
    return "local" if looks_local(source) else "hf"


def data_folder(path: Path) -> Path:
    """The folder holding a local source's files: a `data/` subfolder with data files (a distillation
    output keeps its rows there, beside `stats.json` and `rejected.jsonl`), else the folder itself."""
    rows = path / "data"
    if rows.is_dir() and any(p.suffix in DATA_SUFFIXES for p in rows.iterdir()):
        return rows
    return path


def local_data_dir() -> Path | None:
    """`$SDD_RAY_DATA_DIR`, else `DEFAULT_DATA_DIR` when it exists, else None (use the hub)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def local_copy(name: str, split: str) -> Path | None:
    """The local file standing in for hub data set `name`'s `split`, or None."""
    folder = local_data_dir()
    if folder is None or name not in LOCAL_COPIES:
        return None
    path = folder / LOCAL_COPIES[name].format(split=split)
    return path if path.is_file() else None


def unfinished_distillation(path: Path) -> str | None:
    """Why the distillation output `path` is not finished, or None (finished, or not a distillation output)."""
    marker = path / STAGE_MARKER
    written_by = json.loads(marker.read_text()).get("stage") if marker.is_file() else None
    if written_by != "distill" and not (path / "shards").is_dir():
        return None
    stats = path / "stats.json"
    if not stats.is_file():
        return "no stats.json: the run stopped before its end"
    if json.loads(stats.read_text()).get("complete") is not True:
        return "its stats.json says complete: false"
    return None


def _local(source: str, flag: str) -> Source:
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{flag} {source}: no such file or folder")
    if path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise InputError(f"{flag} {source}: not a {', '.join(DATA_SUFFIXES)} file")
        return Source("parquet" if path.suffix == ".parquet" else "jsonl", source, (path,))
    why = unfinished_distillation(path)
    if why:
        raise InputError(f"{flag} {source}: an unfinished distillation ({why}); finish it by rerunning the "
                         f"`sdd-ray distill` command that wrote it (same flags, --out {source}): it resumes")
    folder = data_folder(path)
    files = sorted(p for p in folder.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{flag} {source}: no data/*.parquet, *.parquet, *.jsonl or *.json files here")
    parquet = [p for p in files if p.suffix == ".parquet"]
    if parquet and len(parquet) < len(files):
        raise InputError(f"{flag} {source}: the folder mixes Parquet ({len(parquet)} files) and JSON lines "
                         f"({len(files) - len(parquet)} files); keep one format per folder")
    return Source("parquet" if parquet else "jsonl", source, tuple(files))


def resolve(spec, flag: str = "--data") -> Source:
    """The one reading of `spec.source`: toy, local files, the local copy of a hub data set, or the hub."""
    if spec.source.startswith("toy:"):
        return Source("toy", spec.source)
    if looks_local(spec.source):
        return _local(spec.source, flag)
    name, _, config = spec.source.partition(":")
    copy = local_copy(name, spec.split)
    if copy is not None:
        log.info("%s (%s): reading the local copy %s", spec.source, spec.split, copy)
        return Source("jsonl", str(copy), (copy,))
    return Source("hf", name, config=config or None)


def hub_dataset(source: Source, split: str, flag: str = "--data"):
    """The hub data set as a streaming `datasets.IterableDataset`; one line when it cannot be loaded."""
    import datasets

    try:
        return datasets.load_dataset(source.name, source.config, split=split, streaming=True)
    except (OSError, ValueError) as error:  # ConnectionError, DatasetNotFoundError (FileNotFoundError), bad split
        first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        raise InputError(f"{flag} {source.name}: not a local file or folder, and the Hugging Face data set "
                         f"could not be loaded ({first}); check the name, or give a local copy "
                         f"(${DATA_DIR_ENV})") from None


def has_rows(path: Path) -> bool:
    """Whether a local data file holds at least one row (a non-blank line, a Parquet row)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows > 0
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{path}: not a readable Parquet file ({error.__class__.__name__})") from None
    with open(path, "rb") as handle:
        return any(line.strip() for line in handle)
