"""Ray Serve application: an OpenAI-compatible ingress in front of a speculative decoding engine.

Two deployments:

- `SpeculativeEngine` holds the target AND the draft (one replica = one pair, scaled by replicas).
  Why not a draft deployment and a target deployment: a speculative step is k dependent draft
  forwards and one target forward, and each model's KV cache is per-request state that must stay
  next to its weights between steps. Split over two deployments, every step would cost at least two
  actor round-trips (the proposals out, the accepted length back) and needs sticky routing of a
  request to the replicas holding its caches. A Ray Serve handle call costs on the order of a
  millisecond, as much as a whole forward of a pruned toy model and a large share of a small LLM's
  decode step, so the split would eat the speedup it is meant to show. vLLM makes the same choice:
  its draft model runs inside the target's worker (`speculative_config`). Scaling is by replicas
  of the pair.
- `OpenAIIngress` (FastAPI through `serve.ingress`): `/v1/completions`, `/v1/chat/completions`
  (JSON or server-sent events), `/v1/models`, `/metrics` (alias `/v1/metrics`). It validates every
  request before any model work (`protocol.parse_request`), checks the optional bearer key, and
  aggregates the engine's per-request speculative counters.

Both use fractional CPUs so that the app fits a 2-CPU machine next to other Ray work.
"""

import hmac
import time
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from sdd_ray.prompts import IncrementalDetokenizer, encode_prompt, instruction_prompt, stop_token_ids
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.protocol import (
    STREAM_DONE,
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
    chat_body,
    completion_body,
    models_body,
    new_id,
    parse_request,
    stream_chunk,
)


def render_messages(tokenizer, messages: list[dict]) -> str:
    """The prompt for a chat: the tokenizer's chat template, else the plain instruction format."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    return instruction_prompt(f"{system}\n\n{user}" if system else user)


@serve.deployment(name="speculative-engine")
class SpeculativeEngine:
    """A target/draft pair and its tokenizer; sync methods run on Serve's thread pool, one request per thread."""

    def __init__(self, config: dict):
        import torch

        from sdd_ray.models import load_model, load_tokenizer
        from sdd_ray.specdec.engine import SpeculativeDecoder

        cfg = ServeConfig.model_validate(config)
        torch.set_num_threads(cfg.torch_threads)
        self.tokenizer = load_tokenizer(cfg.target)
        target = load_model(cfg.target)
        stops = stop_token_ids(self.tokenizer, target.generation_config)
        self.decoder = SpeculativeDecoder(target, load_model(cfg.draft), cfg.k, stops)
        self.context_length = getattr(target.config, "max_position_embeddings", None)

    def _prepare(self, payload: dict):
        """(prompt ids, sampling) or a client error message."""
        from sdd_ray.specdec.engine import Sampling

        if "messages" in payload:
            prompt = render_messages(self.tokenizer, payload["messages"])
        else:
            prompt = payload["prompt"]
        ids = encode_prompt(self.tokenizer, prompt)
        if not ids:
            return "the prompt has no tokens"
        if self.context_length and len(ids) + payload["max_tokens"] > self.context_length:
            return (f"prompt ({len(ids)} tokens) + max_tokens ({payload['max_tokens']}) exceeds the "
                    f"context length ({self.context_length})")
        sampling = Sampling(payload["temperature"], payload["top_p"], payload.get("seed"))
        return ids, sampling

    def generate(self, payload: dict) -> dict:
        """{text, finish_reason, metrics} or {error}."""
        prepared = self._prepare(payload)
        if isinstance(prepared, str):
            return {"error": prepared}
        *_, last = self.stream(payload, prepared)
        return {"text": self.tokenizer.decode(last["tokens"], skip_special_tokens=True),
                "finish_reason": last["finish_reason"], "metrics": last["metrics"]}

    def stream(self, payload: dict, prepared=None) -> Iterator[dict]:
        """{text} deltas, one per target forward pass; the last also has finish_reason, metrics, tokens."""
        from sdd_ray.specdec.engine import DecodeMetrics

        prepared = prepared or self._prepare(payload)
        if isinstance(prepared, str):
            yield {"error": prepared}
            return
        ids, sampling = prepared
        metrics = DecodeMetrics()
        tokens: list[int] = []
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        for chunk in self.decoder.stream(ids, payload["max_tokens"], sampling, metrics):
            tokens += chunk.tokens
            delta = detokenizer.push(chunk.tokens)
            if chunk.finish_reason:
                delta += detokenizer.finish()
            event = {"text": delta}
            if chunk.finish_reason:
                event.update(finish_reason=chunk.finish_reason, metrics=metrics.as_dict(), tokens=tokens)
            yield event


