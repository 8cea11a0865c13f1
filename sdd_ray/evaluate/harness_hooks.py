"""Scoring hooks that the local lm-eval task YAMLs (`tasks/*.yaml`) name with `!function`.

They call the built-in evaluator's `is_correct`, so that the harness and the built-in evaluator
share one definition of a correct answer.
"""

from __future__ import annotations

from sdd_ray.evaluate.builtin import is_correct


def process_math(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": float(is_correct("arith", results[0], doc["answer"]))}


def process_instruct(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": float(is_correct("instruct", results[0], doc["answer"]))}
