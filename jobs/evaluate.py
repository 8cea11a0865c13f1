"""Evaluation as a Ray job entry point (same flags as `sdd-ray evaluate`; add `--ray`).

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --model runs/sdd --baseline meta-llama/Llama-3.1-8B-Instruct --evaluator harness \
        --backend vllm --ray --num-gpus 1 --limit 0 --out runs/sdd/results.json

With `--ray` the model and a baseline model are evaluated in parallel as Ray tasks, each on the
resources asked for (`--num-gpus 1`: one GPU per model); results.json is written by the driver.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
