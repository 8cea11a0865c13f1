"""The OpenAI-compatible front shared by both engines: one FastAPI app in one Ray Serve deployment.

Every request goes through the same steps before any model work, whichever engine serves it:
the API key (a FastAPI dependency on every route; no route is open, and FastAPI's own
`/docs`, `/redoc` and `/openapi.json` are off), the body read with a size bound (413) and a
JSON-only content type (415), `protocol.parse_request` (400/404), and the prompt rendered
(`prompts.render_messages`) and tokenized as the own engine does (`encode_prompt`: no second BOS)
and checked against the context length. Only then does an `EngineClient` (the own engine's in
`serve.app`, vLLM's in `serve.vllm_deployments`) talk to its engine deployment.

A client that goes away cancels its request: Starlette cancels the response when the connection
closes, and the clients cancel their engine call in turn (`cancel_on_exit`), so the engine stops
within one decoding step instead of generating for nobody.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from sdd_ray.models import load_tokenizer, text_config
from sdd_ray.prompts import encode_prompt, render_messages
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
    check_content_type,
    models_body,
    new_id,
    parse_request,
)


@dataclass
class Job:
    """One validated request, ready for an engine: the prompt as token ids (and the messages of a chat)."""

    request_id: str
    model: str
    chat: bool
    prompt_ids: list[int]
    messages: list[dict] | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stream: bool


class EngineClient(Protocol):
    """What the front needs from an engine; built in the ingress replica from (engine handle, config)."""

    name: str

    async def complete(self, job: Job) -> dict:
        """The OpenAI response body of a non-streamed request."""

    def stream(self, job: Job) -> AsyncIterator[str]:
        """Server-sent events, `data: [DONE]` last; a `RequestError` before the first one is the client's."""

    async def speculative(self) -> dict:
        """The speculative decoding counters `/metrics` reports."""


@asynccontextmanager
async def cancel_on_exit(response):
    """Cancel a Serve handle call (response or response generator) when the caller stops waiting for it."""
    try:
        yield response
    finally:
        response.cancel()  # a no-op once the call has finished


class Front:
    """The engine-independent part of the ingress: key, parsing, prompt, counters."""

    def __init__(self, cfg: ServeConfig, client: EngineClient):
        self.cfg, self.client = cfg, client
        self.model = cfg.served_name
        self.tokenizer = load_tokenizer(cfg.target)
        self.context_length = cfg.max_model_len or getattr(text_config(cfg.target), "max_position_embeddings", None)
        self.errors = 0
        self.started = time.time()

    def check_key(self, request: Request) -> None:
        if not self.cfg.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.cfg.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send `Authorization: Bearer <key>`)")

    def job(self, raw: bytes, chat: bool) -> Job:
        """Parse, render and tokenize one request body; `RequestError` for anything the client must fix."""
        cls = ChatCompletionRequest if chat else CompletionRequest
        parsed = parse_request(cls, raw, self.model, self.cfg.max_tokens_limit, self.cfg.default_max_tokens)
        messages = [m.model_dump() for m in parsed.messages] if chat else None
        ids = encode_prompt(self.tokenizer, render_messages(self.tokenizer, messages) if chat else parsed.prompt)
        if not ids:
            raise RequestError(400, "the prompt has no tokens", "prompt")
        if self.context_length and len(ids) + parsed.max_tokens > self.context_length:
            raise RequestError(400, f"prompt ({len(ids)} tokens) + max_tokens ({parsed.max_tokens}) exceeds the "
                                    f"context length ({self.context_length})", "prompt")
        return Job(new_id("chatcmpl" if chat else "cmpl"), self.model, chat, ids, messages, parsed.max_tokens,
                   parsed.temperature, parsed.top_p, parsed.seed, parsed.stream)

    async def metrics(self) -> dict:
        return {"model": self.model, "engine": self.client.name, "k": self.cfg.k,
                "uptime_s": time.time() - self.started, "errors": self.errors,
                "speculative": await self.client.speculative()}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (413), declared JSON (415)."""
    check_content_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


async def _streamed(events: AsyncIterator[str]) -> StreamingResponse:
    """A streaming response whose first event has arrived, so that an error before it is still a 4xx."""
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def body():
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()  # the client left (or the stream ended): stop the engine

    return StreamingResponse(body(), media_type="text/event-stream")


def make_app(front: Front) -> FastAPI:
    """The routes; every one behind the key."""

    def require_key(request: Request) -> None:
        front.check_key(request)

    app = FastAPI(title="sdd-ray speculative decoding", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(require_key)])

    @app.exception_handler(RequestError)
    async def client_error(_: Request, error: RequestError):
        front.errors += 1
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException):  # unknown route, wrong method: OpenAI's error shape
        front.errors += 1
        return JSONResponse(RequestError(error.status_code, str(error.detail)).body(), status_code=error.status_code)

    async def generate(request: Request, chat: bool):
        raw = await read_body(request, front.cfg.max_body_bytes)
        job = await run_in_threadpool(front.job, raw, chat)  # tokenizing a long prompt must not stall other requests
        if job.stream:
            return await _streamed(front.client.stream(job))
        return await front.client.complete(job)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    @app.get("/v1/models")
    async def models():
        return models_body(front.model)

    @app.get("/metrics")
    @app.get("/v1/metrics")
    async def metrics():
        return await front.metrics()

    return app


@serve.deployment(name="openai-ingress")
@serve.ingress()
class OpenAIIngress:
    """The front in a Serve replica; `client_cls(engine, cfg)` talks to the engine deployment."""

    def __init__(self, client_cls: type, engine, config: dict):
        cfg = ServeConfig.model_validate(config)
        self.front = Front(cfg, client_cls(engine, cfg))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_app(self.front)



def bind_ingress(client_cls: type, engine, cfg: ServeConfig):
    """The ingress bound to `engine`; it admits as many requests as the engine replicas together take at once."""
    return OpenAIIngress.options(
        max_ongoing_requests=cfg.replicas * cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
    ).bind(client_cls, engine, cfg.model_dump(mode="json"))
