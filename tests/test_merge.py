"""SLERP merging: the formula against a plain reference, t schedules, streaming checkpoint merges."""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdd_ray.config import ConfigError, validate_config
from sdd_ray.merge.config import MergeConfig, load_merge_config
from sdd_ray.merge.merge import MergeMismatchError
from sdd_ray.merge.run import run_merge
from sdd_ray.merge.schedule import get_merge_method, layer_index, resolve_t
from sdd_ray.merge.slerp import slerp, slerp_with_info


def reference_slerp(a: torch.Tensor, b: torch.Tensor, t: float, threshold: float = 0.9995) -> torch.Tensor:
    """The textbook formula in float64 on normalised copies, LERP when |cos| > threshold."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = torch.dot(a64 / a64.norm(), b64 / b64.norm()).clamp(-1, 1).item()
    if abs(cos) > threshold:
        return ((1 - t) * a64 + t * b64).reshape(a.shape)
    theta = math.acos(cos)
    return ((math.sin((1 - t) * theta) * a64 + math.sin(t * theta) * b64) / math.sin(theta)).reshape(a.shape)


def rotated(a: torch.Tensor, cos: float, seed: int = 1) -> torch.Tensor:
    """A unit tensor at exactly angle acos(cos) from `a` (Gram-Schmidt on a random direction)."""
    unit = (a / a.norm()).double()
    other = torch.randn(a.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    other -= (other * unit).sum() * unit
    other /= other.norm()
    return (cos * unit + math.sqrt(1 - cos**2) * other).float()


# ---------------------------------------------------------------- the formula


@pytest.mark.parametrize("shape", [(7,), (33, 17), (4, 8, 16)])
@pytest.mark.parametrize("t", [0.1, 0.5, 0.73])
def test_slerp_matches_reference_on_random_tensors(shape, t):
    gen = torch.Generator().manual_seed(hash((shape, t)) % 2**31)
    a, b = torch.randn(shape, generator=gen) * 3, torch.randn(shape, generator=gen)
    result, info = slerp_with_info(a, b, t)
    assert info.method == "slerp" and result.shape == a.shape and result.dtype == torch.float32
    torch.testing.assert_close(result.double(), reference_slerp(a, b, t), atol=1e-5, rtol=1e-5)


def test_orthogonal_unit_vectors_stay_on_the_sphere():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    result = slerp(a, b, 0.5)
    torch.testing.assert_close(result, torch.tensor([1.0, 1.0]) / math.sqrt(2))  # LERP would give norm 0.707
    torch.testing.assert_close(slerp(a, b, 1 / 3), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


def test_slerp_just_below_the_colinear_threshold_follows_the_arc():
    a = torch.randn(64, generator=torch.Generator().manual_seed(3))
    unit_a = a / a.norm()
    b = rotated(a, cos=0.999)
    theta = math.acos(0.999)
    result, info = slerp_with_info(2 * unit_a, 3 * b, 0.25)
    assert info.method == "slerp" and info.theta == pytest.approx(theta, rel=1e-4)
    expected = (math.sin(0.75 * theta) * 2 * unit_a + math.sin(0.25 * theta) * 3 * b) / math.sin(theta)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-4)


def test_near_colinear_falls_back_to_lerp():
    a = torch.randn(1000, generator=torch.Generator().manual_seed(4))
    b = 2 * a + 1e-3 * torch.randn(1000, generator=torch.Generator().manual_seed(5))
    result, info = slerp_with_info(a, b, 0.3)
    assert info.method == "lerp"
    torch.testing.assert_close(result, 0.7 * a + 0.3 * b)
    torch.testing.assert_close(result.double(), reference_slerp(a, b, 0.3), atol=1e-5, rtol=1e-5)


def test_identical_tensors_are_a_fixed_point():
    a = torch.randn(5, 9, generator=torch.Generator().manual_seed(6))
    result, info = slerp_with_info(a, a.clone(), 0.4)
    assert info.method == "lerp" and info.theta == pytest.approx(0.0, abs=1e-3)
    torch.testing.assert_close(result, a)


def test_opposite_tensors_lerp_through_zero():
    """Antipodal parents have no unique arc: LERP, as mergekit does, so the midpoint is zero."""
    a = torch.randn(50, generator=torch.Generator().manual_seed(7))
    result, info = slerp_with_info(a, -a, 0.5)
    assert info.method == "lerp" and info.theta == pytest.approx(math.pi, abs=1e-3)
    torch.testing.assert_close(result, torch.zeros_like(a))
    torch.testing.assert_close(slerp(a, -a, 0.25), 0.5 * a)
    torch.testing.assert_close(slerp(a, -a, 0.25).double(), reference_slerp(a, -a, 0.25))


def test_zero_tensor_falls_back_to_lerp():
    a = torch.zeros(4)
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(slerp(a, b, 0.5), b / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_endpoints_are_bit_exact_and_dtype_is_kept(dtype):
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(31, 7, generator=gen).to(dtype), torch.randn(31, 7, generator=gen).to(dtype)
    at_zero, at_one, middle = slerp(a, b, 0.0), slerp(a, b, 1.0), slerp(a, b, 0.5)
    assert torch.equal(at_zero, a) and torch.equal(at_one, b)
    assert at_zero.data_ptr() != a.data_ptr()  # a copy, never the input itself
    assert middle.dtype == dtype and middle.device == a.device
    expected = reference_slerp(a.float(), b.float(), 0.5).to(dtype)
    torch.testing.assert_close(middle, expected, atol=1e-2, rtol=1e-2)


def test_chunked_maths_equals_single_chunk(monkeypatch):
    gen = torch.Generator().manual_seed(9)
    a, b = torch.randn(50, 30, generator=gen), torch.randn(50, 30, generator=gen)
    whole = slerp(a, b, 0.6)
    monkeypatch.setattr(importlib.import_module("sdd_ray.merge.slerp"), "CHUNK", 7)
    torch.testing.assert_close(slerp(a, b, 0.6), whole, atol=1e-6, rtol=1e-6)
    half = slerp(a.bfloat16(), b.bfloat16(), 0.6)
    assert half.dtype == torch.bfloat16


def test_slerp_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        slerp(torch.ones(3), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        slerp(torch.ones(3), torch.ones(3), 1.5)


# ---------------------------------------------------------------- t schedules


def test_layer_index_is_parsed_from_the_name():
    assert layer_index("model.layers.11.self_attn.q_proj.weight") == 11
    assert layer_index("model.language_model.layers.0.mlp.up_proj.weight") == 0
    assert layer_index("model.embed_tokens.weight") is None and layer_index("lm_head.weight") is None


def test_gradient_is_interpolated_across_layers():
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(5)]
    assert [resolve_t([0.0, 1.0, 0.0], name, 5) for name in names] == pytest.approx([0, 0.5, 1, 0.5, 0])
    four = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(4)]
    assert [resolve_t([0.2, 0.8], name, 4) for name in four] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    # outside the layers: embeddings take the first anchor, final norm and lm_head the last (mergekit)
    assert resolve_t([0.2, 0.8], "model.embed_tokens.weight", 4) == pytest.approx(0.2)
    assert resolve_t([0.2, 0.8], "model.norm.weight", 4) == pytest.approx(0.8)
    assert resolve_t([0.2, 0.8], "lm_head.weight", 4) == pytest.approx(0.8)


def test_filters_pick_the_first_matching_entry():
    setting = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": [1.0, 0.0]}, {"value": 0.3}]
    assert resolve_t(setting, "model.layers.0.self_attn.q_proj.weight", 3) == 0.0
    assert resolve_t(setting, "model.layers.1.self_attn.o_proj.weight", 3) == pytest.approx(0.5)
    assert resolve_t(setting, "model.layers.0.mlp.down_proj.weight", 3) == 1.0
    assert resolve_t(setting, "model.layers.2.input_layernorm.weight", 3) == pytest.approx(0.3)
    assert resolve_t(setting, "model.embed_tokens.weight", 3) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no entry matches tensor 'model.norm.weight'"):
        resolve_t(setting[:2], "model.norm.weight", 3)


def test_registry_raises_on_unknown_methods():
    assert get_merge_method("slerp") is slerp_with_info
    with pytest.raises(ValueError, match="unknown merge method 'ties'; available: slerp"):
        get_merge_method("ties")


# ---------------------------------------------------------------- configs


MERGEKIT_YAML = """
slices:
  - sources:
      - model: {a}
        layer_range: [0, 6]
      - model: {b}
        layer_range: [0, 6]
