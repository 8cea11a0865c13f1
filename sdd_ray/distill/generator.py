"""The `hf` backend: a batch-inference class that Ray Data runs in an actor pool.

The model loads once per actor in `__init__`; `__call__` rewrites one batch of prepared rows with
greedy `generate` (the same `generate_texts` the evaluator uses). Rows whose prompt does not fit the
context are rejected with a reason; a generation error is caught per batch, the batch is retried
row by row, and only the rows that still fail carry the error (rejected as `teacher_failed`, counted).
"""

from __future__ import annotations

import logging

import pyarrow as pa

from sdd_ray.config import ModelSpec
from sdd_ray.distill.rewrite import as_chat
from sdd_ray.distill.schema import EMPTY_GENERATED, GENERATED, PREPARED, to_table
from sdd_ray.models import load_model_and_tokenizer
from sdd_ray.prompts import encode_prompt

log = logging.getLogger(__name__)

# Errors one bad row can raise inside generate (shape/index problems, device OOM, tokenizer errors).
GENERATION_ERRORS = (RuntimeError, ValueError, IndexError)


class HFRewriter:
    """`ds.map_batches(HFRewriter, fn_constructor_kwargs=..., batch_format="pyarrow", compute=ActorPoolStrategy(...))`."""

    def __init__(self, teacher: dict, max_new_tokens: int, batch_size: int, torch_threads: int = 1):
        import torch

        torch.set_num_threads(torch_threads)
        self.model, self.tokenizer = load_model_and_tokenizer(ModelSpec(**teacher))
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.context = getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, prompts: list[str]) -> list:
        from sdd_ray.generation import generate_texts

        return generate_texts(self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size)

    def _generate_or_errors(self, prompts: list[str]) -> list:
        """Generations of `prompts`; a prompt that fails on its own gets its error message instead."""
        try:
            return self.generate(prompts)
        except GENERATION_ERRORS as error:
            if len(prompts) == 1:
                log.warning("generation failed: %s", error)
                return [f"{type(error).__name__}: {error}"]
        return [result for prompt in prompts for result in self._generate_or_errors([prompt])]

    def too_long(self, prompt: str) -> str:
        """Why `prompt` cannot be generated from ("" when it can)."""
        if self.context is None:
            return ""
        length = len(encode_prompt(self.tokenizer, prompt))
        if length + self.max_new_tokens > self.context:
            return (f"prompt too long: {length} tokens + max_new_tokens {self.max_new_tokens} "
                    f"> context {self.context}")
        return ""

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = []
        for row in rows:
            row.update(EMPTY_GENERATED)
            if not row["reject_reason"]:
                row["prompt"] = as_chat(self.tokenizer, row["prompt"])
                row["reject_reason"] = self.too_long(row["prompt"])
            if not row["reject_reason"]:
                todo.append(row)
        results = self._generate_or_errors([row["prompt"] for row in todo]) if todo else []
        for row, result in zip(todo, results):
            if isinstance(result, str):
                row["generation_error"] = result
                continue
            row.update(teacher_response=result.text, truncated=result.truncated,
                       prompt_tokens=result.prompt_tokens, generated_tokens=result.new_tokens)
        return to_table(rows, pa.schema(list(PREPARED) + list(GENERATED)))
