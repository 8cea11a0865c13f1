"""Real benchmarks (Open LLM Leaderboard v1 and neighbours) through lm-eval's own task definitions,
with the data read from local JSON-lines files where the hub cannot be reached.

The prompts, choices, metrics and filters are lm-eval's: for each task sdd_ray writes a YAML that
`include`s the installed lm-eval task file and changes only where the rows come from
(`dataset_path: json`, `dataset_kwargs.data_files`) and which splits exist. Groups (MMLU) get a YAML
that includes lm-eval's group file, so they aggregate as lm-eval does. Without a local data folder
nothing is rewritten and lm-eval reads the hub, so a user online gets the official numbers.

The data folder is `$SDD_RAY_DATA_DIR`, else `../shared/data` beside the repository root; it holds
`eval/<set>/<split>.jsonl` and `gsm8k/{train,test}.jsonl` in the hub's own row layouts, so lm-eval's
`process_docs`, `doc_to_text` and `doc_to_choice` read them unchanged. Where the local files differ
from the hub dataset:
- HellaSwag, ARC, PIQA, WinoGrande, OpenBookQA, CommonsenseQA have no `train` file. The split is
  dropped from the config, and lm-eval's own rule then draws few-shot examples from `validation`
  (leaving the scored document out when it is scored on `validation` too); on the hub they come
  from `train`. Zero-shot scores are unaffected; few-shot prompts differ from the hub's.
- OpenBookQA has only `validation` (500 rows); lm-eval scores the hub's `test` split (500 rows).
- MMLU is one file per split with a `subject` field for all 57 subjects, where the hub (`cais/mmlu`)
  has one configuration per subject: the rows are split by subject into the run's work folder.
- ARC `test` rows carry synthetic `id`s; no task reads them.
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict
from pathlib import Path

import yaml

from sdd_ray.config import ConfigError
from sdd_ray.data import DATA_DIR_ENV, DEFAULT_DATA_DIR
from sdd_ray.io import write_text

SPLIT_FIELDS = ("training_split", "validation_split", "test_split", "fewshot_split")
LOCAL_FILES = {
    "hellaswag": {"validation": "eval/hellaswag/validation.jsonl"},
    "arc_easy": {"validation": "eval/arc_easy/validation.jsonl", "test": "eval/arc_easy/test.jsonl"},
    "arc_challenge": {"validation": "eval/arc_challenge/validation.jsonl", "test": "eval/arc_challenge/test.jsonl"},
    "piqa": {"validation": "eval/piqa/validation.jsonl"},
    "winogrande": {"validation": "eval/winogrande/validation.jsonl"},
    "openbookqa": {"validation": "eval/openbookqa/validation.jsonl"},
    "commonsense_qa": {"validation": "eval/commonsense_qa/validation.jsonl"},
    "truthfulqa_mc1": {"validation": "eval/truthfulqa_mc/validation.jsonl"},
    "truthfulqa_mc2": {"validation": "eval/truthfulqa_mc/validation.jsonl"},
    "lambada_openai": {"test": "eval/lambada_openai/test.jsonl"},
    "gsm8k": {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
}
"""lm-eval task name -> {split: file under the data folder}, for the tasks with a local copy."""
MMLU_HUB_DATASET = "cais/mmlu"
MMLU_SPLITS = ("test", "validation", "dev")
"""Every lm-eval task over `cais/mmlu` (one per subject, `dataset_name` = subject) reads these files."""


def eval_data_dir(configured: str | None = None) -> Path | None:
    """The local data folder: `configured`, else `$SDD_RAY_DATA_DIR`, else `../shared/data` if present.

    None means no local copy: the tasks read the hub. A folder named explicitly must exist.
    """
    named = configured or os.environ.get(DATA_DIR_ENV)
    if named:
        path = Path(named).expanduser().resolve()
        if not (path / "eval").is_dir():
            source = "harness.data_dir" if configured else f"${DATA_DIR_ENV}"
            raise ConfigError(f"{source}={named}: no eval/ folder there (it should hold eval/<set>/<split>.jsonl)")
        return path
    return DEFAULT_DATA_DIR if (DEFAULT_DATA_DIR / "eval").is_dir() else None


def benchmark_data_dir(source: str = "auto", configured: str | None = None) -> Path | None:
    """The folder the real benchmarks read for `harness.data_source` and `harness.data_dir`; None: the hub."""
    if source == "hub":
        return None
    found = eval_data_dir(configured)
    if found is None and source == "local":
        raise ConfigError(
            f"harness.data_source=local but no data folder: set harness.data_dir (--data-dir) or ${DATA_DIR_ENV}, "
            f"or place it at {DEFAULT_DATA_DIR}"
        )
    return found


@functools.lru_cache(maxsize=1)
def official_task_manager():
    """lm-eval's `TaskManager` over its shipped task files (indexing them takes ~5 s: once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=True)


