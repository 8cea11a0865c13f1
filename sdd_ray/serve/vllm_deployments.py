"""The deployments of `--engine vllm` (imports ray.serve.llm, hence vLLM: loaded only when that engine is asked for).

- `SpeculativeLLMServer`: ray.serve.llm's `LLMServer` (a vLLM `AsyncLLM` with the draft inside) plus
  one method, `speculative_counters`, that reads vLLM's spec-decoding counters in the replica.
- `VLLMIngress`: ray.serve.llm's `OpenAiIngress` with the own engine's front: every request is
  checked by `protocol.parse_request` and the API key before vLLM sees it, so both engines give the
  same 4xx answers; prompts are tokenized as the own engine does (`encode_prompt`: no second BOS)
  and sent to vLLM as token ids; `/metrics` reports the same quantities as the own engine.
"""

from __future__ import annotations

import hmac
import time

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.llm import LLMConfig, LLMServer, LLMServingArgs, build_llm_deployment
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress
from ray.serve.llm.openai_api_models import ChatCompletionRequest as VLLMChatRequest
from ray.serve.llm.openai_api_models import CompletionRequest as VLLMCompletionRequest

from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.protocol import ChatCompletionRequest, CompletionRequest, RequestError, models_body, parse_request

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


class VLLMIngress(OpenAiIngress):
    """OpenAI routes over vLLM, validated, keyed and measured as the own engine's `OpenAIIngress`."""

    def __init__(self, llm_deployments, model_cards, *, lora_paths=None, config: dict):
        from transformers import AutoConfig

        from sdd_ray.models import load_tokenizer

        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self.cfg = ServeConfig.model_validate(config)
        self.model = self.cfg.served_name
        self.tokenizer = load_tokenizer(self.cfg.target)
        model_config = AutoConfig.from_pretrained(self.cfg.target.path, revision=self.cfg.target.revision,
                                                  trust_remote_code=self.cfg.target.trust_remote_code)
        self.context_length = self.cfg.max_model_len or getattr(model_config, "max_position_embeddings", None)
        self.errors = 0
        self.started = time.time()

    def _check_key(self, request: Request) -> None:
        if not self.cfg.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.cfg.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send `Authorization: Bearer <key>`)")

    def _error(self, error: RequestError) -> JSONResponse:
        self.errors += 1
        return JSONResponse(error.body(), status_code=error.status)

    def _prompt_ids(self, prompt: str, max_tokens: int) -> list[int]:
        """Token ids as the own engine makes them, or the own engine's 400 for an empty or too long prompt."""
        from sdd_ray.prompts import encode_prompt

        ids = encode_prompt(self.tokenizer, prompt)
        if not ids:
            raise RequestError(400, "the prompt has no tokens", "prompt")
        if self.context_length and len(ids) + max_tokens > self.context_length:
            raise RequestError(400, f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the "
                                    f"context length ({self.context_length})", "prompt")
        return ids

    async def _forward(self, request: Request, chat: bool):
        from sdd_ray.serve.app import render_messages

        try:
            self._check_key(request)
            cls = ChatCompletionRequest if chat else CompletionRequest
            parsed = parse_request(cls, await request.body(), self.model, self.cfg.max_tokens_limit,
                                   self.cfg.default_max_tokens)
            common = {"model": self.model, "max_tokens": parsed.max_tokens, "temperature": parsed.temperature,
                      "top_p": parsed.top_p, "seed": parsed.seed, "stream": parsed.stream}
            if parsed.stream:
                common["stream_options"] = {"include_usage": True}
            if chat:
                messages = [m.model_dump() for m in parsed.messages]
                self._prompt_ids(render_messages(self.tokenizer, messages), parsed.max_tokens)
                body = VLLMChatRequest(messages=messages, **common)
            else:
                body = VLLMCompletionRequest(prompt=self._prompt_ids(parsed.prompt, parsed.max_tokens), **common)
        except RequestError as error:
            return self._error(error)
        return await self._process_llm_request(body, call_method="chat" if chat else "completions", raw_request=request)

    async def completions(self, request: Request):
        return await self._forward(request, chat=False)

    async def chat(self, request: Request):
        return await self._forward(request, chat=True)

    async def models(self, request: Request):
        try:
            self._check_key(request)
        except RequestError as error:
            return self._error(error)
        return models_body(self.model)

    async def metrics(self, request: Request):
        """The own engine's `/metrics` shape, from vLLM's counters (one engine replica's, the one the call reaches)."""
        from sdd_ray.specdec.engine import DecodeMetrics

        try:
            self._check_key(request)
        except RequestError as error:
            return self._error(error)
        counters = await self._default_serve_handles[self.model].speculative_counters.remote()
        speculative = DecodeMetrics.from_dict(counters).as_dict()
        return {"model": self.model, "engine": "vllm", "k": self.cfg.k, "uptime_s": time.time() - self.started,
                "errors": self.errors, "speculative": {key: speculative[key] for key in MEASURED_BY_VLLM}}


ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "metrics": lambda app: lambda method: app.get("/metrics")(app.get("/v1/metrics")(method)),
}


def build_app(serving_args: dict):
    """`ray.serve.llm.build_openai_app`'s wiring, with sdd_ray's server and ingress classes and their routes.

    `build_openai_app` routes only ray.serve.llm's own endpoint list; `/metrics` needs this one.
    """
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata

    args = LLMServingArgs.model_validate(serving_args)
    configs: list[LLMConfig] = args.llm_configs
    deployments = {c.model_id: build_llm_deployment(c, deployment_cls=SpeculativeLLMServer) for c in configs}
    cards = {c.model_id: to_model_metadata(c.model_id, c) for c in configs}
    ingress = make_fastapi_ingress(VLLMIngress, endpoint_map=ENDPOINTS)
    options = {**VLLMIngress.get_deployment_options(configs), **args.ingress_deployment_config}
    return serve.deployment(ingress, **options).bind(
        llm_deployments=deployments, model_cards=cards, **args.ingress_cls_config.ingress_extra_kwargs
    )