merge_method: slerp
base_model: {a}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 1]
    - filter: mlp
      value: [1, 0.5, 0]
    - value: 0.5
dtype: bfloat16
"""


def test_mergekit_yaml_is_read(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(MERGEKIT_YAML.format(a="runs/a", b="runs/b"))
    cfg = load_merge_config(path)
    assert [m.path for m in cfg.models] == ["runs/a", "runs/b"] and cfg.base_model == "runs/a"
    assert cfg.layer_range == [0, 6] and cfg.dtype == "bfloat16" and cfg.merge_method == "slerp"
    assert cfg.t[0].filter == "self_attn" and cfg.t[0].value == [0, 0.5, 1] and cfg.t[2].value == 0.5
    overridden = load_merge_config(path, {"models": ["x", "y"], "t": 0.25, "base_model": "y"})
    assert [m.path for m in overridden.models] == ["x", "y"] and overridden.t == 0.25 and overridden.base_index == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": ["a", "b"], "merge_method": "ties"}, "unknown merge method 'ties'"),
        ({"models": ["a"]}, "models: List should have at least 2 items"),
        ({"models": ["a", "b"], "t": 1.5}, "t must be in [0, 1]"),
        ({"models": ["a", "b"], "base_model": "c"}, "base_model 'c' must be one of the models"),
        ({"models": [{"model": "a", "parameters": {"weight": 1}}, "b"]}, "per-model parameters not supported"),
        ({"models": ["a", "b"], "parameters": {"density": 0.5}}, "only `t` is used by slerp"),
    ],
)
def test_bad_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError) as error:
        validate_config(MergeConfig, data, source="merge.yaml")
    assert message in str(error.value) and str(error.value).startswith("merge.yaml: ")


# ---------------------------------------------------------------- checkpoint merges


def variant(source: Path, target: Path, transform=lambda tensors: tensors) -> Path:
    """A copy of checkpoint `source` whose tensors went through `transform` (no model is built)."""
    target.mkdir()
    for file in source.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy2(file, target / file.name)
    save_file(transform(load_file(source / "model.safetensors")), str(target / "model.safetensors"), {"format": "pt"})
    return target


def reseeded(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {name: torch.randn(t.shape, generator=gen) * t.std().nan_to_num(0.02) + t.mean() for name, t in tensors.items()}


@pytest.fixture(scope="module")
def parents(tiny_llama, tmp_path_factory) -> tuple[Path, Path]:
    """The session's tiny Llama and a copy with other random weights (a stand-in for a second fine-tune)."""
    return tiny_llama, variant(tiny_llama, tmp_path_factory.mktemp("parents") / "b", reseeded)


