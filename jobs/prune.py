"""Pruning as a Ray job entry point (same flags as `sdd-ray prune`).

    ray job submit --working-dir . -- python jobs/prune.py \
        --model meta-llama/Llama-3.1-8B-Instruct --block-size 6 --calib data/calib.jsonl \
        --num-workers 4 --gpus-per-worker 1 --out runs/pruned

The driver reads and checks the calibration texts, Ray Data actors (one model copy each) compute the
per-batch sums, and the driver chooses the block, removes it and saves the checkpoint, so `--out`
must be on storage the driver node can write.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["prune", *sys.argv[1:]])
