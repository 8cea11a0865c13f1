"""Per-document results, seeded document samples, paired statistics on hand-computed cases, fidelity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sdd_ray.config import ConfigError, validate_config
from sdd_ray.evaluate.compare import run_compare
from sdd_ray.evaluate.config import EvaluateConfig
from sdd_ray.evaluate.examples import draw_documents, write_examples
from sdd_ray.evaluate.fidelity import expected_accepted_length, summarize, token_fidelity
from sdd_ray.evaluate.harness import sample_record, task_examples, with_examples
from sdd_ray.evaluate.paired import mcnemar_p, paired_bootstrap, paired_t_p
from sdd_ray.evaluate.recovery import ResultsMismatchError, chance_corrected_recovery_pct

# ---------------------------------------------------------------- paired statistics, known answers


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a), np.array(b)


def test_exact_mcnemar_on_hand_computed_cases():
    # 1 vs 5 discordant pairs: P = 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64
    assert mcnemar_p(*outcomes(40, 1, 5, 10)) == pytest.approx(14 / 64)
    assert mcnemar_p(*outcomes(40, 5, 1, 10)) == pytest.approx(14 / 64)  # symmetric
    assert mcnemar_p(*outcomes(3, 0, 6, 3)) == pytest.approx(2 / 64)
    assert mcnemar_p(*outcomes(3, 2, 2, 3)) == 1.0  # 2 * (1 + 4 + 6) / 16 > 1, capped
    assert mcnemar_p(*outcomes(5, 0, 0, 5)) == 1.0  # no discordant pairs
    assert mcnemar_p(*outcomes(0, 0, 30, 0)) == pytest.approx(2 / 2**30)


def test_paired_t_test_on_a_hand_computed_case():
    # d = 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3) on 2 degrees of freedom: p = 1 - t / sqrt(t^2 + 2) = 0.0742
    t = 2 * math.sqrt(3)
    assert paired_t_p(np.zeros(3), np.array([1.0, 2.0, 3.0])) == pytest.approx(1 - t / math.sqrt(t**2 + 2), rel=1e-6)
    assert paired_t_p(np.ones(4), np.ones(4)) == 1.0


def test_bootstrap_on_degenerate_and_known_cases():
    a, b = outcomes(0, 0, 20, 0)  # b right on every document, a on none: every resample differs by exactly 1
    result = paired_bootstrap({"t": a}, {"t": b}, resamples=10_000, seed=0)
    assert (result["t"].diff, result["t"].ci_low, result["t"].ci_high) == (1.0, 1.0, 1.0)
    assert result["t"].p_value == pytest.approx(1 / 10_001)
    same = paired_bootstrap({"t": a}, {"t": a})["t"]
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # a large task: the percentile CI is close to the normal one, mean +- 1.96 sd / sqrt(n)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, 2000)
    y = np.where(rng.random(2000) < 0.2, 1 - x, x)
    r = paired_bootstrap({"t": x}, {"t": y}, seed=3)["t"]
    d = y - x
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert r.diff == pytest.approx(d.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), abs=0.004)


def test_bootstrap_average_is_the_mean_of_task_differences_and_seeded():
    a1, b1 = outcomes(10, 0, 10, 0)  # +0.5 on task 1
    a2, b2 = outcomes(10, 0, 0, 10)  # 0 on task 2
    r = paired_bootstrap({"t1": a1, "t2": a2}, {"t1": b1, "t2": b2}, resamples=2000, seed=7)
    assert r["average"].diff == 0.25
    assert r["t2"].ci_low == r["t2"].ci_high == 0.0
    assert r["average"].ci_low < 0.25 < r["average"].ci_high  # half the spread of task 1's
    assert r["average"].ci_high - r["average"].ci_low == pytest.approx((r["t1"].ci_high - r["t1"].ci_low) / 2, abs=0.02)
    again = paired_bootstrap({"t1": a1, "t2": a2}, {"t1": b1, "t2": b2}, resamples=2000, seed=7)
    assert again == r


# ---------------------------------------------------------------- seeded samples and per-document files


def test_document_samples_are_seeded_and_the_same_for_every_model():
    drawn = draw_documents(10_042, 300, 0, "hellaswag")
    assert drawn == draw_documents(10_042, 300, 0, "hellaswag")
    assert len(set(drawn)) == 300 and drawn == sorted(drawn)
    assert drawn != list(range(300))  # not the first 300
    assert max(drawn) > 5000  # reaches beyond the first documents (HellaSwag's WikiHow half)
    assert drawn != draw_documents(10_042, 300, 1, "hellaswag")
    assert draw_documents(8, 20, 0, "x") == list(range(8)) == draw_documents(8, None, 0, "x")


def lm_eval_sample(doc_id: int, lls: list[float], gold, metric_value: float, options: list[str]) -> dict:
    return {"doc_id": doc_id, "target": gold, "filter": "none", "acc": metric_value, "acc_norm": metric_value,
            "filtered_resps": [(ll, False) for ll in lls], "arguments": [("ctx", f" {o}") for o in options]}


def test_lm_eval_samples_become_records_with_the_gold_probability():
    record, chance = sample_record(lm_eval_sample(3, [-1.0, -2.0], 0, 1.0, ["ab", "cd"]), "acc")
    assert record == {"doc_id": 3, "correct": 1.0, "score": pytest.approx(1 / (1 + math.exp(-1)))} and chance == 0.5
    # acc_norm: per character; option 1 has 4 characters: -4/4 = -1 beats -1.5/1
    record, _ = sample_record(lm_eval_sample(0, [-1.5, -4.0], "1", 1.0, ["a", "abcd"]), "acc_norm")
    assert record["score"] == pytest.approx(math.exp(-1.0) / (math.exp(-1.0) + math.exp(-1.5)))
    lambada = {"doc_id": 5, "target": " word", "filter": "none", "acc": 0.0, "filtered_resps": [(-2.5, False)],
               "arguments": [("ctx", " word")]}
    assert sample_record(lambada, "acc") == ({"doc_id": 5, "correct": 0.0, "score": -2.5}, 0.0)
    generated = {"doc_id": 1, "target": "4", "filter": "strict-match", "exact_match": 1.0, "filtered_resps": ["4"]}
    assert sample_record(generated, "exact_match") == ({"doc_id": 1, "correct": 1.0, "score": 1.0}, 0.0)


def test_task_accuracy_is_the_mean_of_its_records():
    raw = {"samples": {"piqa": [lm_eval_sample(i, [-1.0, -2.0], i % 2, float(i % 2 == 0), ["a", "b"])
                                for i in (9, 2, 4)]}}
    records, chance = task_examples(raw, "piqa", "acc", "none")
    assert [r["doc_id"] for r in records] == [2, 4, 9] and chance == 0.5
    result = with_examples({"metric": "acc", "value": 2 / 3, "n": 3}, records, chance, "piqa")
    assert result["value"] == sum(r["correct"] for r in records) / 3
    with pytest.raises(RuntimeError, match="lm-eval reports 0.5 but its samples average 0.666"):
        with_examples({"metric": "acc", "value": 0.5, "n": 3}, records, chance, "piqa")


def results_file(tmp_path, name: str, correct: dict[str, list[float]], doc_ids=None) -> str:
    tasks = {}
    for task, values in correct.items():
        ids = doc_ids or list(range(len(values)))
        n = len(values)
        p = sum(values) / n
        tasks[task] = {"metric": "acc", "value": p, "n": n, "chance": 0.5, "stderr": math.sqrt(p * (1 - p) / (n - 1)),
                       "examples": [{"doc_id": i, "correct": c, "score": 0.4 + 0.2 * c} for i, c in zip(ids, values)]}
    out = tmp_path / name / "results.json"
    out.parent.mkdir()
    results = write_examples({"model": name, "seed": 0, "tasks": tasks}, out)
    out.write_text(json.dumps(results))
    return str(out)


def test_compare_writes_paired_rows_and_refuses_other_documents(tmp_path):
    a = {"piqa": [1.0] * 40 + [1.0] * 1 + [0.0] * 5 + [0.0] * 10, "arc": [1.0] * 10 + [0.0] * 10}
    b = {"piqa": [1.0] * 40 + [0.0] * 1 + [1.0] * 5 + [0.0] * 10, "arc": [1.0] * 10 + [0.0] * 10}
    paths = [results_file(tmp_path, "a", a), results_file(tmp_path, "b", b)]
    assert json.loads(open(paths[0]).read())["tasks"]["piqa"]["samples"] == "results.piqa.jsonl"
    run_compare(paths, tmp_path / "cmp", ["a", "b"], pairs=["b:a"], resamples=2000)
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rows = {r["task"]: r for r in data["paired"]}
    assert set(rows) == {"piqa", "arc", "average"}
    assert (rows["piqa"]["a"], rows["piqa"]["b"], rows["piqa"]["n"]) == ("a", "b", 56)
    assert rows["piqa"]["diff"] == pytest.approx(100 * 4 / 56)
    assert rows["piqa"]["p_value"] == pytest.approx(14 / 64)  # exact McNemar, 1 vs 5
    assert rows["arc"]["diff"] == rows["arc"]["ci_low"] == rows["arc"]["ci_high"] == 0.0
    assert rows["average"]["diff"] == pytest.approx(100 * 2 / 56)
    assert rows["piqa"]["score_diff"] == pytest.approx(0.2 * 4 / 56)
    # paired: the CI of the difference is narrower than the one the models' own standard errors give
    assert rows["piqa"]["ci_high"] - rows["piqa"]["ci_low"] < rows["piqa"]["unpaired_ci_high"] - rows["piqa"]["unpaired_ci_low"]
    # arc is at chance (0.5) for both: (45/56 - 0.5) / (41/56 - 0.5) = 17 / 13
    assert data["chance_corrected_recovery_pct"][1] == pytest.approx(100 * 17 / 13)
    assert "| b - a | piqa | 56 | +7.1 |" in (tmp_path / "cmp" / "comparison.md").read_text()
    other = results_file(tmp_path, "c", b, doc_ids=list(range(1, 57)))
    with pytest.raises(ResultsMismatchError, match="task '(arc|piqa)' was scored on different documents"):
        run_compare([paths[0], other], tmp_path / "cmp2", ["a", "c"], pairs=["c:a"])


def test_chance_corrected_recovery():
    def res(**values):
        return {"tasks": {t: {"metric": "acc", "value": v, "n": 10, "chance": c} for t, (v, c) in values.items()}}

    base = res(piqa=(0.7, 0.5), hellaswag=(0.45, 0.25))  # avg 0.575, floor 0.375
    at_chance = res(piqa=(0.5, 0.5), hellaswag=(0.25, 0.25))
    assert chance_corrected_recovery_pct(at_chance, base) == pytest.approx(0.0)
    assert chance_corrected_recovery_pct(res(piqa=(0.6, 0.5), hellaswag=(0.35, 0.25)), base) == pytest.approx(50.0)


# ---------------------------------------------------------------- fidelity


def test_token_fidelity_on_hand_computed_distributions():
    ref = torch_tensor([[math.log(0.5), math.log(0.5)], [0.0, -30.0]])
    model = torch_tensor([[math.log(0.25), math.log(0.75)], [0.0, -30.0]])
    values = token_fidelity(ref, model, torch_tensor([0, 0], dtype="long"))
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert values["kl"].tolist() == pytest.approx([kl, 0.0], abs=1e-6)
    assert values["agree"].tolist() == [0.0, 1.0]  # tie 0.5/0.5 -> token 0 against the model's token 1
    assert values["nll"].tolist() == pytest.approx([-math.log(0.25), 0.0], abs=1e-6)
    assert expected_accepted_length(1.0, 4) == 5.0
    assert expected_accepted_length(0.5, 4) == pytest.approx(1.9375)  # 1 + .5 + .25 + .125 + .0625
    summary = summarize([{"kl": 0.1, "agreement": 1.0, "nll": 1.0, "tokens": 3},
                         {"kl": 0.5, "agreement": 0.0, "nll": 2.0, "tokens": 1}], 4)
    assert (summary["kl"], summary["top1_agreement"], summary["tokens"]) == pytest.approx((0.2, 0.75, 4))


def torch_tensor(values, dtype: str = "float"):
    import torch

    return torch.tensor(values, dtype=getattr(torch, dtype))


@pytest.mark.timeout(900)
def test_fidelity_of_a_model_to_itself_is_perfect_and_its_answers_are_cached(toy_teacher, tmp_path, monkeypatch):
    from sdd_ray.evaluate import fidelity

    cfg = validate_config(EvaluateConfig, {
        "model": {"path": str(toy_teacher)}, "tasks": ["fidelity"], "reference": str(toy_teacher), "limit": 3,
        "fidelity": {"prompts": {"source": "toy:arith", "split": "test"}, "max_new_tokens": 12,
                     "cache_dir": str(tmp_path / "cache")},
    })
    first = fidelity.evaluate_fidelity(cfg)
    assert first["kl"] == 0.0 and first["top1_agreement"] == 1.0 and first["expected_accepted_length"] == 5.0
    assert first["n"] == 3 and first["tokens"] > 3 and first["nll"] > 0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("the reference's answers were generated again")

    monkeypatch.setattr(fidelity, "generate_texts", no_generation)
    again = fidelity.evaluate_fidelity(cfg)
    assert again["examples"] == first["examples"]


def test_fidelity_needs_a_reference():
    from sdd_ray.evaluate.fidelity import evaluate_fidelity

    cfg = validate_config(EvaluateConfig, {"model": {"path": "m"}, "tasks": ["fidelity"]})
    with pytest.raises(ConfigError, match="task `fidelity` needs the original model"):
        evaluate_fidelity(cfg)


def test_token_batches_bound_rows_times_longest_length():
    from sdd_ray.evaluate.harness_lm import token_batches

    lengths = [10, 900, 880, 50, 870, 40, 45]
    batches = token_batches(lengths, 2000, 8)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) * lengths[b[0]] <= 2000 or len(b) == 1 for b in batches)
    assert batches[:2] == [[1, 2], [4, 3]]  # 2 x 900 fits, a third row would not; 870 pads the 50
    assert token_batches([5] * 10, 10_000, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the row cap
    assert token_batches([5000], 100, 4) == [[0]]  # a row longer than the budget still runs, alone
