"""`<out>/report.md` and `<out>/summary.json` from the finished stage outputs.

The report reads only what the stages wrote (results.json, pruning.json, stats.json,
train_metrics.json, specdec.json) and the completion markers (wall times), so it can be rebuilt from
a run directory at any time. Pictures are PNGs beside the report.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from sdd_ray.evaluate.compare import add_paired, bar_chart, build_comparison, paired_markdown, parse_pairs, to_markdown
from sdd_ray.evaluate.endpoint import endpoint_markdown, primary_endpoint
from sdd_ray.io import write_json, write_text
from sdd_ray.pipeline.config import RunConfig
from sdd_ray.pipeline.plan import Plan
from sdd_ray.plotting import pyplot, save_figure

ARM_NAMES = {"baseline": "Baseline", "no_ft": "No FT", "sft": "SFT", "sdd": "SDD", "merged": "Merged (SLERP)"}
"""Display names of the usual arms; any other label (`sdd-s1`) is shown as it is."""


def arm_name(arm: str) -> str:
    return ARM_NAMES.get(arm, arm)


def count_parameters(model_dir: Path) -> int:
    """Parameters in a checkpoint's safetensors files, read from their headers (no weights loaded)."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def arm_paths(plan: Plan, size: int) -> dict[str, Path]:
    """{arm: results.json path} for block size `size`, baseline first, then the arms in plan order; ran only."""
    jobs = sorted(((arm, job) for (arm, bs), job in plan.evaluations.items() if bs in (None, size)),
                  key=lambda item: item[0] != "baseline")
    return {arm: plan.artifact(job) for arm, job in jobs if plan.artifact(job).is_file()}


def arm_results(plan: Plan, size: int) -> dict[str, dict]:
    """{arm: results.json} for block size `size`, baseline first, arms that ran only."""
    return {arm: _read_json(path) for arm, path in arm_paths(plan, size).items()}


def default_pairs(arms: list[str]) -> list[str]:
    """Every fine-tuned arm against `no_ft`, and each `sdd*` arm against the `sft*` arm of the same suffix."""
    pairs = [f"{arm}:no_ft" for arm in arms if "no_ft" in arms and arm not in ("baseline", "no_ft")]
    pairs += [f"{arm}:sft{arm[3:]}" for arm in arms if arm.startswith("sdd") and f"sft{arm[3:]}" in arms]
    return pairs


def paired_rows(plan: Plan, size: int, pairs: list[str] | None, resamples: int = 10_000) -> list[dict]:
    """The paired comparisons of block size `size` (`evaluate.pairs`, else `default_pairs`) on arm labels.

    Pairs whose arms did not run are left out; results without per-document files give none.
    """
    paths = arm_paths(plan, size)
    results = {arm: _read_json(path) for arm, path in paths.items()}
    if len(results) < 2 or not all("samples" in t for r in results.values() for t in r["tasks"].values()):
        return []
    wanted = [p for p in (pairs if pairs is not None else default_pairs(list(results)))
              if all(arm in results for arm in p.split(":", 1))]
    names = list(results)
    comparison = build_comparison(list(results.values()), names)
    return add_paired(comparison, list(paths.values()), list(results.values()), parse_pairs(wanted, names),
                      resamples).paired


def fidelity_table(results: dict[str, dict]) -> dict[str, dict]:
    """{arm: fidelity summary} of the arms evaluated with the `fidelity` task."""
    keys = ("kl", "top1_agreement", "expected_accepted_length", "k", "nll", "n", "tokens")
    return {arm: {k: r["fidelity"][k] for k in keys} for arm, r in results.items() if "fidelity" in r}


def arms_summary(results: dict[str, dict]) -> dict[str, dict]:
    """`arms` of summary.json: per arm {tasks: {task: acc}, average, recovery_pct} (recovery vs baseline)."""
    results = {arm: r for arm, r in results.items() if r["tasks"]}
    if "baseline" not in results:
        return {arm: {"tasks": {t: r["value"] for t, r in res["tasks"].items()}, "average": res["average"],
                      "recovery_pct": None, "chance_corrected_recovery_pct": None} for arm, res in results.items()}
    comparison = build_comparison(list(results.values()), list(results), "baseline")
    return {
        arm: {"tasks": scores, "average": average, "recovery_pct": recovery, "chance_corrected_recovery_pct": corrected}
        for arm, scores, average, recovery, corrected in zip(comparison.names, comparison.scores, comparison.averages,
                                                              comparison.recovery, comparison.chance_recovery)
    }


