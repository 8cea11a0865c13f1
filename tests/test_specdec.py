"""Speculative decoding: the acceptance rules, the engine's exactness, and the `sdd-ray specdec` command."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_llama

from sdd_ray.data import DataSpec
from sdd_ray.specdec.acceptance import greedy_verify, logits_to_probs, rejection_verify, residual_distribution
from sdd_ray.specdec.engine import DecodeMetrics, Sampling, SpeculativeDecoder, target_only_generate

PROMPTS = [
    "### Instruction:\nWhat is 12 plus 7?\n\n### Response:\n",
    "### Instruction:\nName the color of the sun.\n\n### Response:\n",
    "### Instruction:\nTom has 5 apples and buys 3 more. How many apples does Tom have?\n\n### Response:\n",
]


# ---- acceptance rules -------------------------------------------------------------------------


def test_greedy_verify_accepts_the_matching_prefix_then_corrects():
    vocab = 5
    target_choice = [2, 4, 1, 3]  # argmax at positions 0..3 (k = 3, plus the bonus position)
    logits = torch.full((4, vocab), -1.0)
    logits[torch.arange(4), torch.tensor(target_choice)] = 1.0
    assert greedy_verify(torch.tensor([2, 4, 1]), logits) == (3, 3)  # all accepted + bonus
    assert greedy_verify(torch.tensor([2, 0, 1]), logits) == (1, 4)  # rejected at 1: target's token
    assert greedy_verify(torch.tensor([0, 4, 1]), logits) == (0, 2)  # later matches do not count


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    probs = logits_to_probs(torch.tensor([0.5, 0.3, 0.2]).log(), top_p=0.7)
    assert torch.allclose(probs, torch.tensor([0.625, 0.375, 0.0]))
    assert torch.allclose(logits_to_probs(torch.tensor([0.5, 0.3, 0.2]).log()), torch.tensor([0.5, 0.3, 0.2]))


def test_residual_is_normalised_positive_part():
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    assert torch.allclose(residual_distribution(p, q), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(residual_distribution(p, p), p)


def _emitted_counts(p: torch.Tensor, q: torch.Tensor, k: int, trials: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the first emitted token, and of the second one when the first was accepted."""
    generator = torch.Generator().manual_seed(seed)
    vocab = p.shape[-1]
    first, second = torch.zeros(vocab), torch.zeros(vocab)
    for _ in range(trials):
        drafted = torch.multinomial(q, 1, replacement=True, generator=generator).squeeze(-1)  # (k,)
        accepted, next_token = rejection_verify(drafted, q, p, generator)
        emitted = drafted[:accepted].tolist() + [next_token]
        first[emitted[0]] += 1
        if len(emitted) > 1:
            second[emitted[1]] += 1
    return first, second


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


def test_rejection_sampling_reproduces_the_target_distribution():
    """Leviathan et al.'s guarantee on a 5-token vocabulary: emitted tokens follow p, not q.

    Critical value: chi-square with 4 degrees of freedom at the 0.999 level is 18.47; the seed is
    fixed, so the test is deterministic. The draft is far from p, so a rule that ignored the
    residual (or accepted drafts outright) fails by orders of magnitude (checked below).
    """
    k = 3
    p_row = torch.tensor([0.40, 0.25, 0.15, 0.15, 0.05])
    q_row = torch.tensor([0.05, 0.15, 0.50, 0.10, 0.20])
    p, q = p_row.expand(k + 1, -1), q_row.expand(k, -1)
    first, second = _emitted_counts(p, q, k, trials=8000, seed=0)
    assert _chi_square(first, p_row) < 18.47
    assert second.sum() > 1000
    assert _chi_square(second, p_row) < 18.47
    assert (first / first.sum() - p_row).abs().sum() / 2 < 0.02  # total variation distance
    assert _chi_square(first, q_row) > 1000  # the test can tell p from q


