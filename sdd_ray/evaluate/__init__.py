"""Evaluation: the built-in toy task suite (and lm-evaluation-harness), recovery against a baseline."""
