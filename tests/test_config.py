"""Config validation: bad configs fail before any work, naming the file, the field and the reason."""

from __future__ import annotations

import pytest
from pydantic import Field

from sdd_ray.config import ConfigError, ModelSpec, StrictModel, dump_config, load_config


class Stage(StrictModel):
    block_size: int = Field(2, gt=0)
    metric: str = "angular"


class Run(StrictModel):
    model: ModelSpec
    stage: Stage = Stage()


def test_yaml_round_trip(tmp_path):
    cfg = Run(model=ModelSpec(path="toy"), stage=Stage(block_size=4))
    dump_config(cfg, tmp_path / "run.yaml")
    assert load_config(Run, tmp_path / "run.yaml") == cfg


def test_error_names_file_field_and_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {path: toy}\nstage: {block_size: -1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    assert str(info.value) == f"{path}: stage.block_size: Input should be greater than 0"


def test_unknown_field_and_bad_choice(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {path: toy, dtype: int3}\nstage: {blok_size: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(Run, path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}: model.dtype: Input should be 'auto'")
    assert lines[1] == f"{path}: stage.blok_size: unknown field"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Run, tmp_path / "list.yaml")


def test_trust_remote_code_is_off_by_default():
    assert ModelSpec(path="x").trust_remote_code is False


def test_flags_override_the_config_file_field_by_field(tmp_path):
    """One loader for every command: the file, then the typed flags; a short-form data set is extended, not replaced."""
    from sdd_ray.data import DataSpec
    from sdd_ray.finetune.config import FinetuneConfig

    path = tmp_path / "ft.yaml"
    path.write_text("model: {path: m, dtype: bfloat16}\ndata: toy:arith\nlora: {rank: 4, alpha: 8}\nlr: 0.01\n")
    cfg = load_config(FinetuneConfig, path, {"data.limit": 8, "lora.alpha": 2.0, "epochs": 3})
    assert cfg.data == DataSpec(source="toy:arith", limit=8)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lr, cfg.epochs, cfg.model.dtype) == (4, 2.0, 0.01, 3, "bfloat16")
    with pytest.raises(ConfigError, match="command line: data: Field required"):
        load_config(FinetuneConfig, None, {"model": {"path": "m"}})


def test_every_command_reads_config_then_typed_flags(tmp_path, capsys):
    """`sdd-ray specdec --config FILE --k 0`: the flag overrides the file's k, and the error names the file."""
    from sdd_ray.cli import main

    path = tmp_path / "specdec.yaml"
    path.write_text("target: {path: t}\ndrafts: {d: {path: d}}\ndata: toy:all\nk: 3\n")
    with pytest.raises(SystemExit) as stop:
        main(["specdec", "--config", str(path), "--k", "0", "--out", str(tmp_path / "s.json")])
    assert stop.value.code == 2
    assert f"error: {path}: k: Input should be greater than or equal to 1" in capsys.readouterr().err
