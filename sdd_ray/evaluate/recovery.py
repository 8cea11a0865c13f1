"""Average accuracy and recovery against the unpruned baseline, as the paper defines them.

Recovery % = (average accuracy of the model over the task suite) / (average accuracy of the
unpruned baseline over the same suite) x 100 (Thangarasa et al. 2024, Sec. 4). Averages over
different task sets, or over the same tasks scored by different metrics or on different numbers of
examples, are not comparable, so they are errors.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdd_ray.config import ConfigError


class ResultsError(ConfigError):
    """A results file that cannot be used (missing, malformed, or not comparable); the CLI prints it."""


class ResultsMismatchError(ResultsError):
    """Two results are not over the same tasks and metrics."""


def average(tasks: dict[str, dict]) -> float:
    """Unweighted mean of the per-task accuracies (each task counts once, as in the paper)."""
    if not tasks:
        raise ResultsError("no task results to average")
    return sum(r["value"] for r in tasks.values()) / len(tasks)


def check_same_task_names(a: list[str], b: list[str], names: tuple[str, str]) -> None:
    if set(a) != set(b):
        raise ResultsMismatchError(
            f"{names[0]} and {names[1]} results cover different tasks: only in {names[0]}: {sorted(set(a) - set(b))}, "
            f"only in {names[1]}: {sorted(set(b) - set(a))}; evaluate both on the same --tasks"
        )


def check_same_seed(a, b, names: tuple[str, str]) -> None:
    """The toy eval split (and the harness's few-shot draw) follow the seed: other seeds, other examples."""
    if a is not None and b is not None and a != b:
        raise ResultsMismatchError(
            f"{names[0]} was evaluated with seed {a} but {names[1]} with seed {b}: different examples; "
            "evaluate both with the same --seed"
        )


def check_same_tasks(results: dict, baseline: dict, names: tuple[str, str] = ("model", "baseline")) -> None:
    """Raise `ResultsMismatchError` unless both results cover the same tasks with the same metrics."""
    check_same_task_names(list(results["tasks"]), list(baseline["tasks"]), names)
    check_same_seed(results.get("seed"), baseline.get("seed"), names)
    for task in sorted(results["tasks"]):
        ra, rb = results["tasks"][task], baseline["tasks"][task]
        if ra["metric"] != rb["metric"]:
            raise ResultsMismatchError(
                f"task {task!r} is scored by {ra['metric']!r} in {names[0]} but {rb['metric']!r} in {names[1]}"
            )
        if ra.get("n") != rb.get("n"):
            raise ResultsMismatchError(
                f"task {task!r} has n={ra.get('n')} examples in {names[0]} but n={rb.get('n')} in {names[1]}; "
                "evaluate both with the same --limit"
            )


def recovery_pct(results: dict, baseline: dict) -> float:
    """Average accuracy of `results` as a percentage of `baseline`'s, over the same tasks."""
    check_same_tasks(results, baseline)
    base = average(baseline["tasks"])
    if base == 0:
        raise ResultsError("the baseline's average accuracy is 0: recovery is undefined")
    return 100.0 * average(results["tasks"]) / base


def load_results(path: str | Path) -> dict:
    """A `results.json` written by `sdd-ray evaluate`, checked for the fields recovery needs."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise ResultsError(f"{path}: not an `sdd-ray evaluate` results file (no `tasks` mapping)")
    for name, r in tasks.items():
        if not isinstance(r, dict) or "value" not in r or "metric" not in r:
            raise ResultsError(f"{path}: task {name!r} lacks `metric` or `value`")
    return data


def is_results_file(path: str | Path) -> bool:
    return Path(path).suffix == ".json" and Path(path).is_file()
