"""`sdd-ray --help` and every `sdd-ray CMD --help` stay light: neither torch nor Ray is imported.

Checked in a fresh interpreter (this test process has torch loaded by conftest): it runs the real
entry point for each help line and reports, after each one, which heavy modules are loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "transformers", "vllm")

CHECK = f"""
import json, sys
import typer
from sdd_ray.cli import app, main

commands = sorted(typer.main.get_command(app).commands)
loaded = {{}}
for argv in [["--help"]] + [[name, "--help"] for name in commands]:
    sys.argv = ["sdd-ray", *argv]
    try:
        main()
    except SystemExit as stop:
        assert stop.code in (0, None), (argv, stop.code)
    loaded[" ".join(argv)] = [name for name in {HEAVY!r} if name in sys.modules]
print(json.dumps({{"commands": commands, "loaded": loaded}}))
"""


def test_help_imports_neither_torch_nor_ray():
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"run", "prune", "distill", "finetune", "merge", "evaluate", "specdec", "serve"} <= set(report["commands"])
    heavy = {argv: modules for argv, modules in report["loaded"].items() if modules}
    assert not heavy, f"`sdd-ray ARGS` loaded heavy modules (ARGS: modules): {heavy}"


def test_flag_defaults_shown_in_help_are_the_configs_own():
    """A flag left out is not an override (the config decides), so the default its help shows must be the config's."""
    import inspect

    from sdd_ray.distill.cli import distill
    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.evaluate.cli import evaluate
    from sdd_ray.evaluate.config import EvaluateConfig
    from sdd_ray.finetune.cli import finetune
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.prune.cli import prune
    from sdd_ray.prune.config import PruneConfig
    from sdd_ray.serve.cli import serve
    from sdd_ray.serve.config import ServeConfig
    from sdd_ray.specdec.cli import specdec
    from sdd_ray.specdec.config import SpecDecConfig

    checked = 0
    for command, config in [(prune, PruneConfig), (distill, DistillConfig), (finetune, FinetuneConfig),
                            (evaluate, EvaluateConfig), (specdec, SpecDecConfig), (serve, ServeConfig)]:
        for name, parameter in inspect.signature(command).parameters.items():
            field = config.model_fields.get(name)
            if field is None or parameter.default in (None, inspect.Parameter.empty):
                continue
            assert parameter.default == field.get_default(call_default_factory=True), (command.__name__, name)
            checked += 1
    assert checked >= 20
