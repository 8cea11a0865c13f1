"""The whole pipeline as one Ray job (the arguments of `sdd-ray run`: CONFIG, --out, --address).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py configs/demo.yaml

Joins the cluster the job runs on (RAY_ADDRESS is set by the job), runs every stage of the config,
and writes `<out>/report.md` and `<out>/summary.json`.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
