"""Ray wiring of the fine-tuning stage: the data set as Ray Data, and the `TorchTrainer` around `train_func`.

The data set is read and checked on the driver (missing columns and empty data fail before any
worker starts), materialized once, and handed to every worker unsplit: each worker takes its slice
of a global batch plan itself (see `sdd_ray.finetune.loop`), which keeps step counts equal across
workers and the order identical on resume.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sdd_ray.data import CANONICAL, DataSpec, read_rows, rejected_entry, split_rows
from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.finetune.data import DataError
from sdd_ray.finetune.loop import train_func
from sdd_ray.finetune.preflight import check_usable_rows, check_workers
from sdd_ray.io import write_text
from sdd_ray.models import load_tokenizer
from sdd_ray.runtime import connect

SFT_HINT = " (original_response comes from a distillation output; use --response-column response for plain data)"


def read_dataset(spec: DataSpec, response_column: str = "response"):
    """(the valid rows as a Ray Dataset, the rejected rows), read through the shared data layer.

    Rows get the validation, reasons and duplicate-id rule distillation gives them; a response
    column other than `response` (a distillation output's `original_response`) is kept and checked too.
    """
    import ray.data

    extra = () if response_column == "response" else (response_column,)
    rows = read_rows(spec, extra=extra)
    rows.context.execution_options.preserve_order = True  # of two rows with one id, the first in the files is kept
    valid, rejected = split_rows(rows.iter_rows())
    if not valid:
        if not rejected:
            raise DataError(f"{spec.source}: the data set is empty")
        hint = SFT_HINT if response_column == "original_response" and response_column in rejected[0]["reject_reason"] else ""
        raise DataError(f"{spec.source}: no valid rows ({len(rejected)} rejected; first: "
                        f"{rejected[0]['reject_reason']}){hint}")
    keep = (*CANONICAL, *extra)
    return ray.data.from_items([{name: row[name] for name in keep} for row in valid]), rejected


def load_checked_dataset(cfg: FinetuneConfig, rejects: Path | None = None):
    """The materialized valid rows; the rejected ones, with their reasons, go to `rejects` (a JSONL file)."""
    dataset, rejected = read_dataset(cfg.data, cfg.response_column)
    if rejects is not None:
        write_text(rejects, "".join(json.dumps(rejected_entry(row)) + "\n" for row in rejected))
    if rejected:
        where = f"; reasons in {rejects}" if rejects is not None else ""
        print(f"finetune: --data {cfg.data.source}: {len(rejected)} rows rejected{where}", file=sys.stderr)
    return dataset.materialize()


def build_trainer(cfg: FinetuneConfig, storage_path: str | Path, dataset):
    """The `TorchTrainer` running `train_func` on `cfg.num_workers` workers."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    model = cfg.model
    if Path(model.path).exists():  # workers run in another directory: relative paths would not resolve there
        model = model.model_copy(update={"path": str(Path(model.path).resolve())})
    stored = cfg.model_copy(update={"storage_path": str(Path(storage_path).resolve()), "model": model})
    return TorchTrainer(
        train_func,
        train_loop_config={"finetune": stored.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            storage_path=str(Path(storage_path).resolve()), name=cfg.run_name,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=[]),  # each worker slices the global plan itself
    )


def fit(cfg: FinetuneConfig, storage_path: str | Path, rejects: Path | None = None):
    """Run the training job (resuming from the run's last checkpoint if one exists); the Ray `Result`.

    Rows the data layer rejects are listed in `rejects` (JSONL: id, task, reason, record)."""
    import ray
    import ray.data

    tokenizer = load_tokenizer(cfg.model)  # a missing model fails here, before any worker starts
    connect()
    check_workers(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the workers' reads would draw bars
    dataset = load_checked_dataset(cfg, rejects)
    check_usable_rows(cfg, dataset, tokenizer)
    trainer = build_trainer(cfg, storage_path, dataset)
    return trainer.fit()
