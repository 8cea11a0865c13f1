"""Log-likelihood scoring: the sliced, logsumexp form equals a full log_softmax over every position."""

from __future__ import annotations

import pytest
import torch

from sdd_ray.generation import continuation_logprobs, target_logprobs


def reference_logprobs(model, tokenizer, contexts, continuations) -> list[float]:
    """The straightforward form: log_softmax over the whole vocabulary at every position, one pair at a time."""
    scores = []
    for context, continuation in zip(contexts, continuations):
        ctx = tokenizer(context).input_ids
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ctx + cont])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (seq, vocab)
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        scores.append(logprobs[positions, torch.tensor(cont, dtype=torch.long)].sum().item())
    return scores


class WithoutLogitsToKeep(torch.nn.Module):
    """A model whose forward has no `logits_to_keep` (as some remote-code models): every position is scored."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_target_logprobs_equals_log_softmax_gather():
    logits = torch.randn(5, 300) * 4
    targets = torch.randint(0, 300, (5,))
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(5), targets]
    assert torch.allclose(target_logprobs(logits, targets), expected, atol=1e-5)


@pytest.mark.parametrize("wrap", [False, True], ids=["logits_to_keep", "all_positions"])
def test_continuation_logprobs_equal_a_full_log_softmax(tiny_llama, wrap):
    from sdd_ray.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_llama))
    contexts = ["Tom has 3 coins.", "Add 2 and 3.", "The cat", "Say dog and cat and dog again please.", "Hi"]
    continuations = [" He spends 1.", " 5", " sat on the mat and slept", "", " there"]
    expected = reference_logprobs(model, tokenizer, contexts, continuations)
    scorer = WithoutLogitsToKeep(model) if wrap else model
    got = continuation_logprobs(scorer, tokenizer, contexts, continuations, batch_size=3)
    assert got == pytest.approx(expected, abs=1e-4)
    assert expected[3] == 0.0 and min(expected) < -5  # an empty continuation, and real scores
