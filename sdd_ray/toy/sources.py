"""The toy world as a data source: `toy:<task>[,<task>...]` or `toy:all`, read by `sdd_ray.data`.

The split names the toy split, so one source string gives the same rows whatever stage reads it:
`train` is the fine-tuning split (reference-style responses, ids unique), `test` (or `eval`) the
held-out evaluation split, `calibration` the pruning calibration split. Rows carry the canonical
columns (`id`, `task`, `kind`, `instruction`, `input`, `response`) and `text`: the plain prompt
followed by the teacher-style response, the text a calibration pass reads.
"""

from __future__ import annotations

from sdd_ray.prompts import instruction_prompt
from sdd_ray.toy.tasks import TASK_KIND, TASKS, generate

DEFAULT_TOY_ROWS = 1000  # rows per toy task when no limit is given
TOY_SPLITS = {"train": "finetune", "test": "eval", "eval": "eval", "calibration": "calibration"}
"""DataSpec split -> the toy generator's split."""


def toy_tasks(source: str) -> tuple[str, ...]:
    """The tasks of `toy:all` or `toy:a,b`; a ValueError naming the choices for an unknown one."""
    names = source.removeprefix("toy:").split(",")
    if names == ["all"]:
        return TASKS
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ValueError(f"unknown toy source {source!r}; choose from toy:all, " + ", ".join(f"toy:{t}" for t in TASKS)
                         + " or a comma-separated list (toy:arith,facts)")
    return tuple(names)


def _row(example: dict) -> dict:
    return {"id": example["id"], "task": example["task"], "kind": TASK_KIND[example["task"]],
            "instruction": example["instruction"], "input": example["input"],
            "response": example["reference_response"],
            "text": instruction_prompt(example["instruction"], example["input"]) + example["teacher_response"]}


def _unique(rows: list[dict]) -> list[dict]:
    """First occurrences only: the toy generators repeat some short instructions."""
    seen: set[str] = set()
    return [row for row in rows if not (row["id"] in seen or seen.add(row["id"]))]


def toy_records(source: str, limit: int | None = None, split: str = "train") -> list[dict]:
    """`limit` rows of `source`'s `split` in all (`DEFAULT_TOY_ROWS` per task by default), tasks interleaved."""
    if split not in TOY_SPLITS:
        raise ValueError(f"toy source {source!r}: unknown split {split!r}; choose from {sorted(TOY_SPLITS)}")
    tasks = toy_tasks(source)
    per_task = DEFAULT_TOY_ROWS if limit is None else -(-limit // len(tasks))
    if TOY_SPLITS[split] == "finetune":  # unique ids: draw twice as many, keep the first of each
        groups = [_unique([_row(r) for r in generate(task, 2 * per_task, "finetune")])[:per_task] for task in tasks]
    else:
        groups = [[_row(r) for r in generate(task, per_task, TOY_SPLITS[split])] for task in tasks]
    interleaved = [row for group in zip(*groups) for row in group]
    return interleaved[:limit] if limit is not None else interleaved
