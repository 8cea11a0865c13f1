"""The `harness` evaluator: lm-evaluation-harness (`lm_eval.simple_evaluate`) on one model.

Backends: `hf` (transformers, CPU or GPU) and `vllm` (GPU). The model is built once and shared by
every few-shot group of tasks (lm-eval takes one few-shot count per call). Each task reports the
metric and filter named in `HarnessConfig.task_settings`, with lm-eval's stderr and sample count.
Real benchmarks read local files where a data folder is found (`local_benchmarks`), else the hub.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from sdd_ray.config import ConfigError, ModelSpec
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.examples import draw_documents
from sdd_ray.evaluate.local_benchmarks import (
    benchmark_data_dir,
    has_local_data,
    official_task_index,
    prepare_local_benchmarks,
)
from sdd_ray.evaluate.local_tasks import LOCAL_TASKS, prepare_local_tasks
from sdd_ray.models import check_model_exists, resolve_device, resolve_dtype
from sdd_ray.vllm_engine import engine_args


def model_args(spec: ModelSpec, cfg: EvaluateConfig) -> dict:
    """lm-eval `model_args` of `spec` for the configured backend."""
    dtype = str(resolve_dtype(spec)).removeprefix("torch.")
    args = {"pretrained": spec.path, "dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        args["revision"] = spec.revision
    if cfg.harness.backend == "vllm":
        args.update(engine_args(
            spec, max_model_len=cfg.harness.max_model_len, gpu_memory_utilization=cfg.harness.gpu_memory_utilization,
            tensor_parallel_size=max(1, int(cfg.resources.num_gpus)), seed=cfg.seed,
        ))
    return args


def build_lm(spec: ModelSpec, cfg: EvaluateConfig):
    """The lm-eval model object (loaded once per evaluation)."""
    from lm_eval.api.registry import get_model

    check_model_exists(spec)
    extra = {"batch_size": cfg.batch_size}
    if cfg.harness.backend == "hf" and cfg.harness.max_batch_tokens:
        from sdd_ray.evaluate.harness_lm import TokenBudgetHFLM

        extra.update(device=str(resolve_device(spec)), max_batch_tokens=cfg.harness.max_batch_tokens)
        return TokenBudgetHFLM.create_from_arg_obj(model_args(spec, cfg), extra)
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
    result = {
        "metric": metric if filter == "none" else f"{metric} ({filter})",
        "value": float(scores[key]),
        "stderr": _stderr(scores.get(f"{metric}_stderr,{filter}")),
        "n": _n_samples(raw, name),
    }
    if f"perplexity,{filter}" in scores:  # LAMBADA: the perplexity of the target words beside their accuracy
        result["perplexity"] = float(scores[f"perplexity,{filter}"])
    return result


def _gold(sample: dict) -> int | None:
    """The index of the gold option of a multiple-choice sample, where it is one index."""
    target = sample["target"]
    if isinstance(target, str) and target.strip().isdigit():
        return int(target)
    if isinstance(target, str):
        options = [args[1].strip() for args in sample["arguments"]]
        return options.index(target.strip()) if target.strip() in options else None
    return target if isinstance(target, int) else None


def _option_length(continuation: str) -> int:
    """Characters of an option as lm-eval's `acc_norm` counts them (without the target delimiter)."""
    return max(1, len(continuation) - 1 if continuation.startswith(" ") else len(continuation))


