"""Distillation throughput: Ray Data generation vs a plain single-process batched `generate` loop.

Same rows, same prompts, same batch size, same torch threads per model replica. Two rates each:
end to end (from model path to all rewrites: the baseline pays its model load, Ray its dataset and
actor start-up, i.e. a fresh Python importing torch), and steady state (tokens after the first
generated batch / time after it), which is what decides a 50k-row job. Then 1 vs 2 Ray workers.
Writes benchmarks/results/distill_throughput.json.

    .venv/bin/python benchmarks/distill_throughput.py [--teacher toy-teacher] [--rows 96]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "distill_throughput.json"


def prompts_for(source: str, rows: int) -> list[str]:
    from sdd_ray.data import DataSpec, load_rows
    from sdd_ray.distill.config import DEFAULT_TEMPLATES
    from sdd_ray.distill.rewrite import load_templates, prompt_for, row_kind

    templates = load_templates(DEFAULT_TEMPLATES)
    valid, _ = load_rows(DataSpec(source=source, limit=rows))
    return [prompt_for(row, row_kind(row, "auto"), templates) for row in valid]


def baseline(teacher: str, prompts: list[str], batch_size: int, max_new_tokens: int, threads: int) -> dict:
    """One process, one model, one loop over batches: what Ray Data has to keep up with."""
    import torch

    from sdd_ray.generation import generate_texts
    from sdd_ray.models import as_spec, load_model_and_tokenizer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(as_spec(teacher))
    loaded = time.perf_counter()
    batch_tokens, first_batch_end = [], None
    for offset in range(0, len(prompts), batch_size):
        results = generate_texts(model, tokenizer, prompts[offset : offset + batch_size], max_new_tokens, batch_size)
        batch_tokens.append(sum(r.new_tokens for r in results))
        first_batch_end = first_batch_end or time.perf_counter()
    end = time.perf_counter()
    tokens = sum(batch_tokens)
    return {"generated_tokens": tokens, "wall_s": round(end - start, 3), "generate_s": round(end - loaded, 3),
            "tokens_per_s": round(tokens / (end - start), 2),
            "steady_tokens_per_s": round((tokens - batch_tokens[0]) / (end - first_batch_end), 2)}


def ray_run(teacher: str, source: str, rows: int, batch_size: int, max_new_tokens: int, workers: int, threads: int) -> dict:
    from sdd_ray.config import validate_config
    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.distill.run import run_distill
    from sdd_ray.models import as_spec

    cfg = validate_config(DistillConfig, {
        "teacher": as_spec(teacher).model_dump(), "data": {"source": source, "limit": rows}, "num_workers": workers,
        "cpus_per_worker": 0.5, "torch_threads": threads, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "progress": False})
    out = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    try:
        stats = run_distill(cfg, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {**{key: stats[key] for key in ("rows_out", "generated_tokens", "wall_s", "tokens_per_s", "num_workers")},
            "first_output_s": stats["this_run"]["first_output_s"],
            "steady_tokens_per_s": stats["this_run"]["steady_tokens_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="toy-teacher")
    parser.add_argument("--source", default="toy:all")
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model replica")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import os

    from sdd_ray.runtime import connect

    connect(num_cpus=os.cpu_count(), log_to_driver=False)
    load_start = round(os.getloadavg()[0], 2)  # the machine is shared: record how busy it was
    prompts = prompts_for(args.source, args.rows)
    common = (args.batch_size, args.max_new_tokens)
    # Baseline on each side of the Ray runs, so that drift in the shared machine's load shows up.
    base_before = baseline(args.teacher, prompts, *common, args.threads)
    one = ray_run(args.teacher, args.source, args.rows, *common, 1, args.threads)
    two = ray_run(args.teacher, args.source, args.rows, *common, 2, args.threads)
    base_after = baseline(args.teacher, prompts, *common, args.threads)
    base_tps = (base_before["tokens_per_s"] + base_after["tokens_per_s"]) / 2
    base_steady = (base_before["steady_tokens_per_s"] + base_after["steady_tokens_per_s"]) / 2
    result = {
        "command": "python benchmarks/distill_throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)}},
        "rows": len(prompts), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "threads_per_replica": args.threads,
        "baseline_single_process": {"before": base_before, "after": base_after, "tokens_per_s_mean": round(base_tps, 2),
                                    "steady_tokens_per_s_mean": round(base_steady, 2)},
        "ray_data_1_worker": one,
        "ray_data_2_workers": two,
        "ratio_steady_ray_1_worker_vs_baseline": round(one["steady_tokens_per_s"] / base_steady, 3),
        "ratio_end_to_end_ray_1_worker_vs_baseline": round(one["tokens_per_s"] / base_tps, 3),
        "ratio_steady_ray_2_workers_vs_1_worker": round(two["steady_tokens_per_s"] / one["steady_tokens_per_s"], 3),
        "ratio_end_to_end_ray_2_workers_vs_1_worker": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "target": "ratio_steady_ray_1_worker_vs_baseline >= 0.9",
        "notes": "steady = tokens after the first generated batch / time after it (start-up excluded); end_to_end "
                 "includes the baseline's model load and Ray's actor start-up (a fresh Python importing torch).",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
