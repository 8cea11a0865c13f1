"""Self-data distillation as a Ray job.

    ray job submit --working-dir . -- python jobs/distill.py --teacher toy-teacher --data toy:all --out runs/distill
    python jobs/distill.py --teacher meta-llama/Llama-3.1-8B-Instruct --data openai/gsm8k:main --task-kind math \
        --backend vllm --num-workers 4 --out /mnt/runs/gsm8k-sdd

Same options as `sdd-ray distill`; inside a Ray job the driver joins the job's cluster.
"""

from __future__ import annotations

import typer

from sdd_ray.distill.cli import distill

if __name__ == "__main__":
    typer.run(distill)