def sample_record(sample: dict, metric: str, doc_id: int | str | None = None) -> tuple[dict, float]:
    """({doc_id, correct, score}, chance) of one logged lm-eval sample.

    score: multiple choice, the normalised probability of the gold option (over the options' log-likelihoods,
    per character for `acc_norm`); one log-likelihood (LAMBADA), the target's log-probability; generation,
    the 0/1 outcome. chance: 1 / options for multiple choice, else 0.
    """
    correct = float(sample[metric])
    responses = sample["filtered_resps"]
    record = {"doc_id": sample["doc_id"] if doc_id is None else doc_id, "correct": correct, "score": correct}
    if not responses or not all(isinstance(r, (list, tuple)) for r in responses):
        return record, 0.0
    lls = np.array([float(r[0]) for r in responses])
    if len(lls) == 1:
        record["score"] = float(lls[0])
        return record, 0.0
    if metric == "acc_norm":
        lls = lls / np.array([_option_length(args[1]) for args in sample["arguments"]])
    gold = _gold(sample)
    if gold is not None and 0 <= gold < len(lls):
        probs = np.exp(lls - lls.max())
        record["score"] = float(probs[gold] / probs.sum())
    return record, 1.0 / len(lls)


def _leaf_names(raw: dict, name: str) -> list[str]:
    children = raw.get("group_subtasks", {}).get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in _leaf_names(raw, child)]


def task_examples(raw: dict, name: str, metric: str, filter: str) -> tuple[list[dict], float]:
    """The per-document records of a task (a group: of its subtasks, doc_id `subtask:index`) and its chance level."""
    leaves = _leaf_names(raw, name)
    records, chances = [], []
    for leaf in leaves:
        for sample in sorted(raw["samples"][leaf], key=lambda s: s["doc_id"]):
            if sample.get("filter", filter) != filter:
                continue
            doc_id = f"{leaf}:{sample['doc_id']}" if len(leaves) > 1 or leaf != name else None
            record, chance = sample_record(sample, metric, doc_id)
            records.append(record)
            chances.append(chance)
    return records, float(np.mean(chances)) if chances else 0.0


def with_examples(result: dict, records: list[dict], chance: float, name: str) -> dict:
    """`result` with its examples, the accuracy made their mean (lm-eval's own figure checked against it)."""
    mean = sum(r["correct"] for r in records) / len(records) if records else float("nan")
    if not math.isclose(mean, result["value"], rel_tol=1e-9, abs_tol=1e-9):
        raise RuntimeError(f"task {name!r}: lm-eval reports {result['value']} but its samples average {mean}")
    return {**result, "value": mean, "n": len(records), "chance": chance, "examples": records}


def document_count(task_dict: dict) -> dict[str, int]:
    """{leaf task: documents in its evaluation split} of a `get_task_dict` mapping (groups flattened)."""
    counts = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            counts.update(document_count(value))
        else:
            counts[str(key)] = len(value.eval_docs)
    return counts


def benchmarks_with_local_data(tasks: list[str], data_dir: Path | None) -> list[str]:
    """The lm-eval tasks among `tasks` to read from the local data folder (none without one)."""
    if not tasks or data_dir is None:
        return []
    index = official_task_index()
    return [t for t in tasks if has_local_data(t, index, data_dir)]


def evaluate_harness(spec: ModelSpec, tasks: list[str], cfg: EvaluateConfig) -> dict[str, dict]:
    """Results of `spec` on lm-eval `tasks`: {task: {metric, value, stderr, n, chance, examples}}.

    With `cfg.limit`, each task (each subtask of a group) is scored on a seeded random sample of its
    documents (`draw_documents`), the same for every model.
    """
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
    from lm_eval.tasks import TaskManager, get_task_dict

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
            counts = document_count(get_task_dict(group, manager))
            documents = {leaf: draw_documents(n, cfg.limit, cfg.seed, leaf) for leaf, n in counts.items()
                         if cfg.limit is not None and cfg.limit < n}  # absent: the whole split
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=group,
                num_fewshot=shots,
                samples=documents or None,
                task_manager=manager,
                bootstrap_iters=cfg.harness.bootstrap_iters,
                apply_chat_template=cfg.harness.apply_chat_template,
                log_samples=True,
                random_seed=cfg.seed,
            )
            for t in group:
                s = settings[t]
                records, chance = task_examples(raw, t, s.metric, s.filter)
                results[t] = with_examples(task_result(raw, t, s.metric, s.filter), records, chance, t)
    return {t: results[t] for t in tasks}
