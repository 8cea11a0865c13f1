"""Fine-tuning as a Ray job entry point (same flags as `sdd-ray finetune`).

    ray job submit --working-dir . -- python jobs/finetune.py \
        --model runs/pruned --data runs/sdd --response-column response \
        --strategy deepspeed --zero-stage 3 --lora --gpu --num-workers 8 --epochs 1 --out runs/sdd-ft

The driver checks the data set and builds the `TorchTrainer`; the workers train and the final
checkpoint carries the exported HF model, which the driver copies to `--out` (storage the driver
node can write). Rerunning the same command resumes from the last checkpoint under `--out`.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["finetune", *sys.argv[1:]])
