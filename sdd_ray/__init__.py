"""sdd_ray: recover layer-pruned LLMs with self-data distillation on Ray."""
__version__ = "0.1.0"
