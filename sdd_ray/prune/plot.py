"""The d(l, n) heatmap of Gromov et al. (2024, fig. 1): start layer across, block size up, chosen block boxed."""

from __future__ import annotations

from pathlib import Path

from sdd_ray.plotting import pyplot, save_figure

METRIC_LABELS = {"angular": "angular distance d(l, n)", "bi": "mean block influence BI(l, n)"}


def plot_distances(distances: dict[int, list[float]], out: str | Path, metric: str = "angular",
                   chosen: tuple[int, int] | None = None, title: str | None = None) -> Path:
    """Write the heatmap to `out` (PNG). `chosen` = (start layer, block size) is boxed in red; each
    row's minimum is dotted."""
    import numpy as np

    plt = pyplot()
    sizes = sorted(distances)
    num_layers = max(sizes) + 1
    grid = np.full((len(sizes), num_layers), np.nan)  # (block sizes, start layers)
    for row, n in enumerate(sizes):
        grid[row, : len(distances[n])] = distances[n]

    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * num_layers + 2), max(3.5, 0.3 * len(sizes) + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis",
                      extent=(-0.5, num_layers - 0.5, sizes[0] - 0.5, sizes[-1] + 0.5))
    fig.colorbar(image, ax=ax, label=METRIC_LABELS.get(metric, metric))
    minima = [int(np.nanargmin(grid[row])) for row in range(len(sizes))]
    ax.scatter(minima, sizes, s=12, c="white", edgecolors="black", linewidths=0.5, label="row minimum")
    if chosen is not None:
        start, size = chosen
        ax.add_patch(plt.Rectangle((start - 0.5, size - 0.5), 1, 1, fill=False,
                                                  edgecolor="red", linewidth=2.0, label=f"removed: layers {start}..{start + size - 1}"))
    ax.set_xlabel("start layer l")
    ax.set_ylabel("block size n")
    ax.set_title(title or f"{METRIC_LABELS.get(metric, metric)}; {num_layers} layers")
    ax.legend(loc="upper right", fontsize=7)
    return save_figure(fig, out, bbox_inches="tight")
