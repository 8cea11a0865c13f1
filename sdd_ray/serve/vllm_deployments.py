"""The deployments of `--engine vllm` (imports ray.serve.llm, hence vLLM: loaded only when that engine is asked for).

- `SpeculativeLLMServer`: ray.serve.llm's `LLMServer` (a vLLM `AsyncLLM` with the draft inside) plus
  one method, `speculative_counters`, that reads vLLM's spec-decoding counters in the replica.
- `VLLMClient`: the shared ingress's (`serve.ingress`) side of that server, so both engines give the
  same 4xx answers, tokenize prompts the same way (completions reach vLLM as token ids) and report
  the same `/metrics`.

Only Ray's public, stable names are used (`PUBLIC_RAY_NAMES`; `tests/test_serve.py` fails loudly
when one moves): `LLMConfig`, `build_llm_deployment`, `LLMServer` and its `completions`/`chat`
methods, and the request models of `ray.serve.llm.openai_api_models`. `build_openai_app` is not used:
its ingress (`OpenAiIngress`) can only be extended through private methods
(`_process_llm_request`, `_default_serve_handles`, `to_model_metadata`), and the front here needs
its own routes (`/metrics`) and checks in front of every one.

Cancellation: when the client leaves, `VLLMClient` cancels its handle call; Serve cancels the
`LLMServer` method, and vLLM's `AsyncLLM.generate` aborts the request on that cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray.serve.llm import LLMConfig, LLMServer, build_llm_deployment
from ray.serve.llm.openai_api_models import ChatCompletionRequest as VLLMChatRequest
from ray.serve.llm.openai_api_models import CompletionRequest as VLLMCompletionRequest

from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.ingress import Job, bind_ingress, cancel_on_exit
from sdd_ray.serve.protocol import STREAM_DONE, RequestError
from sdd_ray.specdec.decoding import DecodeMetrics

PUBLIC_RAY_NAMES = {
    "ray.serve.llm": ("LLMConfig", "LLMServer", "build_llm_deployment"),
    "ray.serve.llm.openai_api_models": ("ChatCompletionRequest", "CompletionRequest"),
    "ray.serve.llm.deployment": ("LLMServer",),
}
"""Every Ray name this module relies on, by its public module (each marked `@PublicAPI(stability="stable")`)."""
LLM_SERVER_METHODS = ("completions", "chat")
"""The `LLMServer` methods called through the deployment handle."""

# vLLM's counters (vllm/v1/spec_decode/metrics.py, vllm/v1/metrics/loggers.py) -> DecodeMetrics fields.
VLLM_COUNTERS = {
    "vllm:spec_decode_num_drafts": "drafts",
    "vllm:spec_decode_num_draft_tokens": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "accepted_tokens",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "new_tokens",
    "vllm:request_success": "requests",
}
MEASURED_BY_VLLM = ("requests", "prompt_tokens", "new_tokens", "drafts", "draft_tokens", "accepted_tokens",
                    "mean_accepted_length", "acceptance_rate", "acceptance_rate_by_position")
"""The `/metrics` quantities vLLM records; the own engine's timings and forward counts have no vLLM counterpart."""


class SpeculativeLLMServer(LLMServer):
    """ray.serve.llm's engine deployment, plus a read of vLLM's speculative decoding counters."""

    async def speculative_counters(self) -> dict:
        """vLLM's counters since start, summed over label sets, as `DecodeMetrics` fields.

        vLLM counts drafts, not proposals per position: each draft proposes k tokens, so the
        per-position denominator is the number of drafts (as vLLM's own acceptance-rate log does).
        """
        from vllm.v1.metrics.reader import Counter, Vector, get_metrics_snapshot

        totals = {field: 0 for field in VLLM_COUNTERS.values()}
        accepted_by_position: list[int] = []
        for metric in get_metrics_snapshot():
            if isinstance(metric, Counter) and metric.name in VLLM_COUNTERS:
                totals[VLLM_COUNTERS[metric.name]] += int(metric.value)
            elif isinstance(metric, Vector) and metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
                accepted_by_position = [a + b for a, b in zip(metric.values, accepted_by_position or [0] * len(metric.values))]
        totals["accepted_by_position"] = accepted_by_position
        totals["proposed_by_position"] = [totals["drafts"]] * len(accepted_by_position)
        return totals


def _sse(item) -> str:
    """An `LLMServer` stream item (an SSE string, a response model, or a batch of them) as SSE text."""
    if isinstance(item, list):
        return "".join(_sse(part) for part in item)
    if isinstance(item, str):
        return item
    return f"data: {item.model_dump_json()}\n\n"


def _raise_if_error(item) -> None:
    """vLLM's `ErrorResponse` (first item of a refused request) as the client's `RequestError`."""
    first = item[0] if isinstance(item, list) and item else item
    error = getattr(first, "error", None)
    if error is not None and hasattr(error, "code"):
        raise RequestError(int(error.code), error.message)


class VLLMClient:
    """The shared ingress's side of `SpeculativeLLMServer`: the request as ray.serve.llm's models, the answer as is."""

    name = "vllm"

    def __init__(self, engine, cfg: ServeConfig):
        self.engine = engine
        self.streaming = engine.options(stream=True)

    def _call(self, job: Job):
        common = {"model": job.model, "max_tokens": job.max_tokens, "temperature": job.temperature,
                  "top_p": job.top_p, "seed": job.seed, "stream": job.stream}
        if job.stream:
            common["stream_options"] = {"include_usage": True}
        if job.chat:  # vLLM renders the same chat template; the ingress has already checked its length
            return self.streaming.chat.remote(VLLMChatRequest(messages=job.messages, **common))
        return self.streaming.completions.remote(VLLMCompletionRequest(prompt=job.prompt_ids, **common))

    async def complete(self, job: Job) -> dict:
        async with cancel_on_exit(self._call(job)) as items:
            response = await anext(items)
        _raise_if_error(response)
        return response.model_dump()

    async def stream(self, job: Job) -> AsyncIterator[str]:
        done = False
        async with cancel_on_exit(self._call(job)) as items:
            async for item in items:
                _raise_if_error(item)
                text = _sse(item)
                done = done or text.rstrip().endswith("data: [DONE]")
                yield text
        if not done:
            yield STREAM_DONE

    async def speculative(self) -> dict:
        """The own engine's counters, from vLLM's (one engine replica's, the one the call reaches)."""
        counters = await self.engine.speculative_counters.remote()
        speculative = DecodeMetrics.from_dict(counters).as_dict()
        return {key: speculative[key] for key in MEASURED_BY_VLLM}


def build_app(cfg: ServeConfig, llm_config: dict):
    """ray.serve.llm's engine deployment for `llm_config`, behind the shared ingress."""
    config = LLMConfig.model_validate(llm_config)
    engine = build_llm_deployment(config, deployment_cls=SpeculativeLLMServer)
    return bind_ingress(VLLMClient, engine, cfg)
