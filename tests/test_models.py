"""Model I/O: plain HF checkpoints round-trip exactly; missing models fail clearly."""

from __future__ import annotations

import pytest
import torch

from sdd_ray.config import ModelSpec
from sdd_ray.models import ModelNotFoundError, load_model, load_model_and_tokenizer, model_num_layers, save_model


def test_round_trip_logits_identical(tiny_llama, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_llama)
    ids = tokenizer(["Tom has 5 apples.", "What is the capital of Zorland?"], return_tensors="pt", padding=True)
    before = model(**ids).logits
    out = save_model(model, tokenizer, tmp_path / "copy")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    after = load_model(out)(**ids).logits
    assert torch.equal(before, after)


def test_only_safetensors_are_loaded(tiny_llama, tmp_path):
    copy = tmp_path / "pickled"
    copy.mkdir()
    (copy / "config.json").write_text((tiny_llama / "config.json").read_text())
    torch.save({}, copy / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="no \\*.safetensors weights"):
        load_model(copy)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory, and not a hub id"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face checkpoint"):
        load_model(tmp_path)


def test_hub_id_unreachable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not a local directory"):
        load_model(ModelSpec(path="some-org/some-model"))


def test_num_layers_without_weights(tiny_llama):
    assert model_num_layers(tiny_llama) == 6