app = FastAPI(title="sdd-ray speculative decoding", docs_url=None, redoc_url=None)


@serve.deployment(name="openai-ingress")
@serve.ingress(app)
class OpenAIIngress:
    """OpenAI-compatible routes; validation, auth and metric aggregation happen here."""

    def __init__(self, engine: DeploymentHandle, config: dict):
        from sdd_ray.specdec.engine import DecodeMetrics

        self.cfg = ServeConfig.model_validate(config)
        self.engine = engine
        self.model = self.cfg.served_name
        self.total = DecodeMetrics(requests=0)
        self.errors = 0
        self.started = time.time()

    def _check_key(self, request: Request) -> None:
        if not self.cfg.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.cfg.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send `Authorization: Bearer <key>`)")

    def _error(self, error: RequestError) -> JSONResponse:
        self.errors += 1
        return JSONResponse(error.body(), status_code=error.status)

    def _record(self, metrics: dict) -> None:
        from sdd_ray.specdec.engine import DecodeMetrics

        self.total = self.total.merge(DecodeMetrics.from_dict({**metrics, "requests": 1}))

    async def _complete(self, request: Request, chat: bool):
        try:
            self._check_key(request)
            cls = ChatCompletionRequest if chat else CompletionRequest
            parsed = parse_request(cls, await request.body(), self.model, self.cfg.max_tokens_limit,
                                   self.cfg.default_max_tokens)
        except RequestError as error:
            return self._error(error)
        payload = {"max_tokens": parsed.max_tokens, "temperature": parsed.temperature, "top_p": parsed.top_p,
                   "seed": parsed.seed}
        if chat:
            payload["messages"] = [m.model_dump() for m in parsed.messages]
        else:
            payload["prompt"] = parsed.prompt
        request_id = new_id("chatcmpl" if chat else "cmpl")
        if parsed.stream:
            return await self._stream(payload, request_id, chat)
        result = await self.engine.generate.remote(payload)
        if "error" in result:
            return self._error(RequestError(400, result["error"], "prompt"))
        self._record(result["metrics"])
        build = chat_body if chat else completion_body
        return build(request_id, self.model, result["text"], result["finish_reason"], result["metrics"])

    async def _stream(self, payload: dict, request_id: str, chat: bool):
        events = self.engine.options(stream=True).stream.remote(payload)
        first = await events.__anext__()
        if "error" in first:
            return self._error(RequestError(400, first["error"], "prompt"))

        async def sse():
            event, is_first = first, True
            while True:
                metrics = event.get("metrics")
                if metrics is not None:
                    self._record(metrics)
                yield stream_chunk(chat, request_id, self.model, event["text"], event.get("finish_reason"),
                                   metrics, first=is_first)
                is_first = False
                if event.get("finish_reason"):
                    break
                event = await events.__anext__()
            yield STREAM_DONE

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._complete(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._complete(request, chat=True)

    @app.get("/v1/models")
    async def models(self, request: Request):
        try:
            self._check_key(request)
        except RequestError as error:
            return self._error(error)
        return models_body(self.model)

    @app.get("/metrics")
    @app.get("/v1/metrics")
    async def metrics(self, request: Request):
        try:
            self._check_key(request)
        except RequestError as error:
            return self._error(error)
        return {"model": self.model, "engine": "hf", "k": self.cfg.k, "uptime_s": time.time() - self.started,
                "errors": self.errors, "speculative": self.total.as_dict()}


def build_app(cfg: ServeConfig):
    """The Serve application (not yet running): ingress bound to the engine deployment."""
    config = cfg.model_dump(mode="json")
    engine = SpeculativeEngine.options(
        num_replicas=cfg.replicas,
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.engine_num_cpus, "num_gpus": cfg.engine_num_gpus},
    ).bind(config)
    return OpenAIIngress.options(ray_actor_options={"num_cpus": cfg.ingress_num_cpus}).bind(engine, config)
