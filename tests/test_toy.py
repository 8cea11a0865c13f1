"""The toy world: deterministic generators, a lossless tokenizer, and the evaluator's scoring."""

from __future__ import annotations

from sdd_ray.answers import extract_answer
from sdd_ray.evaluate.builtin import is_correct
from sdd_ray.prompts import instruction_prompt
from sdd_ray.toy.tasks import KB, TASKS, generate


def test_generators_are_deterministic_and_splits_differ():
    for task in TASKS:
        assert generate(task, 50, "eval") == generate(task, 50, "eval")
        assert generate(task, 50, "eval") != generate(task, 50, "finetune")
    # Word problems are held out; facts are questions over one fixed knowledge base by design.
    eval_ids = {r["id"] for r in generate("arith", 500, "eval")}
    train_ids = {r["id"] for r in generate("arith", 2000, "finetune")}
    assert len(eval_ids) == 500 and len(eval_ids & train_ids) < 5


def test_worked_solutions_are_correct():
    for row in generate("arith", 300, "eval"):
        assert extract_answer(row["teacher_response"], "math") == row["answer"]
        assert extract_answer(row["reference_response"], "math") == row["answer"]
        for line in row["teacher_response"].replace(",", ".").split("."):
            if "=" in line:  # every step's arithmetic holds
                lhs, rhs = line.split("=")
                a, op, b = lhs.split()[-3:]
                assert eval(f"{a}{op}{b}") == int(rhs.split()[0])


def test_facts_and_instruct_answers():
    for row in generate("facts", 100, "eval"):
        gold = row["choices"][row["gold_index"]]
        assert gold in row["teacher_response"] and row["answer"] == "ABCD"[row["gold_index"]]
        assert extract_answer(row["teacher_response"], "mc") == row["answer"]
        assert extract_answer(row["reference_response"], "mc") == row["answer"]
    for row in generate("instruct", 100, "eval"):
        assert is_correct("instruct", row["teacher_response"], row["answer"])
        assert is_correct("instruct", row["reference_response"], row["answer"])


def test_finetune_split_is_in_reference_style():
    from sdd_ray.toy.sources import toy_records

    rows = toy_records("toy:arith", 5)
    assert set(rows[0]) == {"id", "task", "kind", "instruction", "input", "response", "text"}
    assert all(r["response"].startswith("We get") for r in rows)


def test_tokenizer_round_trip_has_no_unknown_words():
    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    for task in TASKS:
        for row in generate(task, 30, "eval"):
            text = instruction_prompt(row["instruction"]) + row["teacher_response"]
            ids = tokenizer(text).input_ids
            assert tokenizer.unk_token_id not in ids
            assert tokenizer(tokenizer.decode(ids, skip_special_tokens=True)).input_ids == ids
    assert len(tokenizer(" ".join(str(i) for i in range(1000)), add_special_tokens=False).input_ids) == 1000


def test_scoring_on_hand_made_cases():
    assert is_correct("arith", "3 + 4 = 7.\n#### 7", "7")
    assert not is_correct("arith", "#### 8", "7")
    assert is_correct("facts", "The capital of X is Y. The answer is C.", "C")
    assert not is_correct("facts", "The answer is B.", "C")
    assert is_correct("instruct", "In reverse order the words are: sun cat.", "sun cat")
    assert not is_correct("instruct", "In reverse order the words are: cat sun.", "sun cat")
    assert KB.capital[KB.countries[0]] in KB.statement("capital", KB.countries[0])
