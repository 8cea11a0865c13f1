"""Self-data distillation as a Ray job (the flags of `sdd-ray distill`).

    ray job submit --working-dir . -- python jobs/distill.py --teacher toy-teacher --data toy:all --out runs/distill
    python jobs/distill.py --teacher meta-llama/Llama-3.1-8B-Instruct --data openai/gsm8k:main --task-kind math \
        --backend vllm --num-workers 4 --out /mnt/runs/gsm8k-sdd

Inside a Ray job the driver joins the job's cluster. The `__main__` guard matters for the vllm
backend: vLLM spawns processes that re-import this module.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["distill", *sys.argv[1:]])