def weights(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def merge_cfg(a, b, **fields) -> MergeConfig:
    return validate_config(MergeConfig, {"models": [str(a), str(b)], **fields})


def test_merge_equals_tensorwise_slerp_and_reloads_with_transformers(parents, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a, b = parents
    summary = run_merge(merge_cfg(a, b, t=0.5), tmp_path / "merged")
    out = tmp_path / "merged"
    merged, wa, wb = weights(out), weights(a), weights(b)
    assert merged.keys() == wa.keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, slerp(wa[name], wb[name], 0.5), atol=0, rtol=0)
    model = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        if name in merged:
            torch.testing.assert_close(tensor, merged[name])
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == model.config.vocab_size
    record = json.loads((out / "merge.json").read_text())
    assert record == summary
    assert record["method"] == "slerp" and record["t"] == 0.5 and record["num_layers"] == 6
    assert record["num_tensors"] == len(merged) and sum(record["methods"].values()) == len(merged)
    assert record["num_parameters"] == sum(t.numel() for t in merged.values())
    assert record["tensors"]["model.layers.0.self_attn.q_proj.weight"]["method"] == "slerp"
    assert (out / "config.json").read_text() == (a / "config.json").read_text()
    assert not list(tmp_path.glob(".merged.*"))  # no staging directory left behind


def test_endpoints_and_layer_schedule_on_checkpoints(parents, tmp_path):
    a, b = parents
    wa, wb = weights(a), weights(b)
    run_merge(merge_cfg(a, b, t=0.0), tmp_path / "t0")
    assert all(torch.equal(tensor, wa[name]) for name, tensor in weights(tmp_path / "t0").items())
    run_merge(merge_cfg(a, b, t=1.0, base_model=str(b)), tmp_path / "base_b")  # b is t = 0: all from a
    assert all(torch.equal(tensor, wa[name]) for name, tensor in weights(tmp_path / "base_b").items())

    schedule = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.0}]
    summary = run_merge(merge_cfg(a, b, t=schedule), tmp_path / "scheduled")
    merged = weights(tmp_path / "scheduled")
    q = "model.layers.{}.self_attn.q_proj.weight"
    assert torch.equal(merged[q.format(0)], wa[q.format(0)]) and torch.equal(merged[q.format(5)], wb[q.format(5)])
    torch.testing.assert_close(merged[q.format(2)], slerp(wa[q.format(2)], wb[q.format(2)], 0.4), atol=0, rtol=0)
    assert torch.equal(merged["model.layers.3.mlp.up_proj.weight"], wa["model.layers.3.mlp.up_proj.weight"])
    assert [summary["tensors"][q.format(i)]["t"] for i in range(6)] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])


