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
