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
