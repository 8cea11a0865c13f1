"""Checks of a data source before any work starts: it can be read, and its rows are usable.

Every refusal is an `InputError` naming the flag or config field, so the CLI prints one line.
"""

from __future__ import annotations

from sdd_ray.data.read import iter_records
from sdd_ray.data.records import parse_record
from sdd_ray.data.sources import has_rows, hub_dataset, resolve, source_type
from sdd_ray.data.spec import DataSpec, column_map, default_kind, default_task
from sdd_ray.errors import InputError


def check_data_source(source: str, flag: str = "--data", split: str | None = None) -> None:
    """A data source can be read whole: local files exist, agree in format and hold rows; with `split`, a hub
    data set opens (a name the hub does not know, or no network, fails here, before any work)."""
    if source.startswith("toy:"):
        return
    found = resolve(DataSpec(source=source, split=split or "train"), flag)
    if found.kind == "hf" and split is not None:
        hub_dataset(found, split, flag)
    elif found.files and not any(has_rows(file) for file in found.files):
        raise InputError(f"{flag} {source}: no rows (the data is empty)")


def check_data_columns(spec: DataSpec, flag: str = "--data", sample: int = 100) -> None:
    """Refuse a local data set none of whose first `sample` rows is usable (a wrong column mapping, most often)."""
    if source_type(spec.source) != "local":
        return
    columns, task, kind = column_map(spec), default_task(spec), default_kind(spec)
    reasons = []
    for record in iter_records(spec, flag):
        row = parse_record(record, columns, task, kind)
        if not row["reject_reason"]:
            return
        reasons.append(row["reject_reason"])
        if len(reasons) >= sample:
            break
    if reasons:
        raise InputError(f"{flag} {spec.source}: none of the first {len(reasons)} rows is usable (first: {reasons[0]}); "
                         "check the data's columns against the column mapping (`columns`)")
