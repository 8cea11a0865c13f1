"""The pre-registered SDD-vs-SFT decision: each of its three conditions can turn a claim into 'no difference'."""

from __future__ import annotations

from sdd_ray.evaluate.endpoint import endpoint_markdown, primary_endpoint


def average(b: str, a: str, diff: float, half: float) -> dict:
    return {"a": a, "b": b, "task": "average", "n": 5000, "diff": diff, "ci_low": diff - half,
            "ci_high": diff + half, "p_value": 0.01}


def rows(sdd0: float, sdd1: float, noise: float, half: float = 1.0) -> list[dict]:
    return [average("sdd-s0", "sft-s0", sdd0, half), average("sdd-s1", "sft-s1", sdd1, half),
            average("sft-s1", "sft-s0", noise, half), average("sft-s0", "no_ft", 5.0, half)]


def test_both_seeds_clear_of_zero_and_of_the_noise_floor_make_a_claim():
    endpoint = primary_endpoint(rows(2.0, 1.6, -0.5))
    assert endpoint["verdict"] == "SDD better than SFT"
    assert endpoint["noise_floor"] == 0.5
    assert [d["seed"] for d in endpoint["seeds"]] == [0, 1]
    assert primary_endpoint(rows(-2.0, -1.6, 0.5))["verdict"] == "SFT better than SDD"


def test_a_ci_touching_zero_disagreeing_seeds_or_a_large_noise_floor_give_no_difference():
    touching = primary_endpoint(rows(2.0, 0.9, 0.1))
    assert touching["checks"]["every_ci_excludes_zero"] is False
    assert touching["verdict"] == "no difference measured"
    disagree = primary_endpoint(rows(2.0, -2.0, 0.1))
    assert disagree["checks"]["seeds_agree_in_sign"] is False
    assert disagree["verdict"] == "no difference measured"
    noisy = primary_endpoint(rows(2.0, 1.6, 1.8))
    assert noisy["checks"] == {"every_ci_excludes_zero": True, "seeds_agree_in_sign": True, "exceeds_noise_floor": False}
    assert noisy["verdict"] == "no difference measured"


def test_no_endpoint_without_two_seeded_pairs_and_fidelity_rides_along():
    assert primary_endpoint([average("sdd", "sft", 2.0, 1.0)]) is None
    assert primary_endpoint(rows(2.0, 1.6, 0.1)[::2]) is None  # one seed
    kl = {"a": "sft-s0", "b": "sdd-s0", "task": "fidelity_kl", "n": 200, "diff": -0.02, "ci_low": -0.03,
          "ci_high": -0.01, "p_value": 0.001}
    endpoint = primary_endpoint([*rows(2.0, 1.6, 0.1), kl])
    assert endpoint["seeds"][0]["kl_diff"] == -0.02 and endpoint["seeds"][1]["kl_diff"] is None
    text = endpoint_markdown(endpoint)
    assert "| 0 | +2.00 | [+1.00, +3.00]" in text and "-0.0200" in text
    assert "Verdict (pre-registered rule): SDD better than SFT" in text