def specdec_summary(plan: Plan, size: int) -> tuple[dict, dict | None]:
    """(`specdec` of summary.json, the raw specdec.json) for block size `size`."""
    job = plan.specdec.get(size)
    raw = _read_json(plan.artifact(job)) if job is not None else None
    if raw is None:
        return {}, None
    table = {entry["draft"]: {key: entry.get(key) for key in ("mean_accepted_length", "speedup", "acceptance_rate",
                                                               "outputs_identical", "num_layers")}
             for entry in raw["drafts"]}
    return table, raw


def _recovery_table(results: dict[str, dict]) -> tuple[str, object | None]:
    results = {arm: r for arm, r in results.items() if r["tasks"]}
    if "baseline" not in results:
        return "_No baseline evaluation in this run: recovery cannot be computed._\n", None
    names = [arm_name(arm) for arm in results]
    comparison = build_comparison(list(results.values()), names, ARM_NAMES["baseline"])
    return to_markdown(comparison), comparison


def _loss_plot(plan: Plan, size: int, out: Path) -> str | None:
    curves = {}
    for (arm, bs), job in plan.finetune.items():
        metrics = _read_json(plan.artifact(job) / "train_metrics.json") if bs == size else None
        if metrics and metrics.get("steps"):
            curves[arm] = metrics["steps"]
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, steps in curves.items():
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label=arm_name(arm), marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_title(f"Fine-tuning the pruned model (block size {size})")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out / "loss.png").name


def _sweep_plot(rows: list[dict], out: Path) -> str | None:
    if len(rows) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["params_removed_pct"] for r in rows]
    colors = {}
    arms = list(dict.fromkeys(arm for r in rows for arm in [*r["recovery_pct"], *r["mean_accepted_length"]]))
    for arm in arms:
        ys = [r["recovery_pct"].get(arm) for r in rows]
        if any(y is not None for y in ys):
            (line,) = ax.plot(xs, ys, marker="o", label=f"recovery, {arm_name(arm)}")
            colors[arm] = line.get_color()
    ax.set_xticks(xs, [f"{x:.0f}%\nn={r['block_size']}" for x, r in zip(xs, rows)])
    ax.set_xlabel("parameters removed (n: layers removed)")
    ax.set_ylabel("recovery (%)")
    twin = ax.twinx()
    for arm in arms:
        ys = [r["mean_accepted_length"].get(arm) for r in rows]
        if any(y is not None for y in ys):
            twin.plot(xs, ys, linestyle="--", color=colors.get(arm, "gray"), marker="x",
                      label=f"accepted length, {arm_name(arm)}")
    twin.set_ylabel("mean accepted length (tokens / target pass)")
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=7, loc="lower left")
    ax.set_title("Block-size trade-off: quality recovered vs size removed")
    fig.tight_layout()
    return save_figure(fig, out / "sweep.png").name


def _stage_rows(plan: Plan, markers: dict[str, dict]) -> dict[str, dict]:
    return {
        job.label: {"stage": job.unit.stage, "key": job.unit.key, "wall_s": round(markers[job.label]["wall_s"], 2),
                    "cached": markers[job.label].get("cached", False)}
        for job in plan.jobs if job.label in markers
    }


def build_summary(cfg: RunConfig, plan: Plan, markers: dict[str, dict], out: Path, wall_s: float | None = None) -> dict:
    sizes = cfg.prune.block_sizes
    primary = sizes[0]
    base_params = None
    sweep = []
    for size in sizes:
        prune_dir = plan.artifact(plan.prune[size])
        pruning = _read_json(prune_dir / "pruning.json") or {}
        if base_params is None:
            base_params = _baseline_parameters(cfg)
        params = count_parameters(prune_dir)
        arms = arms_summary(arm_results(plan, size))
        specdec, _ = specdec_summary(plan, size)
        sweep.append({
            "block_size": size,
            "removed_layers": pruning.get("removed_layers"),
            "num_layers_after": pruning.get("num_layers_after"),
            "parameters": params,
            "params_removed_pct": 100.0 * (1 - params / base_params) if base_params else None,
            "recovery_pct": {arm: a["recovery_pct"] for arm, a in arms.items() if arm != "baseline"},
            "mean_accepted_length": {d: s["mean_accepted_length"] for d, s in specdec.items()},
        })
    distill = _read_json(plan.artifact(plan.distill) / "stats.json") if plan.distill else None
    primary_results = arm_results(plan, primary)
    paired = paired_rows(plan, primary, cfg.evaluate.pairs)
    summary = {
        "model": cfg.model.path,
        "out": str(out),
        "block_size": primary,
        "arms": arms_summary(primary_results),
        "paired": paired,
        "endpoint": primary_endpoint(paired),
        "fidelity": fidelity_table(primary_results),
        "specdec": specdec_summary(plan, primary)[0],
        "stages": _stage_rows(plan, markers),
        "stage_totals_s": _stage_totals(plan, markers),
        "wall_s": round(wall_s, 1) if wall_s is not None else None,
        "distill": _distill_summary(distill),
        "parameters": {"baseline": base_params, "pruned": sweep[0]["parameters"]},
        "sweep": sweep if len(sizes) > 1 else [],
    }
    return summary


