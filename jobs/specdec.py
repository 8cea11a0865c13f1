"""Speculative decoding measurement as a Ray job entry point (same flags as `sdd-ray specdec`).

    ray job submit --working-dir . -- python jobs/specdec.py \
        --target toy-teacher --draft no_ft=runs/pruned --data toy:all --k 4 --out runs/specdec.json
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["specdec", *sys.argv[1:]])
