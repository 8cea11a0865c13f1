"""Start-up greedy check: the served pair's greedy output must be the target's own greedy output.

Greedy speculative decoding is exact by construction: every token it emits is the target's argmax.
An engine that gets it wrong (vLLM's torch.compile mode on its CPU build did, see
`sdd_ray.vllm_engine`) still reports plausible acceptance figures, so nothing downstream would
notice. The reference is computed where the target fits:

- engines on the CPU build: transformers decodes a few chat prompts target-only in the driver
  (float32, KV cache) and the app's greedy text over HTTP must equal it exactly;
- engines on GPUs: the driver (a CPU head) cannot hold an 8B target, and the GPU is vLLM's. The
  engine itself is the reference: its greedy (speculative) tokens are scored by a target-only prefill
  of prompt + output in the same engine (`prompt_logprobs`: no draft involved), and each token must be
  the target's argmax there, or within `TIE_LOGPROB` of it. bf16 on GPUs breaks near-ties differently
  in a decode step and in a prefill (another kernel, another reduction order), so exact equality
  would fail healthy engines (bf16 speculative output matched target-only on 4-5 of 12 prompts in a
  run of this project); a wrong engine emits tokens far below the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdd_ray.config import UserError
from sdd_ray.models import load_model, load_tokenizer
from sdd_ray.prompts import encode_prompt, render_prompt, stop_token_ids
from sdd_ray.runtime import cluster_gpus
from sdd_ray.vllm_engine import cluster_device

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


TIE_LOGPROB = 0.25
"""Largest gap, in nats, between the target's top log-probability and a served token's that counts as a
bf16 tie: bf16 keeps 8 bits of mantissa, so logits of 16-32 are rounded in steps of 0.125."""


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
    from sdd_ray.specdec.engine import target_only_generate

    tokenizer = load_tokenizer(target)
    model = load_model(target)
    stops = stop_token_ids(tokenizer, model.generation_config)
    texts = []
    for prompt in prompts:
        tokens, _ = target_only_generate(model, encode_prompt(tokenizer, prompt), max_tokens, eos_token_id=stops)
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return texts


def check_prompts(target, count: int) -> list[str]:
    """The first `count` questions, rendered as the target's chat (or instruction) prompts."""
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


def off_argmax(scores: list[tuple[int, float, float]], tolerance: float = TIE_LOGPROB) -> list[int]:
    """Positions of served tokens that are not the target's argmax up to a tie: `scores` holds, per served
    token, (its rank, its log-probability, the top log-probability) from the target-only prefill."""
    return [i for i, (rank, logprob, top) in enumerate(scores) if rank != 1 and top - logprob > tolerance]


def engine_checks(cfg, prompts: list[str]) -> list[Check]:
    """The GPU greedy check: greedy tokens of the served engine, each scored by the same engine's target-only prefill."""
    from ray import serve
    from ray.serve.llm.openai_api_models import CompletionRequest

    tokenizer = load_tokenizer(cfg.target)
    app_name, deployment = engine_deployment(cfg.served_name)
    handle = serve.get_deployment_handle(deployment, app_name=app_name).options(stream=True)

    def complete(**fields):
        response = next(iter(handle.completions.remote(CompletionRequest(model=cfg.served_name, **fields))))
        response = response[0] if isinstance(response, list) else response
        if not hasattr(response, "choices"):
            raise GreedyMismatchError(f"engine {cfg.engine}: the greedy check's request failed: {response}")
        return response.choices[0]

    checks = []
    for prompt in prompts:
        ids = encode_prompt(tokenizer, prompt)
        served = complete(prompt=ids, max_tokens=cfg.verify_max_tokens, temperature=0.0, return_token_ids=True).token_ids
        scored = complete(prompt=ids + list(served), max_tokens=1, temperature=0.0, prompt_logprobs=1).prompt_logprobs
        scores = []
        for token, position in zip(served, scored[len(ids):]):
            top = max(entry.logprob for entry in position.values())
            scores.append((position[token].rank, position[token].logprob, top))
        wrong = off_argmax(scores)
        text = tokenizer.decode(served, skip_special_tokens=True)
        expected = text if not wrong else f"the target's argmax at token {wrong[0]} (gap {scores[wrong[0]][2] - scores[wrong[0]][1]:.2f} nats)"
        checks.append(Check(prompt, expected, text))
    return checks


def engine_deployment(model_id: str) -> tuple[str, str]:
    """(application, deployment) of the vLLM engine serving `model_id` (ray.serve.llm's `LLMServer` class)."""
    from ray import serve

    suffix = ":" + model_id.replace("/", "--").replace(".", "_")  # ray.serve.llm's deployment naming
    found = [(app, name) for app, status in serve.status().applications.items()
             for name in status.deployments if "LLMServer:" in name and name.endswith(suffix)]
    if len(found) != 1:
        raise GreedyMismatchError(f"expected one LLMServer deployment serving {model_id!r}, found {found}")
    return found[0]


def verify_greedy_identity(cfg, base_url: str, reference: str = "auto") -> list[Check]:
    """Compare the app at `base_url` with target-only greedy decoding; raise `GreedyMismatchError` on any difference.

    `reference`: `transformers` (in this process, exact text), `engine` (the GPU greedy check above), or `auto`:
    `engine` when the engines run on GPUs, as decided from the cluster (`cluster_device`).
    """
    prompts = check_prompts(cfg.target, cfg.verify_prompts)
    if reference == "auto":
        reference = "engine" if cluster_device(cfg.device, cluster_gpus(), cfg.accelerator_type) == "gpu" else "transformers"
    if reference == "engine":
        checks = engine_checks(cfg, prompts)
    else:
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
