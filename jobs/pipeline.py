"""The whole pipeline as one Ray job.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py configs/demo.yaml

Joins the cluster the job runs on (RAY_ADDRESS is set by the job), runs every stage of the config,
and writes `<out>/report.md` and `<out>/summary.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main() -> int:
    from sdd_ray.config import ConfigError
    from sdd_ray.models import ModelNotFoundError
    from sdd_ray.pipeline.config import load_run_config
    from sdd_ray.pipeline.run import run_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="run config (YAML)")
    parser.add_argument("--out", help="run directory (default: the config's `out`)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args()
    try:
        cfg = load_run_config(args.config, {"out": args.out})
    except (ConfigError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_pipeline(cfg, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
