"""Pruning: exact distances, planted redundancy, layer surgery that reloads with transformers alone,
Ray Data calibration that does not depend on the worker count, and clear errors on bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_tiny_llama
from torch import nn

from sdd_ray.config import ConfigError, validate_config
from sdd_ray.data import DataSpec
from sdd_ray.prune.calibrate import CalibrationLengthError, CalibrationSums, calibration_sums, check_lengths
from sdd_ray.prune.config import PruneConfig
from sdd_ray.prune.data import CalibrationDataError, load_calibration_texts
from sdd_ray.prune.distances import (
    angle_sums,
    angular_distances,
    choose_block,
    distances_from_angle_sums,
    distances_from_bi_sums,
)
from sdd_ray.prune.run import run_prune
from sdd_ray.prune.surgery import UnsupportedArchitectureError, find_decoder_layers, remove_layers

PLANTED = [2, 3]  # the identity block planted in the 6-layer model


def toy_texts(n: int) -> list[str]:
    """The toy world's first `n` calibration texts, as `sdd-ray prune` reads them by default."""
    return load_calibration_texts(DataSpec(source="toy:all", split="calibration"), num_samples=n)


def plant_identity(model, layers: list[int]) -> None:
    """Zero the attention-output and MLP-down projections: each layer then adds exactly 0 to the residual."""
    with torch.no_grad():
        for i in layers:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()


@pytest.fixture(scope="module")
def planted_llama(tmp_path_factory):
    """A 6-layer random Llama whose layers 2 and 3 are exact identities, saved as a checkpoint."""
    from sdd_ray.models import load_model_and_tokenizer

    path = make_tiny_llama(tmp_path_factory.mktemp("planted"), num_layers=6, seed=1)
    model, tokenizer = load_model_and_tokenizer(path)
    plant_identity(model, PLANTED)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pruned(planted_llama, tmp_path_factory):
    """run_prune (in process) on the planted model, block size 2."""
    cfg = PruneConfig(model={"path": str(planted_llama)}, block_size=2, num_workers=0, num_samples=24, max_length=48)
    out = tmp_path_factory.mktemp("pruned") / "model"
    return out, run_prune(cfg, out)


# ---- the maths -------------------------------------------------------------------------------

def test_angular_distances_exact_values():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    hidden = torch.stack([e1, 3 * e1, e2, -e2])[None]  # (1 sample, L+1 = 4 states, 2)
    d = angular_distances(hidden)
    assert sorted(d) == [1, 2]
    assert d[1].tolist() == [0.0, 0.5, 1.0]  # same direction, orthogonal, opposite
    assert torch.allclose(d[2], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_angle_sums_add_up_across_shards():
    hidden = torch.randn(10, 5, 16)
    (a, na), (b, nb) = angle_sums(hidden[:3]), angle_sums(hidden[3:])
    whole = angular_distances(hidden)
    sharded = distances_from_angle_sums(a + b, na + nb)
    for n in whole:
        assert torch.allclose(whole[n], sharded[n], atol=1e-12)


def test_block_influence_is_the_mean_over_the_block():
    d = distances_from_bi_sums(torch.tensor([0.2, 0.4, 0.0, 0.6]), tokens=2)  # per layer: .1 .2 0 .3
    assert torch.allclose(d[1], torch.tensor([0.1, 0.2, 0.0, 0.3], dtype=torch.float64))
    assert torch.allclose(d[2], torch.tensor([0.15, 0.1, 0.15], dtype=torch.float64))
    assert choose_block(d, 1) == 2


def test_choose_block_prefers_the_deepest_on_ties():
    assert choose_block({2: torch.tensor([0.1, 0.05, 0.3, 0.05])}, 2) == 3
    with pytest.raises(ValueError, match="block size 5"):
        choose_block({1: torch.zeros(3), 2: torch.zeros(2)}, 5)


# ---- planted redundancy ---------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["angular", "bi"])
def test_planted_identity_block_is_chosen_and_removal_keeps_logits(planted_llama, metric):
    from sdd_ray.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(planted_llama)
    sums = calibration_sums(model, tokenizer, toy_texts(12), max_length=48, batch_size=4, metric=metric)
    d = sums.distances(metric)
    assert d[2][2].item() == 0.0 and (d[2] > 0).sum() == len(d[2]) - 1
    assert choose_block(d, 2) == 2

    ids = torch.randint(3, len(tokenizer), (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding on one row
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        remove_layers(model, PLANTED)
        after = model(input_ids=ids, attention_mask=mask).logits
    assert model.config.num_hidden_layers == 4
    assert torch.allclose(before, after, atol=1e-5)


# ---- the checkpoint -------------------------------------------------------------------------

def test_pruned_checkpoint_reloads_and_generates_with_kv_cache(pruned):
    from transformers import AutoModelForCausalLM

    out, report = pruned
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True, min_new_tokens=12)
        uncached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False, min_new_tokens=12)
    assert cached.shape[1] == 17
    assert torch.equal(cached, uncached)


def test_pruning_json_schema(pruned):
    out, report = pruned
    saved = json.loads((out / "pruning.json").read_text())
    assert saved == report
    assert saved["metric"] == "angular" and saved["block_size"] == 2
    assert saved["removed_layers"] == PLANTED
    assert (saved["num_layers_before"], saved["num_layers_after"]) == (6, 4)
    assert (saved["calibration"]["source"], saved["calibration"]["split"]) == ("toy:all", "calibration")
    assert saved["calibration"]["samples"] == 24 and saved["calibration"]["max_length"] == 48
    assert sorted(saved["distances"], key=int) == ["1", "2", "3", "4", "5"]
    assert [len(saved["distances"][str(n)]) for n in range(1, 6)] == [6, 5, 4, 3, 2]
    assert saved["distances"]["2"][2] == 0.0 == saved["chosen"]["distance"]
    assert (out / "distances.png").stat().st_size > 1000
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_dry_run_writes_only_the_evidence(planted_llama, tmp_path):
    cfg = PruneConfig(model={"path": str(planted_llama)}, block_size=0, num_workers=0, num_samples=6,
                      max_length=32, metric="bi")
    report = run_prune(cfg, tmp_path / "dry")
    assert report["removed_layers"] == [] and report["num_layers_after"] == 6
    assert sorted(p.name for p in (tmp_path / "dry").iterdir()) == ["distances.png", "pruning.json"]


def test_layer_lists_and_thresholds_follow_the_kept_layers(tmp_path):
    """Qwen2 keeps per-layer `layer_types` and a `max_window_layers` threshold in its config."""
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    types = ["full_attention", "sliding_attention"] * 3
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=2, num_key_value_heads=2, use_sliding_window=True,
                         sliding_window=4, max_window_layers=4, layer_types=types)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    remove_layers(model, [1, 2])
    assert model.config.layer_types == [types[i] for i in (0, 3, 4, 5)]
    assert model.config.max_window_layers == 2  # layers 0 and 3 were below 4
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)
    assert [layer.self_attn.layer_idx for layer in reloaded.model.layers] == [0, 1, 2, 3]


