"""Shared fixtures (tiny random models, the toy teacher, a local Ray, a two-node cluster, vLLM) and the tiers.

A bare `pytest` runs the fast tier: tests that need neither Ray nor a vLLM engine. `pytest --runslow`
(what `make test` and CI run) runs everything. A test's tier follows from the fixtures it asks for
(`MARKS_BY_FIXTURE`), so a new test is placed by what it uses, not by a marker written by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sdd_ray.models import TOY_TEACHER  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tiny_llama(
    out: Path, num_layers: int = 6, seed: int = 0, hidden: int = 64, tokenizer=None, max_positions: int = 256
) -> Path:
    """A random Llama with `tokenizer` (default: the toy tokenizer), saved as an HF checkpoint in `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2,
        max_position_embeddings=max_positions, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def smollm2_tokenizer(out: Path):
    """SmolLM2's real tokenizer (byte-level BPE, ChatML template), read from the packaged GGUF into `out`."""
    from transformers import AutoTokenizer

    from sdd_ray.convert import ConversionError, packaged_gguf

    try:
        gguf = packaged_gguf("smollm2-135m")
    except ConversionError as error:
        pytest.skip(str(error))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    return tokenizer


def make_gqa_llama(out: Path, num_layers: int = 6, seed: int = 0) -> Path:
    """A random Llama with grouped-query attention (9 query / 3 key-value heads), SmolLM2's tokenizer,
    chat template and generation config: the shape of a real chat model at a few million parameters."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=72, intermediate_size=144, num_hidden_layers=num_layers,
        num_attention_heads=9, num_key_value_heads=3, head_dim=8, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def gqa_llama(tmp_path_factory) -> Path:
    """Path of a 6-layer random GQA Llama carrying SmolLM2's real tokenizer and chat template."""
    return make_gqa_llama(tmp_path_factory.mktemp("gqa_llama"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Path of a 6-layer random Llama (hidden 64) with the toy tokenizer."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def toy_teacher() -> Path:
    """Path of the committed toy teacher."""
    if not (TOY_TEACHER / "config.json").is_file():
        pytest.fail(f"the toy teacher is missing from {TOY_TEACHER}; rebuild it with `make teacher`")
    return TOY_TEACHER


@pytest.fixture(scope="session")
def gsm8k_test() -> Path:
    path = SHARED_DATA / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared data folder sits beside the repository)")
    return path


@pytest.fixture(scope="session")
def vllm():
    """vLLM, imported; the test is skipped where it is not installed (`make setup` installs it)."""
    return pytest.importorskip("vllm", reason="vLLM is not installed here (`make setup` installs it)")


@pytest.fixture(scope="session")
def vllm_engine(vllm):
    """vLLM, for a test that starts a real engine (minutes on CPU): asking for it marks the test `engine`."""
    return vllm


@pytest.fixture(scope="module")
def two_node_cluster():
    """`cluster/local_cluster.sh`: a head and a second node (1 CPU each) with their own ports and temp dir."""
    from sdd_ray.testing.cluster import LocalCluster

    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs); pipelines give actors fractional CPUs."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# --- tiers --------------------------------------------------------------------------------------

MARKS_BY_FIXTURE = {
    "ray_local": "slow",  # Ray's start alone takes tens of seconds on 2 cores
    "two_node_cluster": "slow",  # two Ray nodes and jobs submitted over the Jobs API: minutes
    "vllm": "needs_vllm",  # skipped where vLLM is not installed
    "vllm_engine": "engine",  # a real vLLM engine: minutes on CPU
}
"""The marker a test gets from each fixture it uses, directly or through another fixture."""
BEHIND_RUNSLOW = ("slow", "engine")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the slow tests (Ray, clusters, real models) and those that start a vLLM engine; "
                          "`make test` and CI pass it")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in MARKS_BY_FIXTURE.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
    if config.getoption("--runslow"):
        return
    fast = [item for item in items if not any(item.get_closest_marker(m) for m in BEHIND_RUNSLOW)]
    if len(fast) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in fast])
        items[:] = fast


def pytest_report_header(config):
    if not config.getoption("--runslow"):
        return "fast tier: tests marked slow or engine are deselected; `pytest --runslow` (or `make test`) runs them"
