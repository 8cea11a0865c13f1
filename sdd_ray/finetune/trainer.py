"""Ray wiring of the fine-tuning stage: the data set as Ray Data, and the `TorchTrainer` around `train_func`.

The data set is read and checked on the driver (missing columns and empty data fail before any
worker starts), materialized once, and handed to every worker unsplit: each worker takes its slice
of a global batch plan itself (see `sdd_ray.finetune.loop`), which keeps step counts equal across
workers and the order identical on resume.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ConfigError
from sdd_ray.data import ColumnMap, DataSpec, column_map, load_rows, local_files, source_type
from sdd_ray.finetune.config import RESUMABLE_CHANGES, FinetuneConfig
from sdd_ray.finetune.data import DataError, check_columns


def read_dataset(spec: DataSpec):
    """The data set of `spec` as a Ray Dataset.

    Local files whose columns need no mapping are read as they are, by Ray Data (a distillation
    output keeps `original_response`, the SFT arm's label); any other source goes through the shared
    data layer into the canonical columns.
    """
    import ray.data

    kind = source_type(spec.source)
    if kind in ("jsonl", "parquet") and column_map(spec) == ColumnMap():
        suffixes = (".parquet",) if kind == "parquet" else (".jsonl", ".json")
        try:
            files = [str(path) for path in local_files(spec.source, suffixes)]
        except FileNotFoundError as error:
            raise DataError(str(error)) from None
        if all(Path(f).stat().st_size == 0 for f in files):
            raise DataError(f"{spec.source}: the data set is empty")
        ds = ray.data.read_parquet(files) if kind == "parquet" else ray.data.read_json(files, lines=True)
        return ds.limit(spec.limit) if spec.limit else ds
    try:
        rows, _ = load_rows(spec)
    except (ValueError, FileNotFoundError) as error:
        raise DataError(str(error)) from None
    return ray.data.from_items(rows)


def load_checked_dataset(cfg: FinetuneConfig):
    """The materialized data set, after checking that it has rows and the columns training needs."""
    ds = read_dataset(cfg.data).materialize()
    if ds.count() == 0:
        raise DataError(f"{cfg.data.source}: the data set is empty")
    check_columns(ds.schema().names, cfg.response_column, cfg.data.source)
    return ds


def build_trainer(cfg: FinetuneConfig, storage_path: str | Path, dataset):
    """The `TorchTrainer` running `train_func` on `cfg.num_workers` workers."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from sdd_ray.finetune.loop import train_func

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


def check_resumable(cfg: FinetuneConfig, run_dir: Path) -> None:
    """Record the run's settings in `run_dir`; refuse to resume checkpoints made with different ones."""
    import json

    settings = cfg.model_dump(mode="json", exclude=RESUMABLE_CHANGES)
    record = run_dir / "sdd_ray_finetune.json"
    if record.is_file():
        before = json.loads(record.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ConfigError(
                f"{run_dir} holds checkpoints of a run with different settings ({', '.join(changed)}); "
                "use another --out (or storage_path / run_name), or delete that directory to start over"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))


def fit(cfg: FinetuneConfig, storage_path: str | Path):
    """Run the training job (resuming from the run's last checkpoint if one exists); the Ray `Result`."""
    import ray
    import ray.data

    from sdd_ray.finetune.guard import check_usable_rows, check_workers
    from sdd_ray.models import load_tokenizer
    from sdd_ray.runtime import connect

    tokenizer = load_tokenizer(cfg.model)  # a missing model fails here, before any worker starts
    check_resumable(cfg, Path(storage_path).resolve() / cfg.run_name)
    connect()
    check_workers(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the workers' reads would draw bars
    dataset = load_checked_dataset(cfg)
    check_usable_rows(cfg, dataset, tokenizer)
    trainer = build_trainer(cfg, storage_path, dataset)
    return trainer.fit()