def test_sharded_input_sharded_output_and_dtype(parents, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = parents
    sharded = tmp_path / "b_sharded"
    AutoModelForCausalLM.from_pretrained(b).save_pretrained(sharded, max_shard_size="300KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (sharded / name).write_bytes((b / name).read_bytes())
    out = tmp_path / "merged"
    run_merge(merge_cfg(a, sharded, t=0.5, dtype="bfloat16", max_shard_mb=0.25), out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    merged, wa, wb = weights(out), weights(a), weights(b)
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, slerp(wa[name], wb[name], 0.5).to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16


def test_mismatched_checkpoints_get_a_clear_error(parents, tmp_path):
    a, _ = parents
    shallow = variant(a, tmp_path / "pruned", lambda w: {k: v for k, v in w.items() if layer_index(k) not in (4, 5)})
    config = json.loads((shallow / "config.json").read_text())
    (shallow / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))  # a consistent pruned model
    with pytest.raises(MergeMismatchError) as error:
        run_merge(merge_cfg(a, shallow), tmp_path / "out")
    message = str(error.value)
    assert "decoder layers: 6 in A vs 4 in B" in message and "layers only in A: 4, 5" in message
    assert "pruned at the same block" in message
    up = "model.layers.2.mlp.up_proj.weight"
    narrow = variant(a, tmp_path / "narrow", lambda w: {**w, up: w[up][:100]})
    with pytest.raises(MergeMismatchError, match=rf"{up}: shape \[128, 64\] in A vs \[100, 64\] in B"):
        run_merge(merge_cfg(a, narrow), tmp_path / "out")
    other_block = variant(a, tmp_path / "other_block")
    (other_block / "pruning.json").write_text(json.dumps({"removed_layers": [3, 4]}))
    (variant(a, tmp_path / "a_pruned") / "pruning.json").write_text(json.dumps({"removed_layers": [7, 8]}))
    with pytest.raises(MergeMismatchError, match=r"A removed layers \[7, 8\], B removed layers \[3, 4\]"):
        run_merge(merge_cfg(tmp_path / "a_pruned", other_block), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_lora_adapter_is_folded_before_merging(parents, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    a, b = parents
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(a), lora)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(a)
    folded = {k: v.clone() for k, v in peft_model.merge_and_unload().state_dict().items()}
    summary = run_merge(merge_cfg(adapter, b, t=0.0), tmp_path / "merged")
    assert summary["models"][0]["lora_adapter"] and summary["models"][0]["adapter_base"] == str(a)
    merged, wa = weights(tmp_path / "merged"), weights(a)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], wa[q])  # the adapter changed q_proj
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, folded[name], atol=1e-6, rtol=1e-6)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from sdd_ray.config import validate_config
from sdd_ray.merge.config import MergeConfig
from sdd_ray.merge.run import run_merge

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def merge(first, second, out):
    cfg = {"models": [str(root / first), str(root / second)], "t": 0.5, "max_shard_mb": 4}
    run_merge(validate_config(MergeConfig, cfg), root / out)

