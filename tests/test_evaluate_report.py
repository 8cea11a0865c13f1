"""The pipeline report's use of the evaluation: paired comparisons on any arm labels, fidelity per arm."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sdd_ray.evaluate.examples import write_examples
from sdd_ray.pipeline.report import default_pairs, fidelity_table, paired_rows


def test_default_pairs_follow_the_arm_labels():
    assert default_pairs(["baseline", "no_ft", "sft", "sdd", "merged"]) == [
        "sft:no_ft", "sdd:no_ft", "merged:no_ft", "sdd:sft"]
    assert default_pairs(["baseline", "no_ft", "sft-s0", "sdd-s0", "sft-s1", "sdd-s1"]) == [
        "sft-s0:no_ft", "sdd-s0:no_ft", "sft-s1:no_ft", "sdd-s1:no_ft", "sdd-s0:sft-s0", "sdd-s1:sft-s1"]
    assert default_pairs(["baseline", "sdd"]) == []


@dataclass
class FakePlan:
    """What the report reads of a plan: the evaluation jobs and where their results are."""

    root: Path
    evaluations: dict = field(default_factory=dict)

    def artifact(self, job: str) -> Path:
        return self.root / job / "results.json"


def write_arm(plan: FakePlan, arm: str, size: int | None, correct: list[float], fidelity: dict | None = None) -> None:
    out = plan.artifact(arm)
    out.parent.mkdir(parents=True)
    n = len(correct)
    tasks = {"facts": {"metric": "acc", "value": sum(correct) / n, "n": n, "chance": 0.25, "stderr": 0.1,
                       "examples": [{"doc_id": i, "correct": c, "score": c} for i, c in enumerate(correct)]}}
    results = {"model": arm, "seed": 0, "tasks": tasks, "average": sum(correct) / n}
    if fidelity:
        results["fidelity"] = fidelity
    out.write_text(json.dumps(write_examples(results, out)))
    plan.evaluations[(arm, size)] = arm


def test_report_pairs_arms_with_any_labels(tmp_path):
    plan = FakePlan(tmp_path)
    write_arm(plan, "baseline", None, [1.0] * 8)
    write_arm(plan, "no_ft", 2, [0.0] * 8)
    write_arm(plan, "sft-s0", 2, [1.0] * 4 + [0.0] * 4)
    write_arm(plan, "sdd-s0", 2, [1.0] * 6 + [0.0] * 2)
    rows = paired_rows(plan, 2, None, resamples=500)
    pairs = {(r["b"], r["a"]) for r in rows}
    assert pairs == {("sft-s0", "no_ft"), ("sdd-s0", "no_ft"), ("sdd-s0", "sft-s0")}
    by = {(r["b"], r["a"], r["task"]): r for r in rows}
    assert by[("sdd-s0", "sft-s0", "facts")]["diff"] == 25.0
    assert by[("sdd-s0", "sft-s0", "facts")]["p_value"] == 0.5  # McNemar: 0 vs 2 discordant, 2 / 4
    assert by[("sdd-s0", "no_ft", "average")]["ci_low"] > 0
    assert [(r["b"], r["a"]) for r in paired_rows(plan, 2, ["sdd-s0:baseline", "x:no_ft"], resamples=100)][:1] == [
        ("sdd-s0", "baseline")]  # configured pairs; a pair of arms that did not run is left out


def test_report_fidelity_table():
    fidelity = {"kl": 0.2, "top1_agreement": 0.8, "expected_accepted_length": 3.36, "k": 4, "nll": 1.5, "n": 3,
                "tokens": 30, "samples": "results.fidelity.jsonl"}
    table = fidelity_table({"baseline": {"tasks": {}}, "sdd": {"tasks": {}, "fidelity": fidelity}})
    assert table == {"sdd": {k: v for k, v in fidelity.items() if k != "samples"}}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_pipeline_report_has_paired_differences_and_fidelity(ray_local, toy_teacher, tmp_path):
    """baseline -> prune -> evaluate with `fidelity`: the report pairs no_ft with the baseline, fidelity per arm.
    The toy teacher, not a random model: recovery needs a baseline that scores above 0."""
    import yaml

    from sdd_ray.pipeline.config import load_run_config
    from sdd_ray.pipeline.run import run_pipeline

    data = {
        "model": str(toy_teacher), "out": str(tmp_path / "run"),
        "prune": {"block_size": 2, "num_samples": 8, "num_workers": 0, "max_length": 64},
        "evaluate": {"limit": 3, "batch_size": 8, "tasks": ["facts", "fidelity"], "pairs": ["no_ft:baseline"],
                     "fidelity": {"prompts": {"source": "toy:instruct", "split": "test"}, "max_new_tokens": 6,
                                  "cache_dir": str(tmp_path / "cache")}},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    summary = run_pipeline(load_run_config(tmp_path / "run.yaml"))
    assert {(r["b"], r["a"], r["task"]) for r in summary["paired"]} >= {("no_ft", "baseline", "facts"),
                                                                        ("no_ft", "baseline", "average")}
    assert summary["fidelity"]["baseline"]["kl"] == 0.0 and summary["fidelity"]["baseline"]["top1_agreement"] == 1.0
    assert summary["fidelity"]["no_ft"]["kl"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Paired differences" in report and "## Fidelity to the original" in report


def test_plan_measures_every_arm_against_the_unpruned_model(tmp_path, tiny_llama):
    import yaml

    from sdd_ray.pipeline.config import load_run_config
    from sdd_ray.pipeline.plan import build_plan

    data = {"model": str(tiny_llama), "out": str(tmp_path / "run"),
            "prune": {"block_size": 2, "num_samples": 8, "num_workers": 0},
            "evaluate": {"limit": 3, "tasks": ["facts", "fidelity"], "pairs": ["no_ft:baseline"]}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    cfg = load_run_config(tmp_path / "run.yaml")
    plan = build_plan(cfg, tmp_path / "run")
    jobs = {arm: job for (arm, _), job in plan.evaluations.items()}
    assert set(jobs) == {"baseline", "no_ft"}
    assert {job.config.reference for job in jobs.values()} == {str(tiny_llama)}
    assert jobs["no_ft"].config.model.path != str(tiny_llama) and jobs["no_ft"].config.pairs == ["no_ft:baseline"]
    without = build_plan(load_run_config(tmp_path / "run.yaml").model_copy(
        update={"evaluate": cfg.evaluate.model_copy(update={"tasks": ["facts"]})}), tmp_path / "run")
    assert all(job.config.reference is None for job in without.evaluations.values())
