"""Self-data distillation: the unpruned teacher rewrites the fine-tuning responses."""

from sdd_ray.distill.answers import extract_answer, select_response

__all__ = ["extract_answer", "select_response"]
