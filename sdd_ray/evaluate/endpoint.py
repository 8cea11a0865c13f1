"""The pre-registered primary endpoint of an SDD-vs-SFT experiment with seeds, decided from paired rows.

Rule (written in the experiment's config before any result existed): Δ = SDD − SFT in macro-average
accuracy, with its paired 95% CI, once per seed; an effect is claimed only if every seed's CI excludes
zero, all seeds agree in sign, and every |Δ| exceeds the seed-noise floor |SFT seed 1 − SFT seed 0|.
Otherwise no difference was measured. The secondary endpoint, fidelity, is reported per seed beside it
(KL(p_original ‖ p_model), lower is closer), with no decision attached.
"""

from __future__ import annotations

import re

SEEDED = re.compile(r"^(sft|sdd)-s(\d+)$")


def _row(paired: list[dict], b: str, a: str, task: str) -> dict | None:
    return next((r for r in paired if r["b"] == b and r["a"] == a and r["task"] == task), None)


def _seeds(paired: list[dict]) -> list[int]:
    labels = {r[side] for r in paired for side in ("a", "b")}
    found = {arm: {int(m[2]) for m in map(SEEDED.match, labels) if m and m[1] == arm} for arm in ("sft", "sdd")}
    return sorted(found["sft"] & found["sdd"])


def primary_endpoint(paired: list[dict]) -> dict | None:
    """The decision and its parts, or None when the rows lack `sdd-sK - sft-sK` averages for two seeds or more.

    `paired` are the report's paired rows (b − a, accuracy points; fidelity rows in nats).
    """
    seeds = [s for s in _seeds(paired) if _row(paired, f"sdd-s{s}", f"sft-s{s}", "average")]
    if len(seeds) < 2:
        return None
    per_seed = []
    for seed in seeds:
        row = _row(paired, f"sdd-s{seed}", f"sft-s{seed}", "average")
        kl = _row(paired, f"sdd-s{seed}", f"sft-s{seed}", "fidelity_kl")
        per_seed.append({
            "seed": seed, "diff": row["diff"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
            "p_value": row["p_value"], "n": row["n"],
            "excludes_zero": row["ci_low"] > 0 or row["ci_high"] < 0,
            "kl_diff": kl["diff"] if kl else None,
            "kl_ci_low": kl["ci_low"] if kl else None, "kl_ci_high": kl["ci_high"] if kl else None,
        })
    first, second = seeds[0], seeds[1]
    noise = _row(paired, f"sft-s{second}", f"sft-s{first}", "average") or _row(paired, f"sft-s{first}", f"sft-s{second}", "average")
    floor = abs(noise["diff"]) if noise else None
    signs = {(d["diff"] > 0) - (d["diff"] < 0) for d in per_seed}
    checks = {
        "every_ci_excludes_zero": all(d["excludes_zero"] for d in per_seed),
        "seeds_agree_in_sign": len(signs) == 1 and 0 not in signs,
        "exceeds_noise_floor": floor is not None and all(abs(d["diff"]) > floor for d in per_seed),
    }
    if all(checks.values()):
        verdict = "SDD better than SFT" if per_seed[0]["diff"] > 0 else "SFT better than SDD"
    else:
        verdict = "no difference measured"
    return {"seeds": per_seed, "noise_floor": floor,
            "noise_row": {k: noise[k] for k in ("a", "b", "diff", "ci_low", "ci_high")} if noise else None,
            "checks": checks, "verdict": verdict}


def endpoint_markdown(endpoint: dict) -> str:
    """The endpoint as a short Markdown section body."""
    lines = ["| seed | Δ = SDD − SFT (points) | paired 95% CI | p | CI excludes 0 | Δ KL (nats/token) | KL 95% CI |",
             "|---:|---:|---|---:|---|---:|---|"]
    for d in endpoint["seeds"]:
        kl = ("– | –" if d["kl_diff"] is None
              else f"{d['kl_diff']:+.4f} | [{d['kl_ci_low']:+.4f}, {d['kl_ci_high']:+.4f}]")
        lines.append(f"| {d['seed']} | {d['diff']:+.2f} | [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | "
                     f"{d['p_value']:.3g} | {'yes' if d['excludes_zero'] else 'no'} | {kl} |")
    noise = endpoint["noise_row"]
    floor = "not measured" if noise is None else (
        f"{endpoint['noise_floor']:.2f} points ({noise['b']} − {noise['a']}: {noise['diff']:+.2f}, "
        f"CI [{noise['ci_low']:+.2f}, {noise['ci_high']:+.2f}])")
    checks = endpoint["checks"]
    lines += ["", f"Seed-noise floor: {floor}.",
              f"Every CI excludes 0: {'yes' if checks['every_ci_excludes_zero'] else 'no'}; seeds agree in sign: "
              f"{'yes' if checks['seeds_agree_in_sign'] else 'no'}; every |Δ| above the floor: "
              f"{'yes' if checks['exceeds_noise_floor'] else 'no'}.",
              "", f"**Verdict (pre-registered rule): {endpoint['verdict']}.**"]
    return "\n".join(lines) + "\n"
