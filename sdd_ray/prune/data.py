"""Calibration texts: the `text_field` of the first rows of any data source (`sdd_ray.data.DataSpec`).

Calibration needs only a few hundred to a few thousand texts (Gromov et al. use a small slice of a
pretraining corpus), so the driver reads them into a list, checks them, and only then hands them to
the in-process or Ray Data calibration.
"""

from __future__ import annotations

import json

from sdd_ray.config import ConfigError
from sdd_ray.data import DataSpec, capped, iter_records


class CalibrationDataError(ConfigError):
    """The calibration source is missing, empty, or lacks the text field."""


def _records(spec: DataSpec) -> list[dict]:
    """The records of `spec` as mappings; a bad JSON line is an error here (a calibration set is small and hand-picked)."""
    rows = []
    try:
        for number, record in enumerate(iter_records(spec, "--calib"), 1):
            if isinstance(record, str):  # a JSONL line
                try:
                    record = json.loads(record)
                except json.JSONDecodeError as error:
                    raise CalibrationDataError(f"{spec.source}: record {number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise CalibrationDataError(f"{spec.source}: record {number} is not an object")
            rows.append(record)
    except ValueError as error:  # a missing file or folder, an unknown toy source or split (an InputError)
        raise CalibrationDataError(str(error)) from None
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


def load_calibration_texts(spec: DataSpec, text_field: str = "text", num_samples: int = 256) -> list[str]:
    """Up to `num_samples` non-empty texts from `spec` (and at most its own `limit`); an error if there are none."""
    texts = _texts_from_rows(_records(capped(spec, num_samples)), text_field, spec.source)
    if not texts:
        raise CalibrationDataError(f"calibration set {spec.source!r} is empty: no non-empty texts in field {text_field!r}")
    return texts
