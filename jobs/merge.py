"""SLERP merge as a Ray job entry point (same flags as `sdd-ray merge`).

    ray job submit --working-dir . -- python jobs/merge.py \
        --models runs/ft_arith runs/ft_instruct --t 0.5 --out runs/merged

The merge streams tensor by tensor in one process (memory: about one tensor of each parent plus
one output shard), so it runs where the job's driver runs and needs the parents on that node's disk.
"""

from __future__ import annotations

import sys

from sdd_ray.cli import main

if __name__ == "__main__":
    main(["merge", *sys.argv[1:]])
