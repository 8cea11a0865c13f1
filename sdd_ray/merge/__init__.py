"""SLERP merging of models fine-tuned on different self-distilled data sets (the paper's model merging).

The maths is in `sdd_ray.merge.slerp` (`slerp`, `slerp_with_info`); nothing is imported here,
so that `import sdd_ray.merge` (and `sdd-ray --help`) does not load torch.
"""
