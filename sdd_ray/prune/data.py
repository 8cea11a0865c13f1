"""Calibration texts: a local JSONL/Parquet file, a Hugging Face dataset, or the toy world.

Calibration needs only a few hundred to a few thousand texts (Gromov et al. use a small slice of a
pretraining corpus), so the driver reads them into a list, checks them, and only then hands them to
the in-process or Ray Data calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdd_ray.config import ConfigError

TOY_SOURCE = "toy"


class CalibrationDataError(ConfigError):
    """The calibration source is missing, empty, or lacks the text field."""


def toy_texts(num_samples: int) -> list[str]:
    """Prompt + teacher-style response of the toy `calibration` split, interleaved over the tasks."""
    from sdd_ray.prompts import instruction_prompt
    from sdd_ray.toy.tasks import TASKS, generate

    per_task = -(-num_samples // len(TASKS))
    rows_by_task = [generate(task, per_task, "calibration") for task in TASKS]
    texts = [
        instruction_prompt(row["instruction"], row["input"]) + row["teacher_response"]
        for group in zip(*rows_by_task) for row in group
    ]
    return texts[:num_samples]


def _records(source: str, num_samples: int, split: str) -> list[dict]:
    """The first `num_samples` records of a file, directory or hub dataset, read by `sdd_ray.data`."""
    from sdd_ray.data import DataSpec, iter_records, source_type

    if source_type(source) == "hf" and Path(source).exists():
        raise CalibrationDataError(f"{source}: calibration data must be .jsonl or .parquet files")
    rows = []
    try:
        for number, record in enumerate(iter_records(DataSpec(source=source, split=split, limit=num_samples)), 1):
            if isinstance(record, str):  # a JSONL line
                try:
                    record = json.loads(record)
                except json.JSONDecodeError as error:
                    raise CalibrationDataError(f"{source}: record {number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise CalibrationDataError(f"{source}: record {number} is not an object")
            rows.append(record)
    except FileNotFoundError as error:
        raise CalibrationDataError(f"calibration {error}") from None
    return rows


def _texts_from_rows(rows: list[dict], text_field: str, source: str) -> list[str]:
    texts = []
    for index, row in enumerate(rows):
        if text_field not in row:
            raise CalibrationDataError(
                f"{source}: row {index} has no field {text_field!r} (fields: {', '.join(row)}); set --text-field"
            )
        text = row[text_field]
        if not isinstance(text, str):
            raise CalibrationDataError(f"{source}: row {index}: field {text_field!r} is not a string")
        if text.strip():
            texts.append(text)
    return texts


def load_calibration_texts(source: str, text_field: str = "text", num_samples: int = 256, split: str = "train") -> list[str]:
    """Up to `num_samples` non-empty texts from `source`; an error if there are none.

    source: `toy` (the toy calibration split); a local `.jsonl`/`.json` (one object per line) or
    `.parquet` file or directory; or a hub dataset name (`org/name` or `org/name:config`), read from
    `split` by streaming.
    """
    if source == TOY_SOURCE:
        texts = toy_texts(num_samples)
    else:
        texts = _texts_from_rows(_records(source, num_samples, split), text_field, source)
    if not texts:
        raise CalibrationDataError(f"calibration set {source!r} is empty: no non-empty texts in field {text_field!r}")
    return texts
