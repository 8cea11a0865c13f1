"""The paper-style comparison table (rows = models, columns = tasks, average, recovery %) and paired differences.

Accuracies are shown in percent. Recovery is against one row, the unpruned baseline (the first
results file unless named), and every results file must cover the baseline's tasks with the same
metrics, or the averages would not be comparable. Pairs `b:a` get the difference b - a per task
and for the average with a paired bootstrap CI and p-values (`paired`), from the per-document files.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdd_ray.evaluate.recovery import (
    ResultsError,
    average,
    chance_corrected_recovery_pct,
    chance_level,
    check_same_tasks,
    load_results,
    recovery_pct,
)
from sdd_ray.io import write_json, write_text
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
    stderrs: list[dict[str, float | None]] = field(default_factory=list)
    chance: dict[str, float | None] = field(default_factory=dict)
    chance_recovery: list[float | None] = field(default_factory=list)
    """(average - chance) / (baseline average - chance) x 100, per model."""
    paired: list[dict] = field(default_factory=list)


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
        stderrs=[{t: r["tasks"][t].get("stderr") for t in tasks} for r in results],
        chance={t: chance_level(t, base["tasks"][t]) for t in tasks},
        chance_recovery=[chance_corrected_recovery_pct(r, base) for r in results],
    )


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _chance_average(c: Comparison) -> float | None:
    values = list(c.chance.values())
    return None if any(v is None for v in values) else sum(values) / len(values)


def to_markdown(c: Comparison) -> str:
    """A Markdown table, accuracies in percent with one decimal, then the paired differences."""
    header = ["Model", *c.tasks, "Average", "Recovery %", "Chance-corrected recovery %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    chance_recovery = c.chance_recovery or [None] * len(c.names)
    for name, scores, avg, rec, ccr in zip(c.names, c.scores, c.averages, c.recovery, chance_recovery):
        cells = [name, *(f"{100 * scores[t]:.1f}" for t in c.tasks), f"{100 * avg:.1f}", f"{rec:.1f}", _pct(ccr)]
        lines.append("| " + " | ".join(cells) + " |")
    if c.chance:
        floor = _chance_average(c)
        cells = ["(chance)", *(_pct(None if c.chance[t] is None else 100 * c.chance[t]) for t in c.tasks),
                 _pct(None if floor is None else 100 * floor), "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    metrics = ", ".join(f"{t}: {m}" for t, m in c.metrics.items())
    lines.append("")
    lines.append(f"Metrics: {metrics}. Recovery % = average / average of {c.baseline} x 100 (the paper's ratio); "
                 f"chance-corrected recovery % = (average - chance) / (average of {c.baseline} - chance) x 100, "
                 "chance = the mean over tasks of 1 / options (0 for generated answers).")
    if c.paired:
        lines += ["", paired_markdown(c.paired)]
    return "\n".join(lines) + "\n"


def paired_markdown(rows: list[dict]) -> str:
    """The paired differences as a Markdown table (accuracy points, b - a)."""
    lines = [
        "| b - a | task | n | diff (points) | 95% CI, paired | p | 95% CI, unpaired | score diff | score 95% CI | score p |",
        "|---|---|---:|---:|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        score = (f"{r['score_diff']:+.4f} | [{r['score_ci_low']:+.4f}, {r['score_ci_high']:+.4f}] | {r['score_p_value']:.3g}"
                 if r.get("score_diff") is not None else "– | – | –")
        unpaired = ("–" if r.get("unpaired_ci_low") is None
                    else f"[{r['unpaired_ci_low']:+.1f}, {r['unpaired_ci_high']:+.1f}]")
        d = 4 if r["task"].startswith("fidelity") else 1  # fidelity rows: nats and shares, not points
        lines.append(f"| {r['b']} - {r['a']} | {r['task']} | {r['n']} | {r['diff']:+.{d}f} | "
                     f"[{r['ci_low']:+.{d}f}, {r['ci_high']:+.{d}f}] | {r['p_value']:.3g} | {unpaired} | {score} |")
    lines += ["", "Paired: documents resampled within each task, the same draw for both models (bootstrap); "
              "p: exact McNemar per task, the bootstrap for the average; score: the per-document continuous score "
              "(probability of the gold option, LAMBADA log-probability), p from the paired t-test. "
              "Unpaired: ±1.96 x sqrt(se_a² + se_b²), what the two models' own standard errors alone would give."]
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
    stderrs = c.stderrs or [{} for _ in c.names]
    for i, (name, scores, avg, rec, se) in enumerate(zip(c.names, c.scores, c.averages, c.recovery, stderrs)):
        values = [100 * scores[t] for t in c.tasks] + [100 * avg]
        errors = [196 * (se.get(t) or 0.0) for t in c.tasks]
        errors.append(196 * math.sqrt(sum((se.get(t) or 0.0) ** 2 for t in c.tasks)) / len(c.tasks))
        xs = [k + (i - (len(c.names) - 1) / 2) * width for k in range(len(columns))]
        ax.bar(xs, values, width, yerr=errors, capsize=2, label=f"{name} ({rec:.1f}% recovery)")
    floor = _chance_average(c)
    chances = [c.chance.get(t) for t in c.tasks] + [floor]
    for k, level in enumerate(chances):
        if level is not None:
            ax.hlines(100 * level, k - 0.45, k + 0.45, colors="black", linestyles="dashed", linewidth=1,
                      label="chance" if k == 0 else None)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(4, len(c.names)))
    ax.set_title(f"Accuracy per task (95% CI of each model; dashed: chance); recovery vs {c.baseline}")
    fig.tight_layout()
    return save_figure(fig, out)


def parse_pairs(pairs: list[str], names: list[str]) -> list[tuple[str, str]]:
    """`["b:a", ...]` -> [(b, a), ...], each name one of `names`."""
    parsed = []
    for pair in pairs:
        b, sep, a = pair.partition(":")
        if not sep or b not in names or a not in names or a == b:
            raise ResultsError(f"pair {pair!r}: expected b:a with two different names from {names}")
        parsed.append((b, a))
    return parsed


def add_paired(c: Comparison, paths: list[str | Path], results: list[dict], pairs: list[tuple[str, str]],
               resamples: int = 10_000, seed: int = 0) -> Comparison:
    """`c` with `paired` filled for each (b, a) pair, from the results' per-document files."""
    from sdd_ray.evaluate.pairing import compare_pair

    index = {name: i for i, name in enumerate(c.names)}
    c.paired = [row for b, a in pairs for row in compare_pair(
        (a, paths[index[a]], results[index[a]]), (b, paths[index[b]], results[index[b]]), c.tasks, resamples, seed)]
    return c


