"""The rewrite quality gate: each check on the failures seen from SmolLM2-135M, and what it lets through."""

from __future__ import annotations

import pytest

from sdd_ray.distill.gate import (
    QualityGate,
    gate_reason,
    has_conflicting_answers,
    has_repetition_loop,
    is_copy,
    reason_category,
    refers_to_missing_passage,
)
from sdd_ray.distill.rewrite import input_reason, select_row
from sdd_ray.distill.selection import selection_reason

GATE = QualityGate()
WORKED = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
          "in April and May.\n#### 72")
QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"


@pytest.mark.parametrize(("rewrite", "reason"), [
    ("#### 72\n\nThe answer is 72.", "gate: answer only"),
    ("#### 72 #### 72 #### 72 #### 72 #### 72 #### 72", "gate: repetition loop"),
    ("In April she sold 48 and in May 48/2 = 24, so 48 + 24 = 72.\n#### 72\nThe answer is 7,2000.",
     "gate: conflicting answers"),
    ("### Answer\nShe sold 48/2 = 24 in May, 48 + 24 = 72 in all.\n#### 72", "gate: template leak"),
    ("She sold 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips in total.\n#### 72", None),
])
def test_math_gate(rewrite, reason):
    assert gate_reason(QUESTION, WORKED, rewrite, "math", GATE) == reason


@pytest.mark.parametrize(("rewrite", "reason"), [
    ("The answer to this question is:", "gate: template leak"),
    ("I'm glad you found the answer helpful. I'll make sure to provide more accurate responses.", "gate: non-answer"),
    ("Bananas are yellow fruit grown in tropical countries.", "gate: off topic"),
    ("Calvin and Hobbes was drawn by Bill Watterson, from 1985 to 1995.", None),
])
def test_general_gate(rewrite, reason):
    instruction = "Who drew Calvin and Hobbes?"
    reference = "Bill Watterson drew the comic strip Calvin and Hobbes, which ran from 1985 until 1995."
    assert gate_reason(instruction, reference, rewrite, "general", GATE) == reason


def test_checks_switch_off():
    off = QualityGate(min_length_ratio=0, max_ngram_repeats=0, min_content_overlap=0, reject_non_answers=False,
                      reject_template_leaks=False)
    assert gate_reason(QUESTION, WORKED, "#### 72", "math", off) is None
    assert gate_reason("Who?", "Bill Watterson", "Bananas are yellow.", "general", off) is None


def test_selection_applies_gate_after_the_answer_check():
    assert selection_reason(WORKED, "#### 72", "math") is None  # the paper's rule keeps an answer-only rewrite
    assert selection_reason(WORKED, "#### 72", "math", instruction=QUESTION, gate=GATE) == "gate: answer only"
    assert selection_reason(WORKED, "#### 71", "math", gate=GATE) == "answer 71 != reference 72"
    row = {"response": WORKED, "teacher_response": "#### 72", "kind": "math", "truncated": False, "instruction": QUESTION}
    assert select_row(row, GATE) == {"selected_response": WORKED, "source": "original",
                                     "selection_reason": "gate: answer only"}
    assert select_row(row)["source"] == "teacher"


def test_detectors():
    assert has_conflicting_answers("#### 448000 so The answer is 44,800.")
    assert not has_conflicting_answers("#### 44,800\nThe answer is 44800.")
    assert has_repetition_loop("a b c d " * 5, 4) and not has_repetition_loop("a b c d " * 4, 4)
    assert is_copy("Paris is the capital.", "Paris  is the capital.") and not is_copy("Paris.", "Rome is big.")
    assert reason_category("answer 5 != reference 6") == "answer mismatch"


