"""The `sdd-ray` command line: one command per stage, each YAML/flags -> config -> `run_<stage>`.

Stage modules are imported lazily inside each command so that `sdd-ray --help` stays fast and works
without vLLM, lm-eval or a GPU.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import traceback

import typer

from sdd_ray.config import UserError
from sdd_ray.convert import ConversionError
from sdd_ray.convert_cli import convert
from sdd_ray.distill.cli import distill
from sdd_ray.distill.failures import TeacherFailureError
from sdd_ray.evaluate.cli import compare, evaluate
from sdd_ray.finetune.cli import finetune
from sdd_ray.guards import release_outs
from sdd_ray.io import is_disk_full
from sdd_ray.merge.cli import merge
from sdd_ray.models import ModelNotFoundError
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


TRACEBACK_ENV = "SDD_RAY_TRACEBACK"
"""Set to 1 to see the traceback of an unexpected error instead of its one-line summary."""


def _unexpected(error: BaseException) -> str:
    """One line for an error no check foresaw, pointing at its traceback (written to a file, or shown on request)."""
    with tempfile.NamedTemporaryFile("w", prefix="sdd-ray-traceback-", suffix=".txt", delete=False) as log:
        traceback.print_exception(error, file=log)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"error: unexpected {error.__class__.__name__}{': ' + first if first else ''} "
            f"(traceback in {log.name}; {TRACEBACK_ENV}=1 prints it)")


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does, so that staging folders are removed on the way out."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> None:
    """Entry point of `sdd-ray` and of every `jobs/<stage>.py` (`argv`: the command and its flags; default `sys.argv`).

    The one error boundary: every known failure (configuration, input, model, a full disk) is one
    `error:` line and exit code 2; a failed teacher exit code 1; anything else one line naming the
    file that holds its traceback, exit code 1 (`SDD_RAY_TRACEBACK=1` raises it instead).
    """
    _stop_on_sigterm()
    try:
        app(args=argv)
    except (UserError, ConversionError, ModelNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except TeacherFailureError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        if is_disk_full(error):
            print(f"error: no space left on the device ({error.__class__.__name__}); free some space and rerun "
                  "the same command", file=sys.stderr)
            sys.exit(2)
        print(_unexpected(error), file=sys.stderr)
        sys.exit(1)
    finally:
        release_outs()


if __name__ == "__main__":
    main()