root = Path(sys.argv[1])
merge("tiny0", "tiny1", "warmup")  # loads the code paths (shared-library pages count as resident too)
Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
before = rss("VmRSS")
merge("m0", "m1", "merged")
print(json.dumps({"before": before, "peak": rss("VmHWM")}))
"""


def write_random_model(path: Path, seed: int, hidden: int = 512) -> int:
    """A float32 checkpoint of Llama-named random tensors (hidden 512: 44 MB); returns its size."""
    path.mkdir()
    gen = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(2 * hidden, hidden, generator=gen)}
    for layer in range(4):
        for proj in ("q", "k", "v", "o"):
            tensors[f"model.layers.{layer}.self_attn.{proj}_proj.weight"] = torch.randn(hidden, hidden, generator=gen)
        for proj in ("gate", "up", "down"):
            tensors[f"model.layers.{layer}.mlp.{proj}_proj.weight"] = torch.randn(2 * hidden, hidden, generator=gen)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text("{}")
    return (path / "model.safetensors").stat().st_size


def test_peak_memory_is_far_below_two_models(tmp_path):
    """Two 44 MB models merge with a few MB of extra resident memory (one tensor each + a 4 MB shard)."""
    two_models = write_random_model(tmp_path / "m0", 0) + write_random_model(tmp_path / "m1", 1)
    write_random_model(tmp_path / "tiny0", 0, hidden=8), write_random_model(tmp_path / "tiny1", 1, hidden=8)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PEAK_SCRIPT), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    extra = measured["peak"] - measured["before"]
    assert two_models > 80e6
    assert extra < 0.25 * two_models, measured  # whole parents in memory would be >= 100%
    merged = load_file(tmp_path / "merged" / "model-00001-of-00011.safetensors")
    assert all(t.dtype == torch.float32 for t in merged.values())


def test_cli_takes_models_as_a_pair_a_comma_list_or_repeated(parents, tmp_path):
    from typer.testing import CliRunner

    from sdd_ray.cli import app

    a, b = parents
    runner = CliRunner()
    for number, models in enumerate([[str(a), str(b)], [f"{a},{b}"], [str(a), "--models", str(b)]]):
        out = tmp_path / f"m{number}"
        result = runner.invoke(app, ["merge", "--models", *models, "--t", "0.25", "--out", str(out)])
        assert result.exit_code == 0, result.output
        record = json.loads((out / "merge.json").read_text())
        assert [m["path"] for m in record["models"]] == [str(a), str(b)] and record["t"] == 0.25
    config = tmp_path / "merge.yaml"
    config.write_text(MERGEKIT_YAML.format(a=a, b=b))
    result = runner.invoke(app, ["merge", "--config", str(config), "--out", str(tmp_path / "from_yaml")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "from_yaml" / "merge.json").read_text())
    assert record["dtype"] == "bfloat16" and record["tensors"]["model.layers.5.self_attn.q_proj.weight"]["t"] == 1.0
    assert record["tensors"]["model.layers.0.mlp.up_proj.weight"]["t"] == 1.0
    result = runner.invoke(app, ["merge", "--models", str(a), "--out", str(tmp_path / "one")])
    assert isinstance(result.exception, ConfigError) and "at least 2 items" in str(result.exception)


def test_parents_of_different_dtypes_merge_in_float32_into_the_base_dtype(parents, tmp_path):
    a, b = parents
    b_half = variant(b, tmp_path / "b_bf16", lambda w: {k: v.bfloat16() for k, v in w.items()})
    run_merge(merge_cfg(a, b_half, t=0.3), tmp_path / "merged")
    merged, wa, wb = weights(tmp_path / "merged"), weights(a), weights(b_half)
    for name, tensor in merged.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, slerp(wa[name], wb[name].float(), 0.3))