def test_rows_that_ask_about_a_missing_passage():
    assert refers_to_missing_passage("Given this paragraph about Virgin Australia, when did it start?", "")
    assert refers_to_missing_passage("Based on the text, who won?", "")
    assert not refers_to_missing_passage("Given this paragraph about Virgin Australia, when did it start?",
                                         "Virgin Australia commenced services on 31 August 2000.")
    assert not refers_to_missing_passage("Why do cats purr?", "")
    row = {"instruction": "Summarise the following text.", "input": "", "response": "one two three"}
    assert input_reason(row, True, None) == "refers to a missing passage"
    assert input_reason(row, False, 2) == "reference longer than 2 words"
    assert input_reason(row, False, 3) == ""


def test_stats_count_gate_reasons_with_examples_copies_and_words(tmp_path):
    import pyarrow as pa

    from sdd_ray.distill.dataflow import select_batch
    from sdd_ray.distill.schema import EMPTY_SELECTED, PROCESSED
    from sdd_ray.distill.shards import ShardWriter

    reference = "Bill Watterson drew the comic strip Calvin and Hobbes, which ran from 1985 until 1995."
    rewrites = {
        "a": "Calvin and Hobbes was drawn by Bill Watterson, from 1985 to 1995.",  # kept
        "b": reference,  # kept, a copy
        "c": "I'm glad you found the answer helpful.",  # non-answer
        "d": "Bananas are yellow fruit.",  # off topic
        "e": "The answer to this question is:",  # template leak
    }
    rows = [{"id": i, "task": "dolly", "kind": "general", "instruction": "Who drew Calvin and Hobbes?", "input": "",
             "response": reference, "reject_reason": "", "raw": "", "prompt": "p", "skip": False,
             "teacher_response": text, "truncated": False, "prompt_tokens": 5, "generated_tokens": 7,
             "generation_error": "", **EMPTY_SELECTED} for i, text in rewrites.items()]
    selected = select_batch(pa.Table.from_pylist(rows, schema=PROCESSED), gate=QualityGate().model_dump())
    writer = ShardWriter(tmp_path, shard_rows=100)
    for row in selected.to_pylist():
        writer.add(row)
    writer.flush()
    totals = writer.totals()["totals"]
    assert (totals["teacher_selected"], totals["original_selected"], totals["copies"]) == (2, 3, 1)
    assert totals["selection_reasons"] == {"gate: non-answer": 1, "gate: off topic": 1, "gate: template leak": 1}
    assert totals["selection_examples"]["gate: off topic"] == [{"id": "d", "teacher_response": rewrites["d"]}]
    assert totals["reference_words"] == 5 * len(reference.split())
    assert totals["selected_words"] == len(rewrites["a"].split()) + 4 * len(reference.split())


def test_distribution_gap_pairs_rewrite_and_reference_under_the_teacher(toy_teacher, tmp_path):
    """The toy teacher's own greedy text is likelier under it than a scrambled reference of the same words."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sdd_ray.distill.gap import distribution_gap
    from sdd_ray.distill.schema import OUTPUT
    from sdd_ray.generation import generate_texts
    from sdd_ray.models import load_model_and_tokenizer
    from sdd_ray.prompts import render_prompt
    from sdd_ray.toy.sources import toy_records

    model, tokenizer = load_model_and_tokenizer(toy_teacher)
    records = toy_records("toy:all", limit=6)
    greedy = generate_texts(model, tokenizer, [render_prompt(tokenizer, r["instruction"]) for r in records], 12)
    rows = [{"id": r["id"], "task": "toy", "kind": "general", "instruction": r["instruction"], "input": "",
             "original_response": " ".join(reversed(g.text.split())), "teacher_response": g.text, "response": g.text,
             "source": "teacher" if i < 5 else "original", "selection_reason": ""}
            for i, (r, g) in enumerate(zip(records, greedy))]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT), tmp_path / "data" / "part-00000.parquet")
    gap = distribution_gap(str(toy_teacher), tmp_path / "data", max_rows=4)
    assert gap["rows"] == 4  # selected rewrites only, capped
    assert 0 <= gap["nll_per_token"]["rewrite"] < gap["nll_per_token"]["reference"]
