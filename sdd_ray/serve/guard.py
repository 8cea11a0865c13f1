"""Start-up correctness guard: the served pair's greedy text must equal the target's own greedy text.

Greedy speculative decoding is exact by construction: every token it emits is the target's argmax.
An engine that gets it wrong (vLLM's torch.compile mode on its CPU build did, see
`sdd_ray.vllm_engine`) still reports plausible acceptance figures, so nothing downstream would
notice. The guard decodes a few chat prompts target-only with transformers (float32, KV cache) and
asks the running app for the same prompts at temperature 0 over HTTP; any difference fails start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdd_ray.config import UserError

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "How do you say 'thank you' in Japanese? Write it in Japanese characters.",
    "Write a haiku about the sea.",
    "What is 12 plus 7?",
]

FIX = (
    "keep vLLM's CPU defaults from sdd_ray.vllm_engine (enforce_eager: true, no torch.compile; "
    "do not override it in engine_kwargs), or on a GPU set engine_kwargs {\"enforce_eager\": true} to rule "
    "out compilation; verify_prompts: 0 skips this check"
)


class GreedyMismatchError(UserError):
    """The served pair's greedy output differs from the target's own: the engine is misconfigured."""


@dataclass
class Check:
    prompt: str
    expected: str
    served: str

    @property
    def identical(self) -> bool:
        return self.expected == self.served


def reference_texts(target, prompts: list[str], max_tokens: int) -> list[str]:
    """Target-only greedy text of each rendered prompt (transformers, float32 on the CPU)."""
    from sdd_ray.models import load_model, load_tokenizer
    from sdd_ray.prompts import encode_prompt, stop_token_ids
    from sdd_ray.specdec.engine import target_only_generate

    tokenizer = load_tokenizer(target)
    model = load_model(target)
    stops = stop_token_ids(tokenizer, model.generation_config)
    texts = []
    for prompt in prompts:
        tokens, _ = target_only_generate(model, encode_prompt(tokenizer, prompt), max_tokens, eos_token_id=stops)
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return texts


def guard_prompts(target, count: int) -> list[str]:
    """The first `count` questions, rendered as the target's chat (or instruction) prompts."""
    from sdd_ray.models import load_tokenizer
    from sdd_ray.prompts import render_prompt

    tokenizer = load_tokenizer(target)
    return [render_prompt(tokenizer, q) for q in QUESTIONS[:count]]


def served_texts(base_url: str, model: str, prompts: list[str], max_tokens: int, api_key: str | None = None,
                 timeout_s: float = 300) -> list[str]:
    """Greedy completions of `prompts` from the running app."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    texts = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as client:
        for prompt in prompts:
            response = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                             "temperature": 0.0})
            response.raise_for_status()
            texts.append(response.json()["choices"][0]["text"])
    return texts


def verify_greedy_identity(cfg, base_url: str) -> list[Check]:
    """Compare the app at `base_url` with target-only greedy decoding; raise `GreedyMismatchError` on any difference."""
    prompts = guard_prompts(cfg.target, cfg.verify_prompts)
    expected = reference_texts(cfg.target, prompts, cfg.verify_max_tokens)
    served = served_texts(base_url, cfg.served_name, prompts, cfg.verify_max_tokens, cfg.api_key)
    checks = [Check(p, e, s) for p, e, s in zip(prompts, expected, served)]
    wrong = [c for c in checks if not c.identical]
    if wrong:
        first = wrong[0]
        raise GreedyMismatchError(
            f"engine {cfg.engine}: greedy output differs from the target's own on {len(wrong)} of {len(checks)} "
            f"prompts (first: expected {first.expected[:80]!r}, served {first.served[:80]!r}); {FIX}"
        )
    return checks
