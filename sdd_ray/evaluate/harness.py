"""The `harness` evaluator: lm-evaluation-harness (`lm_eval.simple_evaluate`) on one model.

Backends: `hf` (transformers, CPU or GPU) and `vllm` (GPU). The model is built once and shared by
every few-shot group of tasks (lm-eval takes one few-shot count per call). Each task reports the
metric and filter named in `HarnessConfig.task_settings`, with lm-eval's stderr and sample count.
Real benchmarks read local files where a data folder is found (`local_benchmarks`), else the hub.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sdd_ray.config import ConfigError, ModelSpec
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.local_benchmarks import (
    benchmark_data_dir,
    has_local_data,
    official_task_index,
    prepare_local_benchmarks,
)
from sdd_ray.evaluate.local_tasks import LOCAL_TASKS, prepare_local_tasks


def model_args(spec: ModelSpec, cfg: EvaluateConfig) -> dict:
    """lm-eval `model_args` of `spec` for the configured backend."""
    from sdd_ray.models import resolve_dtype

    dtype = str(resolve_dtype(spec)).removeprefix("torch.")
    args = {"pretrained": spec.path, "dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        args["revision"] = spec.revision
    if cfg.harness.backend == "vllm":
        from sdd_ray.vllm_engine import engine_args

        args.update(engine_args(
            spec, max_model_len=cfg.harness.max_model_len, gpu_memory_utilization=cfg.harness.gpu_memory_utilization,
            tensor_parallel_size=max(1, int(cfg.resources.num_gpus)), seed=cfg.seed,
        ))
    return args


def build_lm(spec: ModelSpec, cfg: EvaluateConfig):
    """The lm-eval model object (loaded once per evaluation)."""
    from lm_eval.api.registry import get_model

    from sdd_ray.models import check_model_exists, resolve_device

    check_model_exists(spec)
    extra = {"batch_size": cfg.batch_size}
    if cfg.harness.backend == "hf":
        extra["device"] = str(resolve_device(spec))
    return get_model(cfg.harness.backend).create_from_arg_obj(model_args(spec, cfg), extra)


def _stderr(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _n_samples(raw: dict, name: str) -> int:
    """Documents scored for a task, or summed over a group's subtasks."""
    counts = raw.get("n-samples", {})
    if name in counts:
        return int(counts[name]["effective"])
    children = raw.get("group_subtasks", {}).get(name, [])
    return sum(_n_samples(raw, child) for child in children)


def task_result(raw: dict, name: str, metric: str, filter: str) -> dict:
    """{metric, value, stderr, n} of one task (or group) from `simple_evaluate`'s output."""
    scores = raw["results"].get(name) or raw.get("groups", {}).get(name)
    key = f"{metric},{filter}"
    if scores is None or key not in scores:
        found = sorted(k for k in (scores or {}) if "_stderr" not in k and k != "alias")
        raise ConfigError(f"lm-eval task {name!r} reported no {key!r} (it reported {found}); fix harness.task_settings")
    return {
        "metric": metric if filter == "none" else f"{metric} ({filter})",
        "value": float(scores[key]),
        "stderr": _stderr(scores.get(f"{metric}_stderr,{filter}")),
        "n": _n_samples(raw, name),
    }


def per_example(raw: dict, name: str, metric: str, filter: str) -> list[float]:
    """The per-document metric of a task, in document order (needs `log_samples`)."""
    samples = sorted(raw["samples"][name], key=lambda s: s["doc_id"])
    return [float(s[metric]) for s in samples if s.get("filter", filter) == filter]


def benchmarks_with_local_data(tasks: list[str], data_dir: Path | None) -> list[str]:
    """The lm-eval tasks among `tasks` to read from the local data folder (none without one)."""
    if not tasks or data_dir is None:
        return []
    index = official_task_index()
    return [t for t in tasks if has_local_data(t, index, data_dir)]


def evaluate_harness(spec: ModelSpec, tasks: list[str], cfg: EvaluateConfig, log_samples: bool = False) -> dict[str, dict]:
    """Results of `spec` on lm-eval `tasks`: {task: {metric, value, stderr, n[, per_example]}}."""
    settings = {t: cfg.harness.task_settings[t] for t in tasks}
    local = [t for t in tasks if t in LOCAL_TASKS]
    if len(local) == len(tasks):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never reach the hub
    data_dir = benchmark_data_dir(cfg.harness.data_source, cfg.harness.data_dir)
    from_files = benchmarks_with_local_data([t for t in tasks if t not in LOCAL_TASKS], data_dir)
    from_hub = [t for t in tasks if t not in local and t not in from_files]
    if from_hub and cfg.harness.data_source == "local":
        raise ConfigError(f"harness.data_source=local, but {from_hub} have no local copy in {data_dir}; use data_source auto")
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = build_lm(spec, cfg)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sdd_ray_lmeval_") as workdir:
        prepare_local_tasks(local, workdir, cfg.limit or 1000, cfg.seed, cfg.harness.gsm8k)
        if from_files:
            prepare_local_benchmarks(from_files, workdir, data_dir)
        manager = TaskManager(include_path=[workdir, *cfg.harness.include_paths], include_defaults=bool(from_hub))
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise ConfigError(f"lm-eval knows no task(s) {unknown}; check the names or harness.include_paths")
        for shots in sorted({s.num_fewshot for s in settings.values()}):
            group = [t for t in tasks if settings[t].num_fewshot == shots]
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=group,
                num_fewshot=shots,
                limit=cfg.limit,
                task_manager=manager,
                bootstrap_iters=cfg.harness.bootstrap_iters,
                apply_chat_template=cfg.harness.apply_chat_template,
                log_samples=log_samples,
                random_seed=cfg.seed,
            )
            for t in group:
                s = settings[t]
                results[t] = task_result(raw, t, s.metric, s.filter)
                if log_samples:
                    results[t]["per_example"] = per_example(raw, t, s.metric, s.filter)
    return {t: results[t] for t in tasks}