def _stage_totals(plan: Plan, markers: dict[str, dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for job in plan.jobs:
        if job.label in markers:
            totals[job.unit.stage] = round(totals.get(job.unit.stage, 0.0) + markers[job.label]["wall_s"], 2)
    return totals


def _distill_summary(stats: dict | None) -> dict | None:
    if stats is None:
        return None
    scored = stats["teacher_selected"] + stats["original_selected"]
    return {
        "rows_in": stats["rows_in"], "rows_out": stats["rows_out"], "rows_rejected": stats["rows_rejected"],
        "teacher_selected": stats["teacher_selected"], "original_selected": stats["original_selected"],
        "teacher_selected_share": stats["teacher_selected"] / scored if scored else None,
        "generated_tokens": stats["generated_tokens"], "tokens_per_s": stats["tokens_per_s"],
        "wall_s": stats["wall_s"], "backend": stats["backend"], "num_workers": stats["num_workers"],
    }


def _baseline_parameters(cfg: RunConfig) -> int | None:
    path = Path(cfg.model.path)
    return count_parameters(path) if path.is_dir() else None


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def render_report(cfg: RunConfig, plan: Plan, summary: dict, out: Path) -> str:
    size = summary["block_size"]
    lines = [f"# sdd_ray run: {Path(cfg.model.path).name}", ""]
    pruning = _read_json(plan.artifact(plan.prune[size]) / "pruning.json") or {}
    removed = pruning.get("removed_layers", [])
    share = summary["sweep"][0]["params_removed_pct"] if summary["sweep"] else _removed_share(summary)
    lines += [
        f"Model `{cfg.model.path}`; stages {', '.join(cfg.stages)}; outputs under `{out}`.",
        f"Block size **{size}**: layers {removed} of {pruning.get('num_layers_before', '?')} removed "
        f"({_fmt(share, 1, '%')} of the parameters).",
        "", "## Accuracy and recovery", "",
    ]
    results = arm_results(plan, size)
    table, comparison = _recovery_table(results)
    lines.append(table)
    if comparison is not None:
        bar_chart(comparison, out / "accuracy.png")
        lines += ["![accuracy per task](accuracy.png)", ""]
    if summary["endpoint"]:
        lines += ["## Primary endpoint: SDD vs SFT", "",
                  "Δ = SDD − SFT in macro-average accuracy per seed, paired on the same documents; an effect is "
                  "claimed only if every seed's CI excludes 0, the seeds agree in sign and every |Δ| exceeds the "
                  "seed-noise floor |SFT seed 1 − SFT seed 0|. Fidelity (Δ KL to the original, lower is closer) "
                  "is the secondary endpoint.", "", endpoint_markdown(summary["endpoint"])]
    if summary["paired"]:
        lines += ["## Paired differences", "",
                  "Each pair scored on the same documents: the difference b - a in accuracy points with its paired "
                  "95% CI and p-value, beside the unpaired CI that the two models' own standard errors give.", "",
                  paired_markdown(summary["paired"])]
    if summary["fidelity"]:
        lines += ["## Fidelity to the original", "",
                  "On held-out prompts, teacher-forced on the original's greedy answers: mean per-token "
                  "KL(p_original || p_model), top-1 agreement a, expected accepted length (1 - a^(k+1)) / (1 - a), "
                  "and the model's NLL of the original's answers.", "",
                  "| arm | KL (nats/token) | top-1 agreement | expected accepted length | NLL | prompts | tokens |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for arm, f in summary["fidelity"].items():
            lines.append(f"| {arm_name(arm)} | {f['kl']:.4f} | {f['top1_agreement']:.3f} | "
                         f"{f['expected_accepted_length']:.2f} (k={f['k']}) | {f['nll']:.3f} | {f['n']} | {f['tokens']} |")
        lines.append("")

    distances = plan.artifact(plan.prune[size]) / "distances.png"
    if distances.is_file():
        shutil.copyfile(distances, out / "distances.png")
        lines += ["## Layer distances", "",
                  f"Angular distance d(l, n) between the input of layer l and of layer l+n ({pruning.get('metric')}); "
                  "the pruned block is marked.", "", "![distances](distances.png)", ""]

    loss = _loss_plot(plan, size, out)
    if loss:
        lines += ["## Fine-tuning loss", "", f"![loss curves]({loss})", ""]

    distill = summary["distill"]
    if distill:
        lines += ["## Self-data distillation", "",
                  "| rows in | rows out | rejected | teacher-selected | share | generated tokens | tokens/s | wall s | backend |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
                  f"| {distill['rows_in']} | {distill['rows_out']} | {distill['rows_rejected']} | "
                  f"{distill['teacher_selected']} | {_fmt(distill['teacher_selected_share'] and 100 * distill['teacher_selected_share'], 1, '%')} | "
                  f"{distill['generated_tokens']} | {_fmt(distill['tokens_per_s'], 1)} | {_fmt(distill['wall_s'], 1)} | "
                  f"{distill['backend']} x {distill['num_workers']} |", ""]

    _, raw = specdec_summary(plan, size)
    if raw:
        lines += ["## Speculative decoding", "",
                  f"Target `{Path(raw['target']).name}` ({raw['target_num_layers']} layers), k = {raw['k']}, "
                  f"{raw['prompts']} prompts, up to {raw['max_new_tokens']} new tokens; target-only decoding "
                  f"{_fmt(raw['target_only'].get('tokens_per_s'), 1)} tokens/s in the same run.", "",
                  "| draft | layers | mean accepted length | acceptance rate | speedup | outputs identical |",
                  "|---|---:|---:|---:|---:|---|"]
        for entry in raw["drafts"]:
            lines.append(f"| {arm_name(entry['draft'])} | {entry['num_layers']} | "
                         f"{_fmt(entry['mean_accepted_length'])} | {_fmt(entry['acceptance_rate'])} | "
                         f"{_fmt(entry['speedup'])}x | {entry['outputs_identical']} |")
        lines.append("")

    if summary["sweep"]:
        plot = _sweep_plot(summary["sweep"], out)
        lines += ["## Block-size sweep", "",
                  "| block size | params removed | recovery no-FT | SFT | SDD | accepted length no-FT | SFT | SDD |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in summary["sweep"]:
            rec, acc = row["recovery_pct"], row["mean_accepted_length"]
            lines.append(f"| {row['block_size']} | {_fmt(row['params_removed_pct'], 1, '%')} | "
                         + " | ".join(_fmt(rec.get(a), 1) for a in ("no_ft", "sft", "sdd")) + " | "
                         + " | ".join(_fmt(acc.get(a)) for a in ("no_ft", "sft", "sdd")) + " |")
        lines += ["", f"![sweep]({plot})" if plot else "", ""]

    lines += ["## Wall time per stage", "", "| unit | wall s | reused |", "|---|---:|---|"]
    for label, row in summary["stages"].items():
        lines.append(f"| {label} | {row['wall_s']:.1f} | {'yes' if row['cached'] else ''} |")
    lines.append(f"| sum of units | {sum(r['wall_s'] for r in summary['stages'].values()):.1f} | |")
    if summary["wall_s"] is not None:
        lines += ["", f"This run took {summary['wall_s']:.0f} s from start to report (units run side by side "
                      "where resources allow; reused units cost nothing)."]
    return "\n".join(lines) + "\n"


def _removed_share(summary: dict) -> float | None:
    params = summary["parameters"]
    if params["baseline"] and params["pruned"]:
        return 100.0 * (1 - params["pruned"] / params["baseline"])
    return None


def write_report(cfg: RunConfig, plan: Plan, markers: dict[str, dict], out: Path, wall_s: float | None = None) -> dict:
    """Write `<out>/summary.json` and `<out>/report.md` (+ PNGs); returns the summary."""
    summary = build_summary(cfg, plan, markers, out, wall_s)
    report = render_report(cfg, plan, summary, out)
    write_json(summary, out / "summary.json")
    write_text(out / "report.md", report)
    return summary