def test_identical_draft_is_always_accepted_and_bonus_follows_p():
    k = 2
    p_row = torch.tensor([0.6, 0.3, 0.1])
    p = p_row.expand(k + 1, -1)
    first, _ = _emitted_counts(p, p[:k], k, trials=3000, seed=1)
    generator = torch.Generator().manual_seed(2)
    for _ in range(200):
        drafted = torch.multinomial(p[:k], 1, generator=generator).squeeze(-1)
        assert rejection_verify(drafted, p[:k], p, generator)[0] == k
    assert _chi_square(first, p_row) < 13.82  # 2 degrees of freedom, 0.999


# ---- engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_paths(tmp_path_factory):
    """(target, draft) checkpoints: random Llamas with different seeds and depths, same vocabulary."""
    root = tmp_path_factory.mktemp("specdec_pair")
    return make_tiny_llama(root / "target", num_layers=4, seed=0), make_tiny_llama(root / "draft", num_layers=2, seed=1)


@pytest.fixture(scope="module")
def pair(pair_paths):
    """(target, draft, tokenizer), loaded."""
    from sdd_ray.models import load_model, load_tokenizer

    target, draft = pair_paths
    return load_model(target), load_model(draft), load_tokenizer(target)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_greedy_speculative_output_equals_target_only_output(pair, k):
    target, draft, tokenizer = pair
    decoder = SpeculativeDecoder(target, draft, k, eos_token_id=tokenizer.eos_token_id)
    total = None
    for prompt in PROMPTS[:2]:
        ids = tokenizer(prompt).input_ids
        reference, _ = target_only_generate(target, ids, 16, eos_token_id=tokenizer.eos_token_id)
        tokens, metrics = decoder.generate(ids, 16)
        assert tokens == reference
        total = metrics if total is None else total.merge(metrics)
    assert total.requests == 2
    assert total.draft_tokens >= total.accepted_tokens
    assert total.new_tokens == total.target_forwards + total.accepted_tokens  # each pass: accepted + 1
    assert len(total.acceptance_rate_by_position) == k


def test_draft_equal_to_target_accepts_every_token(pair):
    target, _, tokenizer = pair
    k, steps = 4, 3
    decoder = SpeculativeDecoder(target, target, k, eos_token_id=[])  # no EOS: exactly `steps` full steps
    tokens, metrics = decoder.generate(tokenizer(PROMPTS[0]).input_ids, max_new_tokens=steps * (k + 1))
    assert len(tokens) == steps * (k + 1)
    assert metrics.target_forwards == metrics.drafts == steps
    assert metrics.accepted_tokens == metrics.draft_tokens == steps * k
    assert metrics.mean_accepted_length == k + 1
    assert metrics.acceptance_rate_by_position == [1.0] * k


def test_stops_at_eos_and_budget(pair):
    target, draft, tokenizer = pair
    ids = tokenizer(PROMPTS[1]).input_ids
    reference, _ = target_only_generate(target, ids, 12, eos_token_id=[])
    stop_token = reference[5]  # pretend the 6th token ends the sequence
    expected = reference[: reference.index(stop_token) + 1]
    tokens, _ = SpeculativeDecoder(target, draft, 3, eos_token_id=stop_token).generate(ids, 12)
    assert tokens == expected
    tokens, metrics = SpeculativeDecoder(target, draft, 4, eos_token_id=[]).generate(ids, 7)
    assert tokens == reference[:7] and metrics.new_tokens == 7


def test_sampling_with_identical_draft_is_reproducible_and_fully_accepted(pair):
    target, _, tokenizer = pair
    ids = tokenizer(PROMPTS[2]).input_ids
    decoder = SpeculativeDecoder(target, target, 3, eos_token_id=[])
    sampling = Sampling(temperature=0.8, top_p=0.9, seed=7)
    first, metrics = decoder.generate(ids, 16, sampling)
    again, _ = decoder.generate(ids, 16, sampling)
    assert first == again and len(first) == 16
    assert metrics.accepted_tokens == metrics.draft_tokens  # p == q: min(1, p/q) = 1
    tokens, metrics = decoder.generate(ids, 5, sampling)  # 4 tokens, then a step with no room to draft
    assert len(tokens) == 5 and metrics.target_forwards == 2 and metrics.drafts == 1


