"""Data sets: where they come from, how their columns map, which rows are usable, and how a stage reads them.

Every stage that reads (instruction, input, response) rows goes through here, so that the same row
gets the same `id`, the same task name and the same verdict everywhere. A row in the canonical
schema is `{id, task, kind, instruction, input, response}`, all strings; `kind` is the task kind
(`math`, `mc`, `general`) when the source says it, else "".

Sources (`DataSpec.source`, one syntax on every command line and in every config; a plain string
stands for `{source: ...}`):
- `toy:arith`, `toy:facts`, `toy:instruct`, `toy:arith,facts`, `toy:all`: the toy world, its split
  chosen by `split` (`sdd_ray.toy.sources`: train = the fine-tuning split, test, calibration);
- a local `*.jsonl` / `*.json` (one JSON object per line) or `*.parquet` file or directory (a
  finished distillation output's `data/` folder included; one format per folder);
- anything else is a Hugging Face dataset name (`openai/gsm8k`, config after a colon: `openai/gsm8k:main`).
  Where a local copy of a hub data set exists (`local_copy`: `$SDD_RAY_DATA_DIR`, else a `shared/data`
  folder beside the repository), it is read instead of the hub, in the same layout.

The modules, in reading order: `spec` (DataSpec, column presets), `sources` (the resolver),
`records` (the one record validator), `read` (records and rows, on the driver or as a Ray Dataset),
`checks` (a source can be read and its rows are usable, before any work starts).
"""

from sdd_ray.data.checks import check_data_columns, check_data_source
from sdd_ray.data.read import iter_records, load_rows, parse_batch, read_records, read_rows, split_rows
from sdd_ray.data.records import (
    NOT_UTF8,
    content_id,
    decode_line,
    parse_record,
    parsed_schema,
    reject_duplicate,
    rejected_entry,
)
from sdd_ray.data.sources import (
    DATA_DIR_ENV,
    DATA_SUFFIXES,
    DEFAULT_DATA_DIR,
    LOCAL_COPIES,
    Source,
    data_folder,
    has_rows,
    hub_dataset,
    local_copy,
    local_data_dir,
    resolve,
    source_type,
)
from sdd_ray.data.spec import (
    CANONICAL,
    PRESET_KIND,
    PRESETS,
    ColumnMap,
    DataSpec,
    capped,
    column_map,
    default_kind,
    default_task,
    preset_name,
    with_split,
)

__all__ = [
    "CANONICAL", "DATA_DIR_ENV", "DATA_SUFFIXES", "DEFAULT_DATA_DIR", "LOCAL_COPIES", "NOT_UTF8", "PRESETS",
    "PRESET_KIND", "ColumnMap", "DataSpec", "Source", "capped", "check_data_columns", "check_data_source",
    "column_map", "content_id", "data_folder", "decode_line", "default_kind", "default_task", "has_rows",
    "hub_dataset", "iter_records", "load_rows", "local_copy", "local_data_dir", "parse_batch", "parse_record",
    "parsed_schema", "preset_name", "read_records", "read_rows", "reject_duplicate", "rejected_entry", "resolve",
    "source_type", "split_rows", "with_split",
]
