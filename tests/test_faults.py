"""Faults, second round (issue #23): one line instead of a traceback, no staging folder left behind, one run per --out.

Each test runs the real command line (`sdd_ray.cli.main`, in this process) on tiny models, as
`tests/test_bad_input.py` does, and checks the exit code, the one line, and what is left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import model, models, refused, sdd  # noqa: F401  (fixtures)

QUICK_PRUNE = ("--block-size", "1", "--num-workers", "0", "--num-samples", "4")
NOT_UTF8_YAML = b"model: caf\xe9\n"


@pytest.fixture(autouse=True)
def no_progress_bars():
    """transformers' loading and saving bars share stderr with the one error line these tests read."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    yield
    logging.enable_progress_bar()


def staging_left(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


# --- one line instead of a traceback -------------------------------------------------------------

def test_config_file_not_utf8_is_one_line(capsys, monkeypatch, tmp_path):
    config = tmp_path / "prune.yaml"
    config.write_bytes(NOT_UTF8_YAML)
    refused(capsys, monkeypatch, "prune", "--config", config, "--out", tmp_path / "out", inputs=[config],
            expect="prune.yaml: not UTF-8 text (byte 10); save the config as UTF-8")


def test_distill_hub_dataset_that_does_not_exist_offline(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    refused(capsys, monkeypatch, "distill", "--teacher", model, "--data", "nosuch-org/nosuch-data", "--out", out,
            inputs=[model], expect="--data nosuch-org/nosuch-data: not a local file or folder, and the Hugging Face "
                                   "data set could not be loaded")
    assert not out.exists()


def test_prune_hub_dataset_that_does_not_exist_offline(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    refused(capsys, monkeypatch, "prune", "--model", model, "--calib", "nosuch-org/nosuch-data", *QUICK_PRUNE,
            "--out", out, inputs=[model], expect="--calib nosuch-org/nosuch-data: not a local file or folder")
    assert not out.exists() and not staging_left(out)


def test_checkpoint_of_an_architecture_transformers_does_not_know(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "sdd-ray-unknown"}))
    refused(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", tmp_path / "out", inputs=[model],
            expect="architecture model_type 'sdd-ray-unknown' is unknown to transformers")


def test_checkpoint_without_tokenizer_files(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    line = refused(capsys, monkeypatch, "distill", "--teacher", model, "--data", "toy:arith", "--out", tmp_path / "out",
                   inputs=[model], expect="no tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    assert "sentencepiece" not in line


def test_specdec_target_and_draft_vocabularies_differ(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    draft = tmp_path / "draft"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer) + 64, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).save_pretrained(draft)
    tokenizer.save_pretrained(draft)
    refused(capsys, monkeypatch, "specdec", "--target", model, "--draft", draft, "--data", "toy:arith",
            "--out", tmp_path / "s.json", inputs=[model, draft],
            expect=f"--draft {draft}: vocabulary of {len(tokenizer) + 64} tokens, but --target {model} has {len(tokenizer)}")


def test_unexpected_error_is_one_line_pointing_at_its_traceback(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    def boom(*args, **kwargs):
        raise RuntimeError("boom in surgery")

    monkeypatch.setattr("sdd_ray.prune.surgery.remove_layers", boom)
    out = tmp_path / "out"
    code, err = sdd(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: unexpected RuntimeError: boom in surgery (traceback in ")
    assert lines[0].endswith("SDD_RAY_TRACEBACK=1 prints it)")
    log = Path(lines[0].split("traceback in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "boom in surgery" in log.read_text()
    log.unlink()
    assert not out.exists() and not staging_left(out), "a failed prune left its staging folder"

    monkeypatch.setenv("SDD_RAY_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="boom in surgery"):
        sdd(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", out)


# --- a full disk ---------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (smaller than any checkpoint here); skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)],
                                                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_prune_on_a_full_disk(capsys, monkeypatch, model, tiny_disk):  # noqa: F811
    out = tiny_disk / "pruned"
    refused(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", out, inputs=[model],
            expect=f"--out {out}: no space left on the device while writing")
    assert not out.exists() and not staging_left(out)


def test_merge_on_a_full_disk(capsys, monkeypatch, models, tiny_disk):  # noqa: F811
    out = tiny_disk / "merged"
    refused(capsys, monkeypatch, "merge", "--models", *models, "--out", out, inputs=list(models),
            expect=f"--out {out}: no space left on the device while writing")
    assert not out.exists() and not staging_left(out)


def test_merge_when_the_safetensors_writer_reports_a_full_disk(capsys, monkeypatch, models, tmp_path):  # noqa: F811
    """Where no tmpfs can be mounted: safetensors' own error for ENOSPC, as it words it."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr("sdd_ray.merge.merge.save_file", full)
    out = tmp_path / "merged"
    refused(capsys, monkeypatch, "merge", "--models", *models, "--out", out, inputs=list(models),
            expect=f"--out {out}: no space left on the device while writing")
    assert not out.exists() and not staging_left(out)


# --- staging folders and the lock on --out ----------------------------------------------------------

def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    """Issue #23: a killed prune left `.OUT.<pid>.tmp` (a whole checkpoint) that no later run removed."""
    out = tmp_path / "pruned"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".pruned.{dead.pid}.tmp"
    shutil.copytree(model, stale)
    live = tmp_path / f".pruned.{os.getppid()}.tmp"  # a process still running: maybe still writing, kept
    live.mkdir()
    code, err = sdd(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", out)
    assert code == 0, err
    assert not stale.exists() and live.exists()
    assert (out / "pruning.json").is_file()


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock on an --out folder; yields (start(out) -> pid)."""
    started = []

    def start(out: Path) -> int:
        ready = tmp_path / f"{out.name}.ready"
        code = ("import sys, time, pathlib; from sdd_ray.guards import lock_out; lock_out(sys.argv[1]); "
                "pathlib.Path(sys.argv[2]).touch(); time.sleep(120)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen([sys.executable, "-c", code, str(out), str(ready)], env=env)
        started.append(process)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.1)
        return process.pid

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.parametrize("stage", ["distill", "finetune", "prune"])
def test_a_second_run_on_the_same_out_refuses_naming_the_first(capsys, monkeypatch, model, tmp_path, holder, stage):  # noqa: F811
    """Issue #23: two runs on one --out both ran and interleaved their files."""
    out = tmp_path / "out"
    pid = holder(out)
    args = {"distill": ["distill", "--teacher", model, "--data", "toy:arith"],
            "finetune": ["finetune", "--model", model, "--data", "toy:arith"],
            "prune": ["prune", "--model", model, *QUICK_PRUNE]}[stage]
    refused(capsys, monkeypatch, *args, "--out", out, inputs=[model],
            expect=f"--out {out}: another run is writing there (pid {pid}); wait for it to end")
    assert not out.exists()


def test_the_lock_is_released_when_the_command_ends(capsys, monkeypatch, model, tmp_path):  # noqa: F811
    from sdd_ray import guards

    code, _ = sdd(capsys, monkeypatch, "prune", "--model", model, *QUICK_PRUNE, "--out", tmp_path / "out")
    assert code == 0 and not guards._LOCKS
    guards.lock_out(tmp_path / "out")  # free again
    guards.release_outs()