def test_metrics_merge_and_mean_accepted_length():
    a, b = DecodeMetrics(), DecodeMetrics()
    a.record_draft(3, 2)
    b.record_draft(3, 0)
    b.record_draft(2, 2)
    merged = a.merge(b)
    assert (merged.drafts, merged.draft_tokens, merged.accepted_tokens) == (3, 8, 4)
    assert merged.mean_accepted_length == pytest.approx(1 + 4 / 3)
    assert merged.acceptance_rate_by_position == [2 / 3, 2 / 3, 0.0]


# ---- command line ---------------------------------------------------------------------------


def test_specdec_command_writes_the_table(tmp_path, pair_paths):
    from typer.testing import CliRunner

    from sdd_ray.cli import app

    target, draft = pair_paths
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    out = tmp_path / "specdec.json"
    result = CliRunner().invoke(app, [
        "specdec", "--target", str(target), "--draft", f"rand={draft}", "--draft", f"self={target}",
        "--data", str(data), "--k", "3", "--max-new-tokens", "10", "--limit", "2", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["prompts"] == 2 and report["k"] == 3
    assert [row["draft"] for row in report["drafts"]] == ["rand", "self"]
    for row in report["drafts"]:
        assert row["outputs_identical"] is True
        assert row["speedup"] == pytest.approx(row["tokens_per_s_speculative"] / row["tokens_per_s_target"])
    self_row = report["drafts"][1]
    assert self_row["acceptance_rate"] == 1.0
    assert report["target_only"]["mean_accepted_length"] == 1.0


def test_toy_prompts_and_bad_data_source():
    from sdd_ray.config import ConfigError, validate_config
    from sdd_ray.specdec.config import SpecDecConfig
    from sdd_ray.specdec.run import load_prompts

    prompts = load_prompts(DataSpec(source="toy:arith,facts", split="test", limit=5))
    assert len(prompts) == 5 and all(isinstance(instruction, str) and instruction for instruction, _ in prompts)
    with pytest.raises(ConfigError, match="data.source: .*unknown toy source"):
        validate_config(SpecDecConfig, {"target": {"path": "t"}, "drafts": {"d": {"path": "d"}}, "data": "toy:nope"})
    with pytest.raises(ConfigError, match="k: "):
        validate_config(SpecDecConfig, {"target": {"path": "t"}, "drafts": {"d": {"path": "d"}}, "data": "toy:all", "k": 0})


def test_pruned_toy_teacher_is_an_exact_draft():
    """A realistic pair: the toy teacher and itself with 4 of 12 layers removed (no fine-tuning)."""
    surgery = pytest.importorskip("sdd_ray.prune.surgery")
    from sdd_ray.models import TOY_TEACHER, load_model, load_tokenizer
    from sdd_ray.prompts import instruction_prompt

    if not (TOY_TEACHER / "config.json").is_file():
        pytest.skip("the toy teacher is not committed yet")
    target, tokenizer = load_model(TOY_TEACHER), load_tokenizer(TOY_TEACHER)
    draft = surgery.remove_layers(load_model(TOY_TEACHER), surgery.contiguous_block(6, 4))
    decoder = SpeculativeDecoder(target, draft, 4, eos_token_id=tokenizer.eos_token_id)
    ids = tokenizer(instruction_prompt("What is 12 plus 7?")).input_ids
    reference, _ = target_only_generate(target, ids, 24, eos_token_id=tokenizer.eos_token_id)
    tokens, metrics = decoder.generate(ids, 24)
    assert tokens == reference
    assert metrics.accepted_tokens > 0
