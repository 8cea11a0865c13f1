"""Answer extraction and conditional selection: every format of the issue, and all of GSM8K test."""

from __future__ import annotations

import json

import pytest

from sdd_ray.answers import extract_answer, normalize_number
from sdd_ray.distill.selection import rejection_reason, select_response, selection_reason


@pytest.mark.parametrize("text, expected", [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("#### 1,234", "1234"),
    ("#### $18", "18"),
    ("So the total is $1,250.00\n#### $1,250.00", "1250"),
    ("The answer is 42.", "42"),
    ("the answer is: -3", "-3"),
    ("The answer is \u22123.", "-3"),
    ("We get x = 2 so \\boxed{12}.", "12"),
    ("\\boxed{ 3.50 }", "3.5"),
    ("\\boxed{-7}", "-7"),
    ("Q: how many?\nA: 15", "15"),
    ("Final answer: 2,000,000", "2000000"),
    ("It costs 18.0 dollars in the end", "18"),
    ("First 3, then 5, then 9", "9"),
    ("12345678901234567890", "12345678901234567890"),
    ("0.1 + 0.2 = 0.30", "0.3"),
    ("Step 1 gives 4 and the answer is 5.\n#### 6", "6"),  # an explicit #### wins over earlier forms
    ("Step 1: 4. \\boxed{10}. The answer is 11", "10"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_math(text, expected):
    assert extract_answer(text, "math") == expected


@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    ("(C)", "C"),
    ("D.", "D"),
    ("The capital of Vuland is Bopo. The answer is B.", "B"),
    ("The answer is (A)", "A"),
    ("Answer: C", "C"),
    ("#### D", "D"),
    ("B. Bopo", "B"),
    ("I think the answer is a dog", None),
    ("The capital is Bopo.", None),
    ("", None),
])
def test_extract_mc(text, expected):
    assert extract_answer(text, "mc") == expected


def test_general_has_no_answer_and_unknown_kinds_fail():
    assert extract_answer("The answer is 4", "general") is None
    with pytest.raises(ValueError, match="unknown task kind"):
        extract_answer("4", "poem")
    with pytest.raises(ValueError, match="unknown task kind"):
        select_response("4", "4", "poem")


@pytest.mark.parametrize("value, expected", [
    ("$1,234.00", "1234"), ("-5.50", "-5.5"), ("7.", "7"), ("$ 3", "3"), ("1,2", "12"), ("x", None)])
def test_normalize_number(value, expected):
    assert normalize_number(value) == expected


@pytest.mark.parametrize("original, rewritten, kind, truncated, expected", [
    ("We get 6 + 7 = 13.\n#### 13", "Adding, 6 + 7 = 13. So Leo has 13 stamps.\n#### 13", "math", False, "teacher"),
    ("#### 1,000", "That makes one thousand, the answer is $1000.00", "math", False, "teacher"),
    ("#### 13", "6 + 7 = 12.\n#### 12", "math", False, "original"),  # wrong answer
    ("#### 13", "6 + 7 = 13 and then", "math", True, "original"),  # cut off at the token limit
    ("#### 13", "", "math", False, "original"),
    ("#### 13", "   ", "math", False, "original"),
    ("#### 13", None, "math", False, "original"),
    ("#### 13", "Using the reference answer, 13.\n#### 13", "math", False, "original"),  # leaks the prompt
    ("Bob has some.", "Bob has 3.\n#### 3", "math", False, "original"),  # reference has no answer
    ("B", "The capital of Vuland is Bopo. The answer is B.", "mc", False, "teacher"),
    ("B", "The capital of Vuland is Kuzo. The answer is C.", "mc", False, "original"),
    ("B", "The capital of Vuland is Bopo.", "mc", False, "original"),
    ("dog cat", "In reverse order the words are: dog cat.", "general", False, "teacher"),
    ("dog cat", "### Response:\ndog cat", "general", False, "original"),
    ("dog cat", "Here is your response: dog cat", "general", False, "original"),
])
def test_select_response(original, rewritten, kind, truncated, expected):
    text, source = select_response(original, rewritten, kind, truncated)
    assert source == expected
    assert text == (rewritten if expected == "teacher" else original)


def test_selection_and_rejection_reasons():
    assert rejection_reason("", False) == "empty"
    assert rejection_reason("fine", True) == "truncated"
    assert rejection_reason("As the Reference Answer says, 4", False) == "leaks prompt ('reference answer')"
    assert selection_reason("#### 13", "#### 12", "math") == "answer 12 != reference 13"
    assert selection_reason("B", "no letter", "mc") == "answer None != reference B"
    assert selection_reason("#### 13", "so 13.\n#### 13", "math") is None


def test_every_gsm8k_reference_extracts_its_own_answer(gsm8k_test):
    rows = [json.loads(line) for line in gsm8k_test.read_text().splitlines()]
    assert len(rows) == 1319
    for row in rows:
        final = row["answer"].rsplit("####", 1)[1].strip()
        expected = final.replace(",", "")
        assert extract_answer(row["answer"], "math") == expected, row["answer"]
        # A rewrite that keeps the final line is selected; one with another answer is not.
        steps = row["answer"].rsplit("####", 1)[0]
        assert select_response(row["answer"], f"In my words: {steps}The answer is {final}.", "math")[1] == "teacher"
        assert select_response(row["answer"], f"{steps}#### {int(expected) + 1}", "math")[1] == "original"