def official_task_index() -> dict:
    """lm-eval's index of its shipped task files: {name: Entry}."""
    return official_task_manager().task_index


def expand(name: str, index: dict) -> tuple[list[str], list[str]]:
    """The groups and the leaf tasks under an lm-eval task, group or tag name, in lm-eval's order."""
    from lm_eval.tasks._index import Kind

    entry = index[name]
    if entry.kind == Kind.TAG:
        children = sorted(entry.tags)
    elif entry.kind == Kind.GROUP:
        children = entry.cfg["task"]
        if not all(isinstance(child, str) for child in children):
            raise ConfigError(f"lm-eval group {name!r} defines tasks inline; sdd_ray cannot point it at local files")
    else:
        return [], [name]
    groups, leaves = ([name] if entry.kind == Kind.GROUP else []), []
    for child in children:
        child_groups, child_leaves = expand(child, index)
        groups += child_groups
        leaves += child_leaves
    return groups, leaves


def official_config(name: str, index: dict) -> dict:
    """lm-eval's config of one task, includes resolved, functions left as names (cheap to read)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(index[name].yaml_path, resolve_func=False)


def local_files_of(leaf: str, index: dict) -> list[str]:
    """The files under the data folder that one lm-eval task reads ([]: it has no local copy)."""
    if leaf in LOCAL_FILES:
        return list(LOCAL_FILES[leaf].values())
    if official_config(leaf, index).get("dataset_path") == MMLU_HUB_DATASET:
        return [f"eval/mmlu/{split}.jsonl" for split in MMLU_SPLITS]
    return []


def has_local_data(name: str, index: dict, data_dir: Path) -> bool:
    """Whether every leaf task under `name` has its files in `data_dir` (a partial folder is fine)."""
    if name not in index:
        return False
    try:
        _, leaves = expand(name, index)
    except ConfigError:  # a group with inline tasks: left to the hub
        return False
    files = [local_files_of(leaf, index) for leaf in leaves]
    return all(paths and all((data_dir / path).is_file() for path in paths) for paths in files)


def split_mmlu(data_dir: Path, workdir: Path) -> dict[str, dict[str, str]]:
    """Write the local MMLU rows one file per subject and split: {subject: {split: path}}."""
    files: dict[str, dict[str, str]] = defaultdict(dict)
    for split in MMLU_SPLITS:
        by_subject: dict[str, list[str]] = defaultdict(list)
        with open(data_dir / "eval" / "mmlu" / f"{split}.jsonl") as lines:
            for line in lines:
                by_subject[json.loads(line)["subject"]].append(line)
        for subject, rows in by_subject.items():
            path = write_text(workdir / "mmlu" / subject / f"{split}.jsonl", "".join(rows))
            files[subject][split] = str(path)
    return files


def local_overrides(config: dict, data_files: dict[str, str], cache_dir: Path) -> dict:
    """The config keys that move a task from its hub dataset to local `data_files`.

    Splits the local data lacks are dropped (set to null): lm-eval then falls back to the splits it
    has, by its own rules (few-shot from `validation` when there is no `train`).
    """
    overrides = {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files, "cache_dir": str(cache_dir)},
    }
    for field in SPLIT_FIELDS:
        if config.get(field) and config[field] not in data_files:
            overrides[field] = None
    if not any(config.get(f) in data_files for f in ("validation_split", "test_split")):
        raise ConfigError(f"lm-eval task {config['task']!r}: no local file for its evaluation split")
    return overrides


def _write_including_yaml(path: Path, official: Path, overrides: dict) -> None:
    write_text(path, yaml.safe_dump({"include": str(official), **overrides}, sort_keys=False))


def prepare_local_benchmarks(names: list[str], workdir: str | Path, data_dir: Path) -> Path:
    """Write, into `workdir`, a YAML per task (and group) under `names` that reads `data_dir`.

    Index `workdir` with `TaskManager(include_path=workdir)`; the tasks keep lm-eval's names.
    """
    workdir = Path(workdir)
    index = official_task_index()
    cache_dir = workdir / "hf_datasets_cache"
    mmlu_files: dict[str, dict[str, str]] | None = None
    for name in names:
        groups, leaves = expand(name, index)
        for group in groups:
            _write_including_yaml(workdir / "groups" / f"{group}.yaml", index[group].yaml_path, {})
        for leaf in leaves:
            config = official_config(leaf, index)
            if leaf in LOCAL_FILES:
                files = {split: str(data_dir / rel) for split, rel in LOCAL_FILES[leaf].items()}
            else:
                mmlu_files = mmlu_files or split_mmlu(data_dir, workdir)
                files = mmlu_files[config["dataset_name"]]
            overrides = {"task": leaf, **local_overrides(config, files, cache_dir)}
            _write_including_yaml(workdir / "tasks" / f"{leaf}.yaml", index[leaf].yaml_path, overrides)
    return workdir
