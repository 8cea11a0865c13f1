"""Self-data distillation as a Ray job.

    ray job submit --working-dir . -- python jobs/distill.py --teacher toy-teacher --data toy:all --out runs/distill
    python jobs/distill.py --teacher meta-llama/Llama-3.1-8B-Instruct --data openai/gsm8k:main --task-kind math \
        --backend vllm --num-workers 4 --out /mnt/runs/gsm8k-sdd

Same options as `sdd-ray distill`; inside a Ray job the driver joins the job's cluster. The
`__main__` guard matters for the vllm backend: vLLM spawns processes that re-import this module.
"""

from __future__ import annotations

import sys

import typer

from sdd_ray.config import ConfigError
from sdd_ray.distill.cli import distill
from sdd_ray.models import ModelNotFoundError


def main() -> None:
    try:
        typer.run(distill)
    except (ConfigError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
