"""The ingress both engines share, over FastAPI's TestClient with a stand-in engine (no Ray): key, bounds, no 500s."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from sdd_ray.config import validate_config
from sdd_ray.models import TOY_TEACHER, load_tokenizer
from sdd_ray.prompts import encode_prompt, render_messages
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.ingress import Front, Job, make_app
from sdd_ray.serve.protocol import STREAM_DONE, completion_body, stream_chunk

KEY = "ingress-key"
METRICS = {"prompt_tokens": 1, "new_tokens": 1, "target_forwards": 1, "drafts": 0, "draft_tokens": 0,
           "accepted_tokens": 0, "mean_accepted_length": 1.0, "acceptance_rate": 0.0,
           "acceptance_rate_by_position": [], "tokens_per_s": 1.0}


class StandInClient:
    """Records the jobs it is given; answers one fixed token."""

    name = "stand-in"

    def __init__(self):
        self.jobs: list[Job] = []

    async def complete(self, job: Job) -> dict:
        self.jobs.append(job)
        return completion_body(job.request_id, job.model, "ok", "stop", METRICS)

    async def stream(self, job: Job):
        self.jobs.append(job)
        yield stream_chunk(job.chat, job.request_id, job.model, "ok", "stop", METRICS, first=True)
        yield STREAM_DONE

    async def speculative(self) -> dict:
        return {"requests": len(self.jobs)}


@pytest.fixture(scope="module")
def front():
    cfg = validate_config(ServeConfig, {
        "target": {"path": str(TOY_TEACHER)}, "draft": {"path": str(TOY_TEACHER)}, "model_name": "toy",
        "api_key": KEY, "max_tokens_limit": 16, "default_max_tokens": 4, "max_body_bytes": 4096,
    })
    return Front(cfg, StandInClient())


@pytest.fixture
def client(front):
    front.client.jobs.clear()
    with TestClient(make_app(front), raise_server_exceptions=False, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_every_route_needs_the_key_and_the_schema_is_not_served(client):
    for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/v1/metrics"),
                         ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")]:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = client.request(method, path, headers=headers, json={"model": "toy", "prompt": "hi"})
            assert response.status_code == 401, (method, path, headers)
            assert "API key" in response.json()["error"]["message"]
    assert client.get("/v1/models").json()["data"][0]["id"] == "toy"
    for path in ("/openapi.json", "/docs", "/redoc"):
        for headers in ({"Authorization": ""}, {}):
            response = client.get(path, headers=headers)
            assert response.status_code in (401, 404) and "openapi" not in response.text, path


def test_body_bounds_and_content_type_before_parsing(client, front):
    body = json.dumps({"model": "toy", "prompt": "x" * 5000}).encode()
    json_type = {"content-type": "application/json"}
    assert client.post("/v1/completions", content=body, headers=json_type).status_code == 413

    def chunks():  # no Content-Length: the bound holds while the body is read
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/v1/completions", content=chunks(), headers=json_type)
    assert response.status_code == 413 and "limit of 4096 bytes" in response.json()["error"]["message"]
    small = json.dumps({"model": "toy", "prompt": "hi"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/v1/completions", content=small, headers=headers)
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["error"]["message"]
    assert client.post("/v1/completions", content=small, headers={"content-type": "application/json; charset=utf-8"}
                       ).status_code == 200
    assert len(front.client.jobs) == 1  # none of the refused bodies reached the engine


HOSTILE = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"model": "toy", "prompt": "hi", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
    b'{"model": "toy", "prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}",
    b'{"model": "toy", "prompt": "hi", "max_tokens": 1e999}',
    b'{"model": "toy", "prompt": "hi", "temperature": NaN}',
    b'{"model": "toy", "prompt": "hi", "temperature": Infinity}',
    b'{"model": "toy", "prompt": "hi", "seed": 184467440737095516160}',
    b'{"model": "toy", "prompt": "hi", "seed": -1}',
    b'{"model": "toy", "prompt": 5}',
    b'{"model": "toy", "prompt": ["a", "b"]}',
    b'{"model": "toy", "prompt": [1, 2, 3]}',
    b'{"model": ["toy"], "prompt": "hi"}',
    b'{"model": "toy", "prompt": "hi", "stream": "yes"}',
    b'{"model": "toy", "prompt": "\xff\xfe"}',
    b'{"model": "toy", "prompt": "\\ud800"}',
    b'{"model": "toy", "prompt": "' + "é".encode() * 3000 + b'"}',
    b"",
    b"null",
    b'"text"',
]
HOSTILE_CHAT = [
    b'{"model": "toy", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}',
    b'{"model": "toy", "messages": [{"role": "tool", "content": "hi"}]}',
    b'{"model": "toy", "messages": {"role": "user", "content": "hi"}}',
    b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}',
    b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}',
    b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}',
]


@pytest.mark.parametrize(("path", "body"), [("/v1/completions", b) for b in HOSTILE]
                         + [("/v1/chat/completions", b) for b in HOSTILE_CHAT])
def test_no_input_gives_a_500(client, path, body):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]


def test_prompt_rendered_tokenized_and_bounded_in_the_front(client, front):
    tokenizer = load_tokenizer(TOY_TEACHER)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 plus 7?"}]
    assert client.post("/v1/chat/completions", json={"model": "toy", "messages": messages}).status_code == 200
    assert client.post("/v1/completions", json={"model": "toy", "prompt": "Hi", "stream": True}).status_code == 200
    chat, completion = front.client.jobs
    assert chat.prompt_ids == encode_prompt(tokenizer, render_messages(tokenizer, messages))
    assert (chat.chat, chat.messages, chat.max_tokens) == (True, messages, 4)
    assert completion.prompt_ids == encode_prompt(tokenizer, "Hi") and completion.stream
    long = " ".join(["word"] * (front.context_length + 10))
    response = client.post("/v1/completions", json={"model": "toy", "prompt": long[:3500]})
    assert response.status_code == 400 and "context length" in response.json()["error"]["message"]
    assert client.get("/metrics").json()["errors"] >= 1


def test_the_front_stops_the_engine_stream_when_the_client_leaves(front):
    """Starlette cancels the response body when the connection closes; the engine's stream must be closed then."""
    from sdd_ray.serve.ingress import _streamed

    closed = []

    async def engine_stream():
        try:
            for i in range(1000):
                yield f"data: {i}\n\n"
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    async def leave_after_first():
        response = await _streamed(engine_stream())
        body = response.body_iterator
        first = await anext(body)
        await body.aclose()  # what Starlette does to the body of a response whose client went away
        return first

    assert asyncio.run(leave_after_first()) == "data: 0\n\n"
    assert closed == [True]