def test_unsupported_architecture_is_named():
    class TwoStacks(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"num_hidden_layers": 2})()
            self.encoder = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
            self.decoder = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])

    with pytest.raises(UnsupportedArchitectureError, match="found encoder, decoder"):
        find_decoder_layers(TwoStacks())
    model = TwoStacks()
    model.config = type("Config", (), {})()
    with pytest.raises(UnsupportedArchitectureError, match="no num_hidden_layers"):
        remove_layers(model, [0])


# ---- bad input -------------------------------------------------------------------------------

def test_block_size_must_be_below_the_layer_count(tiny_llama):
    with pytest.raises(ConfigError, match=r"block_size: must be < num_hidden_layers \(6\), got 6"):
        validate_config(PruneConfig, {"model": {"path": str(tiny_llama)}, "block_size": 6}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="metric"):
        validate_config(PruneConfig, {"model": {"path": str(tiny_llama)}, "metric": "cosine"})


def test_empty_or_missing_calibration_data_fails_before_loading(tiny_llama, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "  "}\n{"text": ""}\n')
    with pytest.raises(CalibrationDataError, match="is empty"):
        run_prune(PruneConfig(model={"path": str(tiny_llama)}, calib=str(empty), num_workers=0), tmp_path / "o")
    with pytest.raises(CalibrationDataError, match="no field 'body'"):
        load_calibration_texts(DataSpec(source=str(empty)), text_field="body")
    with pytest.raises(CalibrationDataError, match="missing.jsonl: no such file or folder"):
        load_calibration_texts(DataSpec(source=str(tmp_path / "missing.jsonl")))
    assert not (tmp_path / "o").exists()


def test_calibration_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a b", "", "c d", "e"]}), tmp_path / "c.parquet")
    assert load_calibration_texts(DataSpec(source=str(tmp_path / "c.parquet")), "body", num_samples=3) == ["a b", "c d"]


def test_texts_longer_than_the_context_are_rejected(tiny_llama):
    from sdd_ray.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama)
    long_text = " ".join(["cat"] * 300)  # the tiny model's context is 256 tokens
    with pytest.raises(CalibrationLengthError, match="1 calibration text.*text 1: 30[0-9] tokens"):
        check_lengths(tokenizer, ["dog", long_text], max_length=None, context=256)
    with pytest.raises(CalibrationLengthError, match="max_length 512 exceeds the model's context \\(256"):
        check_lengths(tokenizer, ["dog"], max_length=512, context=256)
    assert check_lengths(tokenizer, ["dog", long_text], max_length=64, context=256)[1] == 64


# ---- Ray Data --------------------------------------------------------------------------------

@pytest.mark.timeout(240)  # Ray start + three actor start-ups: ~30 s on a quiet 2-core machine, 70-90 s under load
def test_one_and_two_ray_workers_agree(planted_llama, ray_local, tmp_path):
    """1 worker through calibration_sums_ray, 2 workers through run_prune end to end."""
    from sdd_ray.models import as_spec, load_model_and_tokenizer
    from sdd_ray.prune.ray_calibration import calibration_sums_ray

    texts = toy_texts(20)
    one = calibration_sums_ray(as_spec(str(planted_llama)), texts, 6, 48, 4, "angular", num_workers=1)
    cfg = PruneConfig(model={"path": str(planted_llama)}, block_size=2, num_workers=2, num_samples=20,
                      max_length=48, batch_size=4)
    two = run_prune(cfg, tmp_path / "ray_pruned")
    model, tokenizer = load_model_and_tokenizer(planted_llama)
    local = calibration_sums(model, tokenizer, texts, 48, 8, "angular")
    assert one.samples == local.samples == two["calibration"]["samples"] == 20
    assert torch.allclose(one.angle_sums, local.angle_sums, atol=1e-6)
    d1 = one.distances("angular")
    for n, row in two["distances"].items():
        assert torch.allclose(d1[int(n)], torch.tensor(row, dtype=torch.float64), atol=1e-7)
    assert choose_block(d1, 2) == 2 and two["removed_layers"] == PLANTED
    assert (tmp_path / "ray_pruned" / "model.safetensors").is_file()


def test_calibration_sums_add():
    a, b = CalibrationSums.zeros(3), CalibrationSums.zeros(3)
    a.samples, b.samples, b.angle_sums[0, 1] = 2, 3, math.pi
    total = a + b
    assert total.samples == 5 and total.angle_sums[0, 1] == math.pi
