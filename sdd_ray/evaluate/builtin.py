"""The built-in evaluator for the toy world's task families.

- `arith`: greedy generation, exact match of the extracted `#### N` answer (as GSM8K);
- `facts`: multiple choice by option log-likelihood (`acc`, as lm-eval's ARC) and by generated
  letter (`acc_letter`);
- `instruct`: greedy generation; correct when the expected answer appears in the response.
"""

from __future__ import annotations

import math
import re

from sdd_ray.answers import extract_answer
from sdd_ray.generation import continuation_logprobs, generate_texts
from sdd_ray.prompts import render_prompt
from sdd_ray.toy.tasks import TASKS, generate

MAX_NEW_TOKENS = {"arith": 96, "facts": 32, "instruct": 32}


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def is_correct(task: str, response: str, answer: str) -> bool:
    """Whether `response` answers a toy `task` example whose gold answer is `answer`."""
    if task == "arith":
        return extract_answer(response, "math") == answer
    if task == "facts":
        return extract_answer(response, "mc") == answer
    return f" {_normalize(answer)} " in f" {_normalize(response)} "


def _stderr(p: float, n: int) -> float:
    """Standard error of a mean of 0/1 scores with the sample variance, as lm-eval's `mean_stderr`."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def _gold_probability(scores: list[float], gold: int) -> float:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return weights[gold] / sum(weights)


def evaluate_rows(model, tokenizer, task: str, rows: list[dict], batch_size: int = 32) -> dict:
    """Accuracy of `model` on toy rows of one `task`; returns {metric, value, stderr, n, chance, examples}.

    `examples` holds one {doc_id (the row's index), correct, score} per row; score is the normalised
    probability of the gold option for `facts`, the 0/1 outcome for the generated answers.
    """
    prompts = [render_prompt(tokenizer, r["instruction"], r["input"]) for r in rows]
    generations = generate_texts(model, tokenizer, prompts, MAX_NEW_TOKENS[task], batch_size)
    correct = [is_correct(task, g.text, r["answer"]) for g, r in zip(generations, rows)]
    n = len(rows)
    result = {"metric": "exact_match" if task == "arith" else "acc", "n": n, "chance": 0.0}
    scores = [float(c) for c in correct]
    if task == "facts":
        letter_acc = sum(correct) / n
        contexts, options = [], []
        for r in rows:
            context = render_prompt(tokenizer, r["question"])
            contexts += [context] * len(r["choices"])
            options += r["choices"]
        option_scores = continuation_logprobs(model, tokenizer, contexts, options, batch_size * 4)
        hits, probabilities, offset = [], [], 0
        for r in rows:
            k = len(r["choices"])
            choice_scores = option_scores[offset : offset + k]
            hits.append(choice_scores.index(max(choice_scores)) == r["gold_index"])
            probabilities.append(_gold_probability(choice_scores, r["gold_index"]))
            offset += k
        result["acc_letter"] = letter_acc
        result["chance"] = sum(1 / len(r["choices"]) for r in rows) / n
        correct, scores = hits, probabilities
    result["value"] = sum(correct) / n
    result["stderr"] = _stderr(result["value"], n)
    result["examples"] = [{"doc_id": i, "correct": float(c), "score": s} for i, (c, s) in enumerate(zip(correct, scores))]
    return result


def evaluate_builtin(
    model, tokenizer, tasks: list[str], limit: int = 200, batch_size: int = 32, seed: int = 0,
) -> dict[str, dict]:
    """Evaluate on the held-out (`eval` split) toy examples of each task."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown built-in task(s) {unknown}; choose from {list(TASKS)}")
    return {
        t: evaluate_rows(model, tokenizer, t, generate(t, limit, "eval", seed), batch_size)
        for t in tasks
    }
