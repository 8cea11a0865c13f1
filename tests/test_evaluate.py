"""Evaluation: scoring on known answers, harness == built-in, recovery %, the comparison table, Ray."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the harness reads local files only

from sdd_ray.config import ConfigError, validate_config  # noqa: E402
from sdd_ray.evaluate import builtin  # noqa: E402
from sdd_ray.evaluate.builtin import evaluate_rows, is_correct  # noqa: E402
from sdd_ray.evaluate.compare import build_comparison, run_compare, to_csv, to_markdown  # noqa: E402
from sdd_ray.evaluate.config import EvaluateConfig  # noqa: E402
from sdd_ray.evaluate.recovery import ResultsMismatchError, recovery_pct  # noqa: E402
from sdd_ray.generation import Generation  # noqa: E402
from sdd_ray.toy.tasks import generate  # noqa: E402


def results(model: str, **tasks: float) -> dict:
    return {"model": model, "tasks": {t: {"metric": "acc", "value": v, "n": 10} for t, v in tasks.items()}}


# ---------------------------------------------------------------- scoring on known answers


def test_is_correct_on_known_answers():
    assert is_correct("arith", "So Tom has 12 apples.\n#### 12", "12")
    assert not is_correct("arith", "So Tom has 12 apples.\n#### 13", "12")
    assert is_correct("arith", "We get 3 + 4 = 7, then 7 * 2 = 14.", "14")  # last number when no `####`
    assert is_correct("facts", "The capital of Bolaland is Tiro. The answer is C.", "C")
    assert not is_correct("facts", "The answer is D.", "C")
    assert is_correct("instruct", "The capital city of Bolaland is Tiro.", "Tiro")
    assert not is_correct("instruct", "The capital city of Bolaland is Tirona.", "Tiro")
    assert is_correct("instruct", "In reverse order the words are: cat, dog.", "cat dog")


class FixedAnswers:
    """Stands in for `generate_texts`/`continuation_logprobs`: known outputs per prompt."""

    def __init__(self, texts: dict[str, str], option_scores: list[float] | None = None):
        self.texts, self.option_scores = texts, option_scores

    def generate(self, model, tokenizer, prompts, max_new_tokens, batch_size):
        return [Generation(self.texts.get(p, ""), 1, 1, False) for p in prompts]

    def logprobs(self, model, tokenizer, contexts, options, batch_size):
        return self.option_scores


class NoTemplate:
    chat_template = None


def test_evaluate_rows_scores_fixed_responses(monkeypatch):
    from sdd_ray.prompts import instruction_prompt

    rows = generate("arith", 4, "eval")
    texts = {instruction_prompt(r["instruction"]): f"#### {r['answer']}" for r in rows[:3]}
    texts[instruction_prompt(rows[3]["instruction"])] = f"#### {int(rows[3]['answer']) + 1}"
    monkeypatch.setattr(builtin, "generate_texts", FixedAnswers(texts).generate)
    result = evaluate_rows(None, NoTemplate(), "arith", rows)
    assert [r["correct"] for r in result["examples"]] == [1.0, 1.0, 1.0, 0.0]
    assert [r["doc_id"] for r in result["examples"]] == [0, 1, 2, 3]
    assert result["chance"] == 0.0
    assert result["value"] == 0.75
    assert result["stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))  # lm-eval's sample stderr
    assert (result["metric"], result["n"]) == ("exact_match", 4)


def test_facts_accuracy_is_by_option_loglikelihood(monkeypatch):
    rows = generate("facts", 2, "eval")
    # row 0: the gold option scores highest; row 1: option 0 does, and it is not the gold one
    scores = [-5.0] * 8
    scores[rows[0]["gold_index"]] = -1.0
    wrong = 0 if rows[1]["gold_index"] != 0 else 1
    scores[4 + wrong] = -1.0
    fake = FixedAnswers({}, scores)
    monkeypatch.setattr(builtin, "generate_texts", fake.generate)
    monkeypatch.setattr(builtin, "continuation_logprobs", fake.logprobs)
    result = evaluate_rows(None, NoTemplate(), "facts", rows)
    assert [r["correct"] for r in result["examples"]] == [1.0, 0.0]
    # score: softmax over the 4 options' log-likelihoods at the gold one (row 0 gold -1, others -5; row 1 gold -5)
    gold_high = 1 / (1 + 3 * math.exp(-4))
    assert [r["score"] for r in result["examples"]] == pytest.approx([gold_high, math.exp(-4) * gold_high])
    assert result["chance"] == 0.25
    assert (result["value"], result["acc_letter"]) == (0.5, 0.0)


# ---------------------------------------------------------------- recovery and bad input


def test_recovery_is_ratio_of_averages_over_the_same_tasks():
    model = results("pruned", arith=0.5, facts=0.3)
    base = results("base", arith=0.8, facts=0.4)
    assert recovery_pct(model, base) == pytest.approx(100 * 0.4 / 0.6)
    with pytest.raises(ResultsMismatchError, match=r"only in model: \[\], only in baseline: \['instruct'\]"):
        recovery_pct(model, results("base", arith=0.8, facts=0.4, instruct=0.1))
    base["tasks"]["facts"]["n"] = 20
    with pytest.raises(ResultsMismatchError, match="task 'facts' has n=10 examples in model but n=20 in baseline"):
        recovery_pct(model, base)
    base["tasks"]["facts"]["metric"] = "acc_norm"
    with pytest.raises(ResultsMismatchError, match="scored by 'acc' in model but 'acc_norm' in baseline"):
        recovery_pct(model, base)


def test_unknown_task_names_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown builtin task\(s\) \['algebra'\]"):
        validate_config(EvaluateConfig, {"model": {"path": "m"}, "tasks": ["arith", "algebra"]}, "cli")
    with pytest.raises(ConfigError, match=r"unknown harness task\(s\) \['arith'\]"):
        validate_config(EvaluateConfig, {"model": {"path": "m"}, "tasks": ["arith"], "evaluator": "harness"}, "cli")
    cfg = validate_config(EvaluateConfig, {"model": {"path": "m"}, "evaluator": "harness"}, "cli")
    assert cfg.tasks == ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
    assert (cfg.harness.task_settings["arc_challenge"].num_fewshot, cfg.harness.task_settings["arc_challenge"].metric) == (25, "acc_norm")


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from sdd_ray.cli import main

    monkeypatch.setattr(sys, "argv", ["sdd-ray", *args])
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code or 0
    return code, capsys.readouterr().err


def test_cli_errors_are_clear(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, "evaluate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "r.json"))
    assert code == 2 and "no such directory" in err
    code, err = run_cli(monkeypatch, capsys, "evaluate", "--model", "x", "--tasks", "arith,bogus")
    assert code == 2 and "unknown builtin task(s) ['bogus']" in err
    (tmp_path / "eval.yaml").write_text("evaluator: harness\ntasks: [toy_arith, nope]\n")
    code, err = run_cli(monkeypatch, capsys, "evaluate", "--model", "x", "--config", str(tmp_path / "eval.yaml"))
    assert code == 2 and "eval.yaml: (root): unknown harness task(s) ['nope']" in err
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results("a", arith=0.5)))
    b.write_text(json.dumps(results("b", facts=0.5)))
    code, err = run_cli(monkeypatch, capsys, "compare", str(a), str(b), "--out", str(tmp_path / "cmp"))
    assert code == 2 and "b and a results cover different tasks" in err
    code, err = run_cli(monkeypatch, capsys, "evaluate", "--model", "x", "--tasks", "facts", "--baseline", str(a))
    assert code == 2 and "only in --tasks: ['facts']" in err


def test_recovery_against_a_baseline_results_file(monkeypatch, capsys, tmp_path, tiny_llama):
    base = results("base", instruct=0.5)
    base["tasks"]["instruct"]["n"] = 4
    (tmp_path / "base.json").write_text(json.dumps(base))
    out = tmp_path / "r.json"
    code, err = run_cli(
        monkeypatch, capsys, "evaluate", "--model", str(tiny_llama), "--tasks", "instruct", "--limit", "4",
        "--baseline", str(tmp_path / "base.json"), "--out", str(out),
    )
    assert code == 0, err
    written = json.loads(out.read_text())
    value = written["tasks"]["instruct"]["value"]
    assert written["tasks"]["instruct"]["n"] == 4
    assert written["average"] == value
    assert written["recovery_pct"] == pytest.approx(100 * value / 0.5)
    assert written["baseline"]["average"] == 0.5


# ---------------------------------------------------------------- the comparison table


def test_comparison_table_from_known_results(tmp_path):
    rows = [
        results("runs/base", arith=0.8, facts=0.6),
        results("runs/no_ft", arith=0.2, facts=0.5),
        results("runs/sdd", arith=0.7, facts=0.55),
    ]
    comparison = build_comparison(rows, ["baseline", "no_ft", "sdd"])
    for r in rows:
        r["tasks"]["facts"]["chance"] = 0.25
    assert to_markdown(comparison).splitlines()[:6] == [
        "| Model | arith | facts | Average | Recovery % | Chance-corrected recovery % |",
        "|---|---:|---:|---:|---:|---:|",
        "| baseline | 80.0 | 60.0 | 70.0 | 100.0 | – |",  # no chance level known for the toy `facts` task
        "| no_ft | 20.0 | 50.0 | 35.0 | 50.0 | – |",
        "| sdd | 70.0 | 55.0 | 62.5 | 89.3 | – |",
        "| (chance) | 0.0 | – | – |  |  |",
    ]
    with_chance = build_comparison(rows, ["baseline", "no_ft", "sdd"])  # floor (0 + 0.25) / 2 = 0.125
    assert with_chance.chance_recovery == pytest.approx([100.0, 100 * (0.35 - 0.125) / (0.7 - 0.125),
                                                         100 * (0.625 - 0.125) / (0.7 - 0.125)])
    assert to_csv(comparison) == (
        "model,arith,facts,average,recovery_pct\n"
        "baseline,80.00,60.00,70.00,100.00\n"
        "no_ft,20.00,50.00,35.00,50.00\n"
        "sdd,70.00,55.00,62.50,89.29\n"
    )
    paths = []
    for i, r in enumerate(rows):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    written = run_compare(paths, tmp_path / "cmp", baseline="sdd")
    assert written["comparison"].names == ["base", "no_ft", "sdd"]
    assert written["comparison"].recovery[2] == 100.0
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()[1] == "base,80.00,60.00,70.00,112.00"


# ---------------------------------------------------------------- harness == built-in


def harness_and_builtin(model, tasks: list[str], limit: int) -> tuple[dict, dict]:
    """Per-task results of both evaluators on the same toy examples, keyed by built-in task name."""
    from sdd_ray.evaluate.run import evaluate_model

    common = {"model": {"path": str(model)}, "limit": limit, "batch_size": 16}
    harness = validate_config(EvaluateConfig, {**common, "evaluator": "harness", "tasks": [f"toy_{t}" for t in tasks]})
    own = validate_config(EvaluateConfig, {**common, "tasks": tasks})
    h = evaluate_model(harness)["tasks"]
    b = evaluate_model(own)["tasks"]
    return {t: h[f"toy_{t}"] for t in tasks}, b


def assert_same_scores(h: dict, b: dict, n: int) -> None:
    for task in b:
        assert h[task]["n"] == b[task]["n"] == n
        assert [r["correct"] for r in h[task]["examples"]] == [r["correct"] for r in b[task]["examples"]], task
        assert [r["doc_id"] for r in h[task]["examples"]] == [r["doc_id"] for r in b[task]["examples"]], task
        assert [r["score"] for r in h[task]["examples"]] == pytest.approx([r["score"] for r in b[task]["examples"]], abs=1e-4)
        assert h[task]["chance"] == b[task]["chance"]
        assert h[task]["value"] == b[task]["value"] == sum(r["correct"] for r in b[task]["examples"]) / n
        assert h[task]["stderr"] == pytest.approx(b[task]["stderr"])


@pytest.mark.timeout(600)
def test_harness_equals_builtin_on_the_same_examples(toy_teacher):
    """lm-eval over the local toy tasks scores each example exactly as the built-in evaluator."""
    h, b = harness_and_builtin(toy_teacher, ["arith", "facts", "instruct"], 24)
    assert_same_scores(h, b, 24)
    assert h["arith"]["value"] > 0  # a real signal, not 0 == 0


@pytest.mark.timeout(300)
def test_harness_equals_builtin_on_a_random_model(tiny_llama):
    """Option log-likelihoods of a random model: some right, some wrong, the same ones in both."""
    h, b = harness_and_builtin(tiny_llama, ["facts"], 12)
    assert_same_scores(h, b, 12)
    assert 0 < h["facts"]["value"] < 1


# ---------------------------------------------------------------- Ray


@pytest.mark.timeout(300)
def test_ray_parallel_evaluation_equals_sequential(ray_local, tmp_path):
    from conftest import make_tiny_llama

    from sdd_ray.evaluate.ray_eval import evaluate_many
    from sdd_ray.evaluate.run import evaluate_model

    models = [str(make_tiny_llama(tmp_path / f"m{seed}", num_layers=2, seed=seed)) for seed in (0, 1)]
    cfg = validate_config(
        EvaluateConfig,
        {"model": {"path": models[0]}, "tasks": ["facts", "instruct"], "limit": 4,
         "resources": {"num_cpus": 0.5}},
    )
    parallel = evaluate_many(models, cfg)
    sequential = [evaluate_model(cfg.model_copy(update={"model": validate_config(type(cfg.model), {"path": m})}))
                  for m in models]
    assert [r["model"] for r in parallel] == models
    for p, s in zip(parallel, sequential):
        assert p["tasks"] == s["tasks"]
        assert p["average"] == s["average"]


def test_harness_output_parsing_for_groups_and_filters():
    """The leaderboard tasks cannot run offline; their lm-eval output shape is parsed as lm-eval writes it."""
    from sdd_ray.evaluate.harness import task_result

    raw = {
        "results": {
            "mmlu": {"alias": "mmlu", "acc,none": 0.6, "acc_stderr,none": 0.004},
            "gsm8k": {"exact_match,strict-match": 0.43, "exact_match_stderr,strict-match": 0.0136,
                      "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": 0.01},
            "truthfulqa_mc2": {"acc,none": 0.5, "acc_stderr,none": "N/A"},
        },
        "group_subtasks": {"mmlu": ["mmlu_humanities"], "mmlu_humanities": ["mmlu_philosophy", "mmlu_world_religions"]},
        "n-samples": {"mmlu_philosophy": {"effective": 311}, "mmlu_world_religions": {"effective": 171},
                      "gsm8k": {"effective": 1319}, "truthfulqa_mc2": {"effective": 817}},
    }
    assert task_result(raw, "mmlu", "acc", "none") == {"metric": "acc", "value": 0.6, "stderr": 0.004, "n": 482}
    assert task_result(raw, "gsm8k", "exact_match", "strict-match") == {
        "metric": "exact_match (strict-match)", "value": 0.43, "stderr": 0.0136, "n": 1319}
    assert task_result(raw, "truthfulqa_mc2", "acc", "none")["stderr"] is None
    with pytest.raises(ConfigError, match=r"reported no 'acc_norm,none' \(it reported \['acc,none'\]\)"):
        task_result(raw, "truthfulqa_mc2", "acc_norm", "none")
