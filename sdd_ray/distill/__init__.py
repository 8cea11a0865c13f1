"""Self-data distillation: the unpruned teacher rewrites the fine-tuning responses."""

from sdd_ray.distill.selection import select_response

__all__ = ["select_response"]
