"""The paper-style comparison table: rows = models, columns = tasks, average, recovery %.

Accuracies are shown in percent. Recovery is against one row, the unpruned baseline (the first
results file unless named), and every results file must cover the baseline's tasks with the same
metrics, or the averages would not be comparable.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from sdd_ray.evaluate.recovery import ResultsError, average, check_same_tasks, load_results, recovery_pct
from sdd_ray.io import write_text
from sdd_ray.plotting import pyplot, save_figure


@dataclass
class Comparison:
    tasks: list[str]
    metrics: dict[str, str]
    names: list[str]
    scores: list[dict[str, float]]  # per model: task -> accuracy (0..1)
    averages: list[float]
    recovery: list[float]
    baseline: str


def default_names(results: list[dict]) -> list[str]:
    """Model directory names, made unique with a suffix where two are equal."""
    names = []
    for r in results:
        base = Path(str(r.get("model", "model"))).name or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def build_comparison(results: list[dict], names: list[str] | None = None, baseline: str | None = None) -> Comparison:
    """Check that every result covers the baseline's tasks, and compute averages and recovery."""
    if not results:
        raise ResultsError("nothing to compare: give at least one results file")
    names = names or default_names(results)
    if len(names) != len(results):
        raise ResultsError(f"{len(names)} names for {len(results)} results files; give one name per file")
    if len(set(names)) != len(names):
        raise ResultsError(f"names repeat: {names}")
    base_index = 0 if baseline is None else names.index(baseline) if baseline in names else -1
    if base_index < 0:
        raise ResultsError(f"baseline {baseline!r} is not one of the names {names}")
    base = results[base_index]
    for name, r in zip(names, results):
        check_same_tasks(r, base, (name, names[base_index]))
    tasks = list(base["tasks"])
    return Comparison(
        tasks=tasks,
        metrics={t: base["tasks"][t]["metric"] for t in tasks},
        names=names,
        scores=[{t: r["tasks"][t]["value"] for t in tasks} for r in results],
        averages=[average(r["tasks"]) for r in results],
        recovery=[recovery_pct(r, base) for r in results],
        baseline=names[base_index],
    )


def to_markdown(c: Comparison) -> str:
    """A Markdown table, accuracies in percent with one decimal."""
    header = ["Model", *c.tasks, "Average", "Recovery %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, scores, avg, rec in zip(c.names, c.scores, c.averages, c.recovery):
        cells = [name, *(f"{100 * scores[t]:.1f}" for t in c.tasks), f"{100 * avg:.1f}", f"{rec:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    metrics = ", ".join(f"{t}: {m}" for t, m in c.metrics.items())
    lines.append("")
    lines.append(f"Metrics: {metrics}. Recovery % = average / average of {c.baseline} x 100.")
    return "\n".join(lines) + "\n"


def to_csv(c: Comparison) -> str:
    """The same table as CSV, accuracies in percent with two decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", *c.tasks, "average", "recovery_pct"])
    for name, scores, avg, rec in zip(c.names, c.scores, c.averages, c.recovery):
        writer.writerow([name, *(f"{100 * scores[t]:.2f}" for t in c.tasks), f"{100 * avg:.2f}", f"{rec:.2f}"])
    return buffer.getvalue()


def bar_chart(c: Comparison, out: str | Path) -> Path:
    """Grouped bars: one group per task and the average, one bar per model."""
    plt = pyplot()

    columns = [*c.tasks, "average"]
    width = 0.8 / len(c.names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(columns) * len(c.names)), 4.5))
    for i, (name, scores, avg, rec) in enumerate(zip(c.names, c.scores, c.averages, c.recovery)):
        values = [100 * scores[t] for t in c.tasks] + [100 * avg]
        xs = [k + (i - (len(c.names) - 1) / 2) * width for k in range(len(columns))]
        ax.bar(xs, values, width, label=f"{name} ({rec:.1f}% recovery)")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(4, len(c.names)))
    ax.set_title(f"Accuracy per task; recovery vs {c.baseline}")
    fig.tight_layout()
    return save_figure(fig, out)


def run_compare(
    paths: list[str | Path], out_dir: str | Path, names: list[str] | None = None, baseline: str | None = None
) -> dict:
    """Write `comparison.md`, `comparison.csv` and `comparison.png` for the results files in `paths`."""
    comparison = build_comparison([load_results(p) for p in paths], names, baseline)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": write_text(out_dir / "comparison.md", to_markdown(comparison)),
        "csv": write_text(out_dir / "comparison.csv", to_csv(comparison)),
        "chart": bar_chart(comparison, out_dir / "comparison.png"),
    }
    return {"comparison": comparison, "files": {k: str(v) for k, v in files.items()}}
