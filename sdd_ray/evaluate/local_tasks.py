"""Local lm-eval tasks: the toy world's held-out examples and GSM8K from any data source.

The task definitions ship as YAML in `tasks/`. At run time the data files are written (toy tasks,
from `sdd_ray.toy.tasks.generate(task, n, "eval", seed)`: the very rows the built-in evaluator
scores; GSM8K: the rows of `harness.gsm8k`) and, beside them, one small YAML per task that
`include`s the shipped definition and sets `dataset_kwargs.data_files`. That folder is what `TaskManager(include_path=...)` indexes, and it
works unchanged with the `lm_eval` command line (`--include_path`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sdd_ray.config import ConfigError
from sdd_ray.data import DataSpec, iter_records
from sdd_ray.io import write_text
from sdd_ray.prompts import instruction_prompt
from sdd_ray.toy.tasks import generate

TASK_DIR = Path(__file__).parent / "tasks"
TOY_TASKS = {"toy_arith": "arith", "toy_facts": "facts", "toy_instruct": "instruct"}
LOCAL_TASKS = (*TOY_TASKS, "gsm8k_local")


def toy_harness_rows(task: str, n: int, seed: int = 0) -> list[dict]:
    """The toy `eval` rows of `task` with the prompt the built-in evaluator gives the model."""
    rows = []
    for r in generate(task, n, "eval", seed):
        row = {"id": r["id"], "answer": r["answer"]}
        if task == "facts":
            # scored by option log-likelihood after the bare question, as `evaluate_rows`
            row.update(prompt=instruction_prompt(r["question"]), choices=r["choices"], gold_index=r["gold_index"])
        else:
            row["prompt"] = instruction_prompt(r["instruction"], r["input"])
        rows.append(row)
    return rows


def _write_jsonl(rows: list[dict], path: Path) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def gsm8k_rows(spec: DataSpec) -> list[dict]:
    """The records of `spec` as mappings (lm-eval reads them from a file that sdd_ray writes)."""
    try:
        return [json.loads(r) if isinstance(r, str) else r for r in iter_records(spec)]
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise ConfigError(f"gsm8k_local: {spec.source}: {error} (set harness.gsm8k)") from None


def prepare_local_tasks(names: list[str], workdir: str | Path, n_toy: int, seed: int, gsm8k: DataSpec) -> Path:
    """Write the data and including YAMLs of the local tasks among `names` into `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name not in LOCAL_TASKS:
            continue
        if name in TOY_TASKS:
            data = _write_jsonl(toy_harness_rows(TOY_TASKS[name], n_toy, seed), workdir / f"{name}.jsonl")
        else:
            data = _write_jsonl(gsm8k_rows(gsm8k), workdir / f"{name}.jsonl")
        spec = {
            "include": str(TASK_DIR / f"{name}.yaml"),
            "task": name,
            "dataset_kwargs": {"data_files": {"test": str(data)}},
        }
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return workdir
