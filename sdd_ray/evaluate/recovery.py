"""Average accuracy and recovery against the unpruned baseline, as the paper defines them.

Recovery % = (average accuracy of the model over the task suite) / (average accuracy of the
unpruned baseline over the same suite) x 100 (Thangarasa et al. 2024, Sec. 4). Beside it,
chance-corrected recovery subtracts the accuracy of guessing from both averages, so that a model at
chance scores 0%, not the ~60-75% the paper's ratio gives it on 2-5-option tasks. Averages over
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
        if ra.get("documents") and rb.get("documents") and ra["documents"] != rb["documents"]:
            raise ResultsMismatchError(
                f"task {task!r} was scored on different documents in {names[0]} and {names[1]}; "
                "evaluate both with the same --limit and --seed"
            )


def recovery_pct(results: dict, baseline: dict) -> float:
    """Average accuracy of `results` as a percentage of `baseline`'s, over the same tasks."""
    check_same_tasks(results, baseline)
    base = average(baseline["tasks"])
    if base == 0:
        raise ResultsError("the baseline's average accuracy is 0: recovery is undefined")
    return 100.0 * average(results["tasks"]) / base


CHANCE = {
    "hellaswag": 0.25, "piqa": 0.5, "arc_easy": 0.25, "arc_challenge": 0.25, "openbookqa": 0.25, "winogrande": 0.5,
    "commonsense_qa": 0.2, "mmlu": 0.25, "boolq": 0.5, "sciq": 0.25, "social_i_qa": 1 / 3, "lambada_openai": 0.0,
    "gsm8k": 0.0, "gsm8k_local": 0.0, "toy_arith": 0.0, "toy_instruct": 0.0, "arith": 0.0, "instruct": 0.0,
}
"""1 / options of the tasks whose results predate the per-task `chance` (new results carry their own)."""


def chance_level(task: str, result: dict) -> float | None:
    """The accuracy of guessing uniformly among a task's options (0 for generated answers); None: unknown."""
    return result.get("chance", CHANCE.get(task))


def chance_corrected_recovery_pct(results: dict, baseline: dict) -> float | None:
    """(average - chance) / (baseline average - chance) x 100: recovery of what the baseline gains over guessing."""
    check_same_tasks(results, baseline)
    chances = [chance_level(t, r) for t, r in baseline["tasks"].items()]
    if any(c is None for c in chances):
        return None
    floor = sum(chances) / len(chances)
    gain = average(baseline["tasks"]) - floor
    return 100.0 * (average(results["tasks"]) - floor) / gain if gain > 0 else None


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
