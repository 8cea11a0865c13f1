"""The `sdd-ray` command line: one command per stage, each YAML/flags -> config -> `run_<stage>`.

Stage modules are imported lazily inside each command so that `sdd-ray --help` stays fast and works
without vLLM, lm-eval or a GPU.
"""

from __future__ import annotations

import sys

import typer

from sdd_ray.convert_cli import convert
from sdd_ray.distill.cli import distill
from sdd_ray.evaluate.cli import compare, evaluate
from sdd_ray.finetune.cli import finetune
from sdd_ray.merge.cli import merge
from sdd_ray.pipeline.cli import run
from sdd_ray.prune.cli import prune
from sdd_ray.serve.cli import serve
from sdd_ray.specdec.cli import specdec

app = typer.Typer(
    name="sdd-ray",
    help="Recover layer-pruned LLMs with self-data distillation, on Ray.\n\n"
    "Stages: prune -> distill -> finetune -> merge -> evaluate -> specdec/serve; `run` does them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Recover layer-pruned LLMs with self-data distillation, on Ray."""


app.command()(run)
app.command()(prune)
app.command()(distill)
app.command()(finetune)
app.command()(merge)
app.command()(evaluate)
app.command()(compare)
app.command()(specdec)
app.command()(serve)
app.command()(convert)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `sdd-ray` and of every `jobs/<stage>.py` (`argv`: the command and its flags; default `sys.argv`).

    User errors (configs, inputs, checkpoints) become one clear message and exit code 2, a failed teacher exit code 1.
    """
    from sdd_ray.config import UserError
    from sdd_ray.convert import ConversionError
    from sdd_ray.distill.failures import TeacherFailureError
    from sdd_ray.models import ModelNotFoundError

    try:
        app(args=argv)
    except (UserError, ConversionError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except TeacherFailureError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
