"""Figures: matplotlib set up once (the headless Agg backend: Ray workers and CI have no display), saved atomically."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on the Agg backend; imported on first use, so that importing sdd_ray stays light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Save a figure as PNG (dpi 120 unless given) under a temporary name, rename it into place, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, **{"dpi": 120, **savefig_kwargs})
    pyplot().close(fig)
    tmp.replace(path)
    return path
