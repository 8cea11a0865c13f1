"""SLERP merging of models fine-tuned on different self-distilled data sets (the paper's model merging)."""

from sdd_ray.merge.slerp import lerp, slerp, slerp_with_info

__all__ = ["lerp", "slerp", "slerp_with_info"]
