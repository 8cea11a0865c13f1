"""Calibration cost against its floor: one plain forward pass over the same batches.

Calibration is a forward pass plus hooks that keep each layer's last-token state (and, for `bi`, a
per-token cosine per layer). The target is at most 1.2x the plain forward pass. Measured three ways:

- `plain_forward`: tokenize + `model(...)` over the batches, nothing kept (the baseline);
- `inprocess_angular` / `inprocess_bi`: `calibration_sums` in this process, same batches;
- `ray_data_1_worker`: `calibration_sums_ray` with one actor, end to end (Ray Data planning, actor
  start and model load included: a fixed cost that large calibration sets amortise).

Each figure is the best of `--repeats` interleaved rounds, as wall time and as this process's CPU
time (the steadier figure on a shared machine; the Ray row has wall time only). Writes
benchmarks/results/prune_calibration.json.

    .venv/bin/python benchmarks/prune_calibration.py [--model toy-teacher] [--samples 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "prune_calibration.json"


def best_of(repeats: int, fns: dict) -> dict[str, dict[str, float]]:
    """Best wall and best CPU (this process) seconds of each function over `repeats` rounds. Rounds
    interleave the functions so that load from other processes falls on all of them alike; on a
    shared machine the CPU time of this process is the steadier figure."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return {name: {kind: min(values) for kind, values in kinds.items()} for name, kinds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy-teacher")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ray-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sdd_ray.data import DataSpec
    from sdd_ray.models import as_spec, load_model_and_tokenizer
    from sdd_ray.prune.calibrate import calibration_sums, tokenize
    from sdd_ray.prune.data import load_calibration_texts
    from sdd_ray.prune.surgery import find_decoder_layers

    spec = as_spec(args.model)
    model, tokenizer = load_model_and_tokenizer(spec)
    num_layers = len(find_decoder_layers(model)[1])
    texts = load_calibration_texts(DataSpec(source="toy:all", split="calibration"), num_samples=args.samples)
    # The same length-sorted batches that calibration_sums forms.
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    ordered = [texts[i] for i in sorted(range(len(texts)), key=lengths.__getitem__)]

    @torch.inference_mode()
    def plain_forward() -> None:
        for start in range(0, len(ordered), args.batch_size):
            batch = tokenize(tokenizer, ordered[start:start + args.batch_size], None)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)

    plain_forward()  # warm-up
    seconds = best_of(args.repeats, {
        "plain_forward": plain_forward,
        "inprocess_angular": lambda: calibration_sums(model, tokenizer, texts, None, args.batch_size, "angular"),
        "inprocess_bi": lambda: calibration_sums(model, tokenizer, texts, None, args.batch_size, "bi"),
    })
    if not args.no_ray:
        import ray

        from sdd_ray.prune.ray_calibration import calibration_sums_ray
        from sdd_ray.runtime import connect

        connect(num_cpus=2, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        seconds.update(best_of(args.ray_repeats, {"ray_data_1_worker": lambda: calibration_sums_ray(
            spec, texts, num_layers, None, args.batch_size, "angular", num_workers=1, cpus_per_worker=1.0)}))
        ray.shutdown()

    if "ray_data_1_worker" in seconds:
        del seconds["ray_data_1_worker"]["cpu"]  # the work runs in the actor's process, not this one
    base = seconds["plain_forward"]
    result = {
        "benchmark": "prune_calibration",
        "command": " ".join(["python", "benchmarks/prune_calibration.py", *sys.argv[1:]]),
        "model": spec.path if args.model != "toy-teacher" else "toy-teacher",
        "num_layers": num_layers,
        "samples": len(texts),
        "tokens": sum(lengths),
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "repeats": {"inprocess": args.repeats, "ray": args.ray_repeats},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}",
        "seconds": {name: {k: round(v, 4) for k, v in t.items()} for name, t in seconds.items()},
        "ratio_to_plain_forward": {
            name: {kind: round(value / base[kind], 3) for kind, value in t.items()} for name, t in seconds.items()
        },
        "target_ratio": 1.2,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
