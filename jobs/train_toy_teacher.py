"""Rebuild the toy teacher committed in `sdd_ray/toy/teacher/` (seeded, CPU, ~20 minutes on 2 cores).

    python jobs/train_toy_teacher.py --out sdd_ray/toy/teacher
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdd_ray.toy.teacher import TEACHER_DIR, TeacherTrainConfig, train_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TEACHER_DIR, help="where to save the checkpoint")
    for name, field in TeacherTrainConfig.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        if field.default is None:
            parser.add_argument(flag, default=None, help=field.description)
        elif isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default, help=f"(default: {field.default})")
    args = vars(parser.parse_args())
    out = args.pop("out")
    out.mkdir(parents=True, exist_ok=True)
    report = train_teacher(TeacherTrainConfig(**args), out)
    print(f"saved to {out}; final evals: {report['evals'][-1]}")


if __name__ == "__main__":
    main()
