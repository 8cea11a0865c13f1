"""Bad input, as a new user gives it: every case ends in one clear line and exit code 2, and no input changes.

Issue #16 ("Nothing lost, nothing silently wrong"): each test runs the real command line (`sdd_ray.cli.main`,
in this process) on tiny models, and checks the exit code, the one-line message, and that every input
folder hashes the same before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_llama

# --- helpers -------------------------------------------------------------------------------------

def tree_hash(path: Path) -> str:
    """A hash of every file under `path` (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def sdd(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """Run `sdd-ray ARGS` as a user does (through `main`, which turns input errors into exit code 2)."""
    from sdd_ray.cli import main

    monkeypatch.setattr(sys, "argv", ["sdd-ray", *map(str, args)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


def sdd_on_ray(ray_local, *args: str) -> tuple[int, str]:
    """Run `sdd-ray ARGS` in a fresh process on the session's local Ray (as a user's second terminal would)."""
    import os
    import subprocess

    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sdd_ray.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stderr


def refused(capsys, monkeypatch, *args, inputs=(), expect: str, ray_local=None) -> str:
    """Assert the command exits 2 with one `error:` line containing `expect`, and changes none of `inputs`.

    On Ray (`ray_local` given) Ray's own INFO lines may come first; the error is then the last line.
    """
    before = {str(p): tree_hash(p) for p in inputs}
    code, err = sdd_on_ray(ray_local, *args) if ray_local is not None else sdd(capsys, monkeypatch, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    if ray_local is not None:
        lines = [line for line in lines if not line.startswith(("20", "(", "Token authentication"))]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], lines[0]
    assert {str(p): tree_hash(p) for p in inputs} == before, "an input was changed"
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny 3-layer checkpoints (different weights) in a scratch folder."""
    root = tmp_path_factory.mktemp("models")
    return make_tiny_llama(root / "a", num_layers=3, seed=0), make_tiny_llama(root / "b", num_layers=3, seed=1)


@pytest.fixture
def model(models, tmp_path):
    """A private copy of model a (tests may damage it)."""
    return Path(shutil.copytree(models[0], tmp_path / "model"))


def with_layers(model: Path, n: int) -> Path:
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = n
    (model / "config.json").write_text(json.dumps(config))
    return model


def truncate(model: Path) -> Path:
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) * 2 // 3])
    return model


def write_jsonl(path: Path, rows: list, raw_lines: tuple[bytes, ...] = ()) -> Path:
    with open(path, "wb") as handle:
        for row in rows:
            handle.write(json.dumps(row).encode() + b"\n")
        for line in raw_lines:
            handle.write(line + b"\n")
    return path


def toy_rows(n: int) -> list[dict]:
    from sdd_ray.toy.sources import toy_records

    return toy_records("toy:arith", n)


# --- 1. outputs never overwrite inputs or foreign folders ----------------------------------------

def test_finetune_out_is_its_own_model(capsys, monkeypatch, model):
    refused(capsys, monkeypatch, "finetune", "--model", model, "--data", "toy:arith", "--out", model,
            inputs=[model], expect="is (or overlaps) the input --model")


def test_finetune_out_is_a_foreign_model_folder(capsys, monkeypatch, models, model):
    other = models[1]
    refused(capsys, monkeypatch, "finetune", "--model", model, "--data", "toy:arith", "--out", other,
            inputs=[model, other], expect="a non-empty folder that `sdd-ray finetune` did not write")


def test_prune_out_is_its_own_model(capsys, monkeypatch, model):
    (model / "pruning.json").write_text("{}")  # an earlier prune output, pruned again in place
    refused(capsys, monkeypatch, "prune", "--model", model, "--block-size", "1", "--num-workers", "0",
            "--out", model, inputs=[model], expect="is (or overlaps) the input --model")


def test_merge_out_is_one_of_its_inputs(capsys, monkeypatch, models, tmp_path):
    a, b = (Path(shutil.copytree(m, tmp_path / m.name)) for m in models)
    refused(capsys, monkeypatch, "merge", "--models", a, b, "--out", b, inputs=[a, b],
            expect="is (or overlaps) the input --models")


@pytest.mark.parametrize("stage", ["finetune", "prune", "merge", "distill"])
def test_out_names_a_file(capsys, monkeypatch, models, tmp_path, stage):
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    a, b = models
    args = {"finetune": ["finetune", "--model", a, "--data", "toy:arith"],
            "prune": ["prune", "--model", a, "--block-size", "1", "--num-workers", "0"],
            "merge": ["merge", "--models", a, b],
            "distill": ["distill", "--teacher", a, "--data", "toy:arith"]}[stage]
    refused(capsys, monkeypatch, *args, "--out", out, inputs=[out, a, b], expect="is a file")


def test_merge_same_model_spelled_twice(capsys, monkeypatch, model, tmp_path):
    monkeypatch.chdir(model.parent)
    refused(capsys, monkeypatch, "merge", "--models", model.name, f"./{model.name}/", "--out", tmp_path / "merged",
            inputs=[model], expect="the two parents are the same checkpoint")


# --- 2. resume checks what it resumes -------------------------------------------------------------

def test_claim_out_names_what_differs_and_overwrite_starts_over(tmp_path):
    from sdd_ray.guards import InputError, claim_out

    out = tmp_path / "out"
    out.mkdir()
    claim_out(out, "distill", {"teacher": "a", "max_new_tokens": 8})
    (out / "stats.json").write_text("{}")
    claim_out(out, "distill", {"teacher": "a", "max_new_tokens": 8})  # the same command resumes
    with pytest.raises(InputError, match=r"teacher: \"a\" -> \"b\""):
        claim_out(out, "distill", {"teacher": "b", "max_new_tokens": 8})
    assert (out / "stats.json").exists()
    claim_out(out, "distill", {"teacher": "b", "max_new_tokens": 8}, overwrite=True, clear=("stats.json",))
    assert not (out / "stats.json").exists()


@pytest.mark.timeout(240)
def test_distill_bad_utf8_row_then_resume_with_another_teacher(capsys, monkeypatch, models, tmp_path, ray_local):
    """A non-UTF-8 line is one rejected row; resuming that folder with another teacher is refused."""
    a, b = models
    data = write_jsonl(tmp_path / "rows.jsonl", toy_rows(6), raw_lines=(b'{"instruction": "caf\xe9", "response": "1"}',))
    out = tmp_path / "distilled"
    common = ["--data", data, "--out", out, "--max-new-tokens", "4", "--batch-size", "4", "--no-progress"]
    code, err = sdd_on_ray(ray_local, "distill", "--teacher", a, *common)
    assert code == 0, err
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["not valid UTF-8 (at byte 20)"]
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["rows_out"], stats["rows_rejected"], stats["complete"]) == (6, 1, True)

    refused(capsys, monkeypatch, "distill", "--teacher", b, *common, inputs=[a, b, data, out],
            expect="holds a distill run with other inputs or settings (teacher:")
    code, err = sdd_on_ray(ray_local, "distill", "--teacher", a, *common)  # the same command: a no-op resume
    assert code == 0, err
    assert json.loads((out / "stats.json").read_text())["this_run"]["resumed"] == 7


def test_finetune_resume_with_other_data_is_refused(capsys, monkeypatch, model, tmp_path):
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.preflight import resume_record
    from sdd_ray.guards import claim_out
    from sdd_ray.models import as_spec

    out = tmp_path / "ft"
    out.mkdir()
    data = write_jsonl(tmp_path / "a.jsonl", toy_rows(4))
    cfg = FinetuneConfig(model=as_spec(str(model)), data="toy:facts")
    claim_out(out, "finetune", resume_record(cfg))  # what an interrupted `finetune --data toy:facts` left
    refused(capsys, monkeypatch, "finetune", "--model", model, "--data", data, "--out", out, inputs=[model, data],
            expect="holds a finetune run with other inputs or settings (data:")


def test_resume_record_is_by_content_not_spelling(model, monkeypatch):
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.preflight import resume_record
    from sdd_ray.models import as_spec

    monkeypatch.chdir(model.parent)
    records = [resume_record(FinetuneConfig(model=as_spec(path), data="toy:facts"))
               for path in (model.name, f"./{model.name}/", str(model))]
    assert records[0] == records[1] == records[2]


# --- 3. run's cache is keyed by content -----------------------------------------------------------

def test_run_cache_keys_follow_content_not_paths(models, tmp_path):
    from sdd_ray.pipeline.config import RunConfig, check_run_config
    from sdd_ray.pipeline.plan import build_plan

    model = Path(shutil.copytree(models[0], tmp_path / "model"))
    data = write_jsonl(tmp_path / "rows.jsonl", toy_rows(6))
    config = {"model": str(model), "out": str(tmp_path / "run"), "prune": {"block_size": 1, "num_workers": 0},
              "distill": {"data": {"source": str(data)}}, "finetune": {}, "merge": {}, "specdec": {"data": "toy:all"}}

    def keys():
        cfg = RunConfig.model_validate(config)
        check_run_config(cfg)
        return {job.label: job.unit.key for job in build_plan(cfg, tmp_path / "run").jobs}

    before = keys()
    assert keys() == before  # nothing changed: every stage is reused
    for item in models[1].iterdir():  # other weights at the same path
        shutil.copy2(item, model / item.name)
    after_weights = keys()
    assert all(after_weights[label] != before[label] for label in before), "a stage reads the old weights"
    write_jsonl(data, toy_rows(7))  # other data at the same path
    after_data = keys()
    changed = {label for label in before if after_data[label] != after_weights[label]}
    assert "distill" in changed and all(label.startswith(("distill", "finetune", "merge", "evaluate[sft",
                                                          "evaluate[sdd", "evaluate[merged", "specdec"))
                                        for label in changed)
    assert after_data["prune[bs=1]"] == after_weights["prune[bs=1]"]


# --- 4. checkpoint integrity ----------------------------------------------------------------------

def test_config_with_more_layers_than_the_weights(capsys, monkeypatch, model, tmp_path):
    with_layers(model, 5)
    line = refused(capsys, monkeypatch, "evaluate", "--model", model, "--limit", "2", "--out", tmp_path / "r.json",
                   inputs=[model], expect="num_hidden_layers is 5 but the weights")
    assert "first missing tensor model.layers.3." in line


def test_config_with_fewer_layers_than_the_weights(capsys, monkeypatch, model, tmp_path):
    with_layers(model, 2)
    refused(capsys, monkeypatch, "evaluate", "--model", model, "--limit", "2", "--out", tmp_path / "r.json",
            inputs=[model], expect="first unexpected tensor model.layers.2.")


def test_missing_tensor_fails_on_load(model):
    """A tensor outside the layers (here the final norm) missing: transformers' own loading report catches it."""
    from safetensors.torch import load_file, save_file

    from sdd_ray.models import load_model
    from sdd_ray.weights import CheckpointError

    tensors = load_file(model / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing tensor.*first model.norm.weight"):
        load_model(str(model))


STAGE_ARGS = {
    "prune": lambda m, o, d: ["prune", "--model", m, "--block-size", "1", "--num-workers", "0", "--out", o],
    "distill": lambda m, o, d: ["distill", "--teacher", m, "--data", "toy:arith", "--out", o],
    "finetune": lambda m, o, d: ["finetune", "--model", m, "--data", "toy:arith", "--out", o],
    "merge": lambda m, o, d: ["merge", "--models", m, d, "--out", o],
    "evaluate": lambda m, o, d: ["evaluate", "--model", m, "--limit", "2", "--out", o / "r.json"],
    "specdec": lambda m, o, d: ["specdec", "--target", m, "--draft", d, "--data", "toy:arith", "--out", o / "s.json"],
    "serve": lambda m, o, d: ["serve", "--target", m, "--draft", d],
}


@pytest.mark.parametrize("stage", sorted(STAGE_ARGS))
def test_truncated_safetensors(capsys, monkeypatch, models, model, tmp_path, stage):
    truncate(model)
    out = tmp_path / "out"
    if stage in ("evaluate", "specdec"):
        out.mkdir()
    refused(capsys, monkeypatch, *STAGE_ARGS[stage](model, out, models[1]), inputs=[model, models[1]],
            expect=f"{model / 'model.safetensors'}: truncated safetensors file")


def test_run_with_a_truncated_model_starts_nothing(capsys, monkeypatch, model, tmp_path):
    import yaml

    truncate(model)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": str(model), "out": str(tmp_path / "run"), "prune": {"block_size": 1}}))
    refused(capsys, monkeypatch, "run", config, inputs=[model], expect="truncated safetensors file")
    assert not (tmp_path / "run").exists()


# --- 5. recovery compares like with like ----------------------------------------------------------

def _results(path: Path, seed: int, value: float) -> Path:
    path.write_text(json.dumps({"model": path.stem, "seed": seed, "limit": 4,
                                "tasks": {"arith": {"metric": "exact_match", "value": value, "n": 4}}}))
    return path


def test_compare_refuses_different_seeds(capsys, monkeypatch, tmp_path):
    base, other = _results(tmp_path / "base.json", 0, 0.5), _results(tmp_path / "pruned.json", 1, 0.25)
    refused(capsys, monkeypatch, "compare", base, other, "--out", tmp_path / "cmp", inputs=[base, other],
            expect="with seed 1 but base with seed 0")


def test_evaluate_baseline_file_with_another_seed(capsys, monkeypatch, model, tmp_path):
    base = _results(tmp_path / "base.json", 0, 0.5)
    refused(capsys, monkeypatch, "evaluate", "--model", model, "--tasks", "arith", "--limit", "4", "--seed", "1",
            "--baseline", base, "--out", tmp_path / "r.json", inputs=[model, base], expect="seed 1 but")
    assert not (tmp_path / "r.json").exists()


# --- 6. resources checked before work -------------------------------------------------------------

@pytest.mark.timeout(120)
def test_finetune_more_workers_than_the_cluster_has(capsys, monkeypatch, model, tmp_path, ray_local):
    line = refused(capsys, monkeypatch, "finetune", "--model", model, "--data", "toy:arith", "--out", tmp_path / "ft",
                   "--num-workers", "8", "--cpus-per-worker", "1", "--strategy", "ddp", inputs=[model], ray_local=ray_local,
                   expect="finetune: 8 workers x 1 CPU = 8 CPU, but the Ray cluster has 2 CPU in all")
    assert "--num-workers" in line


@pytest.mark.timeout(120)
def test_finetune_with_no_usable_rows(capsys, monkeypatch, model, tmp_path, ray_local):
    data = write_jsonl(tmp_path / "empty_responses.jsonl", [{"instruction": "say hi", "response": "  "}] * 3)
    line = refused(capsys, monkeypatch, "finetune", "--model", model, "--data", data, "--out", tmp_path / "ft",
            "--num-workers", "1", "--cpus-per-worker", "0.5", "--strategy", "ddp", inputs=[model, data], ray_local=ray_local,
            expect="no valid rows (3 rejected; first: response (column 'response') is empty)")
    assert "original_response" not in line  # the SFT hint is for a missing original_response only


def test_run_checks_resources_before_any_stage(tmp_path, monkeypatch):
    from sdd_ray.guards import InputError
    from sdd_ray.pipeline.config import RunConfig
    from sdd_ray.pipeline.run import check_run_resources

    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 2.0})
    cfg = RunConfig.model_validate({"model": "m", "prune": {"block_size": 1}, "finetune": {"num_workers": 8},
                                    "distill": {"data": {"source": "toy:all"}}})
    with pytest.raises(InputError, match=r"finetune: 8 workers x 1 CPU = 8 CPU, but the Ray cluster has 2 CPU"):
        check_run_resources(cfg)


# --- 7. one clear line instead of a traceback -----------------------------------------------------

def test_distill_missing_data_file(capsys, monkeypatch, model, tmp_path):
    refused(capsys, monkeypatch, "distill", "--teacher", model, "--data", tmp_path / "missing.jsonl",
            "--out", tmp_path / "out", inputs=[model], expect="missing.jsonl: no such file or folder")


def test_distill_empty_data_file(capsys, monkeypatch, model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    refused(capsys, monkeypatch, "distill", "--teacher", model, "--data", empty, "--out", tmp_path / "out",
            inputs=[model, empty], expect="no rows (the data is empty)")


def test_specdec_missing_data_file(capsys, monkeypatch, models, tmp_path):
    a, b = models
    refused(capsys, monkeypatch, "specdec", "--target", a, "--draft", b, "--data", tmp_path / "prompts.jsonl",
            "--out", tmp_path / "s.json", inputs=[a, b], expect="prompts.jsonl: no such file or folder")


def test_run_missing_data_file_starts_nothing(capsys, monkeypatch, model, tmp_path):
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(model), "out": str(tmp_path / "run"), "prune": {"block_size": 1},
        "distill": {"data": {"source": str(tmp_path / "missing.jsonl")}}}))
    refused(capsys, monkeypatch, "run", config, inputs=[model], expect="distill.data.source")
    assert not (tmp_path / "run").exists()


def test_run_data_without_the_mapped_columns(capsys, monkeypatch, model, tmp_path):
    import yaml

    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "1+1?", "answer": "2"}] * 3)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": str(model), "out": str(tmp_path / "run"), "prune": {"block_size": 1},
                                      "distill": {"data": {"source": str(data)}}}))
    refused(capsys, monkeypatch, "run", config, inputs=[model, data],
            expect="none of the first 3 rows is usable (first: missing field 'instruction'")
    assert not (tmp_path / "run").exists()


def test_serve_bad_model_path(capsys, monkeypatch, model, tmp_path):
    refused(capsys, monkeypatch, "serve", "--target", tmp_path / "nope", "--draft", model, inputs=[model],
            expect="no such directory")


@pytest.mark.parametrize("field, value, message", [
    ("max_tokens", True, "max_tokens: Input should be a valid integer"),
    ("max_tokens", "10", "max_tokens: Input should be a valid integer"),
    ("seed", 2**64, "seed: Input should be less than 18446744073709551616"),
    ("seed", -1, "seed: Input should be greater than or equal to 0"),
    ("temperature", "0.5", "temperature: Input should be a valid number"),
    ("stream", "yes", "stream: Input should be a valid boolean"),
])
def test_http_request_types_are_strict(field, value, message):
    from sdd_ray.serve.protocol import CompletionRequest, RequestError, parse_request

    body = json.dumps({"model": "m", "prompt": "hi", field: value}).encode()
    with pytest.raises(RequestError) as error:
        parse_request(CompletionRequest, body, "m", 64, 16)
    assert error.value.status == 400 and error.value.message == message


def test_safetensors_header_check_on_a_damaged_header(tmp_path):
    from sdd_ray.weights import CheckpointError, read_header

    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        read_header(path)