def comparison_json(c: Comparison) -> dict:
    data = asdict(c)
    data["recovery_pct"] = data.pop("recovery")
    data["chance_corrected_recovery_pct"] = data.pop("chance_recovery")
    return data


def run_compare(
    paths: list[str | Path], out_dir: str | Path, names: list[str] | None = None, baseline: str | None = None,
    pairs: list[str] | None = None, resamples: int = 10_000, seed: int = 0,
) -> dict:
    """Write `comparison.{md,csv,json,png}` for the results files in `paths`.

    `pairs` (`b:a` by name; default: every row against the baseline) get paired differences where every
    result has per-document files.
    """
    results = [load_results(p) for p in paths]
    comparison = build_comparison(results, names, baseline)
    if pairs is None:
        pairs = [f"{n}:{comparison.baseline}" for n in comparison.names if n != comparison.baseline]
        if not all("samples" in t for r in results for t in r["tasks"].values()):
            pairs = []  # results written before per-document files: the table only
    add_paired(comparison, paths, results, parse_pairs(pairs, comparison.names), resamples, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": write_json(comparison_json(comparison), out_dir / "comparison.json"),
        "markdown": write_text(out_dir / "comparison.md", to_markdown(comparison)),
        "csv": write_text(out_dir / "comparison.csv", to_csv(comparison)),
        "chart": bar_chart(comparison, out_dir / "comparison.png"),
    }
    return {"comparison": comparison, "files": {k: str(v) for k, v in files.items()}}
