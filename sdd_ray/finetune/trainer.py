"""Ray wiring of the fine-tuning stage: the data set as Ray Data, and the `TorchTrainer` around `train_func`.

The data set is read and checked on the driver (missing columns and empty data fail before any
worker starts), materialized once, and handed to every worker unsplit: each worker takes its slice
of a global batch plan itself (see `sdd_ray.finetune.loop`), which keeps step counts equal across
workers and the order identical on resume.
"""

from __future__ import annotations

from pathlib import Path

from sdd_ray.config import ConfigError
from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.finetune.data import DataError, check_columns


def toy_rows(source: str, limit: int | None) -> list[dict]:
    """The toy fine-tuning split (`toy:<task>` or `toy:all`), in the shared data-set schema."""
    from sdd_ray.data import toy_records

    try:
        return toy_records(source, limit)
    except ValueError as error:
        raise DataError(str(error)) from None


def data_files(source: str) -> tuple[str, list[str]]:
    """("parquet"|"json", files) of a distillation output dir (`DIR/data/*.parquet`), a dir, or a file."""
    path = Path(source)
    if path.is_dir():
        for folder in (path / "data", path):
            for kind, pattern in (("parquet", "*.parquet"), ("json", "*.jsonl")):
                files = sorted(str(p) for p in folder.glob(pattern))
                if files:
                    return kind, files
        raise DataError(f"{source}: no data/*.parquet, *.parquet or *.jsonl files in this directory")
    if not path.is_file():
        raise DataError(f"{source}: no such file or directory (expected parquet/jsonl data, toy:<task> or hf:<name>)")
    if path.suffix == ".parquet":
        return "parquet", [str(path)]
    if path.suffix in (".jsonl", ".json"):
        return "json", [str(path)]
    raise DataError(f"{source}: unsupported file type {path.suffix!r} (use .parquet or .jsonl)")


def read_dataset(source: str, limit: int | None = None):
    """The data set of `source` as a Ray Dataset."""
    import ray.data

    if source.startswith("toy:"):
        return ray.data.from_items(toy_rows(source, limit))
    if source.startswith("hf:"):
        import datasets

        name, _, config = source.removeprefix("hf:").partition(":")
        ds = ray.data.from_huggingface(datasets.load_dataset(name, config or None, split="train"))
    else:
        kind, files = data_files(source)
        if all(Path(f).stat().st_size == 0 for f in files):
            raise DataError(f"{source}: the data set is empty")
        ds = ray.data.read_parquet(files) if kind == "parquet" else ray.data.read_json(files, lines=True)
    return ds.limit(limit) if limit else ds


def load_checked_dataset(cfg: FinetuneConfig):
    """The materialized data set, after checking that it has rows and the columns training needs."""
    ds = read_dataset(cfg.data, cfg.data_limit).materialize()
    if ds.count() == 0:
        raise DataError(f"{cfg.data}: the data set is empty")
    check_columns(ds.schema().names, cfg.response_column, cfg.data)
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


# Settings a resumed run may change; any other difference means the checkpoints belong to another run.
RESUMABLE_CHANGES = {"epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "max_failures",
                     "fail_at_step", "save_adapter", "storage_path"}


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

    tokenizer = load_tokenizer(cfg.model)  # a missing model fails here, before any worker starts
    check_resumable(cfg, Path(storage_path).resolve() / cfg.run_name)
    if not ray.is_initialized():
        ray.init(configure_logging=False)
    check_workers(cfg)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the workers' reads would draw bars
    dataset = load_checked_dataset(cfg)
    check_usable_rows(cfg, dataset, tokenizer)
    trainer = build_trainer(cfg, storage_path, dataset)
    return trainer.fit()
