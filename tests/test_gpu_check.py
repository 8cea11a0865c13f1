"""benchmarks/gpu_check.py starts and writes its JSON: its dry run (the CPU-checkable parts) on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_gpu_check_dry_run_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=560)
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert run.returncode == 0, {n: c.get("error") for n, c in checks.items() if c["status"] == "failed"}
    assert report["dry_run"] and report["device"] == "cpu"
    assert set(checks) == {"cuda_bf16_load", "zero2_lora", "zero3_lora", "zero3_offload", "layer_memory_8b",
                           "specdec_identity", "prune_calibration", "ray_data_llm_distill", "served_pair", "lm_eval_vllm"}
    ran = {n for n, c in checks.items() if c["status"] == "passed"}
    assert {"cuda_bf16_load", "layer_memory_8b", "specdec_identity", "prune_calibration"} <= ran
    assert all(c["status"] == "skipped" and c["reason"] for n, c in checks.items() if n not in ran)
    assert checks["specdec_identity"]["float32"] == "2/2 identical"
