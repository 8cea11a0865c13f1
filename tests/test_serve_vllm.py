"""`sdd-ray serve --engine vllm` for real on vLLM's CPU build: SmolLM2 with its pruned draft (`make test-vllm`).

One app start (the start-up greedy check included) serves every check: greedy identity with the target's own
decoding, streaming, the own engine's bad-input answers, and vLLM's acceptance counters at `/metrics`.
`make test` (and `make test-vllm`) passes the full SmolLM2 (float32) in `SDD_RAY_SMOLLM2` and its pruned copy in
`SDD_RAY_PRUNED_SMOLLM2`; `make setup` installs vLLM in the one `.venv`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_serve import check_bad_requests

from sdd_ray.config import validate_config
from sdd_ray.serve.config import ServeConfig
from sdd_ray.testing.ports import reserved_port

pytestmark = pytest.mark.timeout(600)

API_KEY = "vllm-test-key"


def _checkpoint(variable: str) -> str:
    path = os.environ.get(variable)
    if not path or not (Path(path) / "config.json").is_file():
        pytest.skip(f"set {variable} to a SmolLM2 checkpoint (make test does)")
    return path


@pytest.fixture(scope="module")
def vllm_server(vllm_engine, ray_local):
    from ray import serve

    from sdd_ray.serve.cli import start

    with reserved_port() as port:
        cfg = validate_config(ServeConfig, {
            "target": {"path": _checkpoint("SDD_RAY_SMOLLM2")}, "draft": {"path": _checkpoint("SDD_RAY_PRUNED_SMOLLM2")},
            "engine": "vllm", "device": "cpu", "model_name": "smollm2", "k": 4, "port": port, "api_key": API_KEY,
            "max_tokens_limit": 64, "default_max_tokens": 16, "max_model_len": 1024, "verify_prompts": 2,
            "verify_max_tokens": 24, "engine_num_cpus": 0.5, "ingress_num_cpus": 0.1,
        })
        url = start(cfg, app_name="sdd-ray-vllm-test")  # raises GreedyMismatchError if vLLM's text differs
        yield cfg, url
        serve.shutdown()


def test_vllm_app_greedy_identity_streaming_bad_input_and_metrics(vllm_server):
    import httpx

    from sdd_ray.serve.greedy_check import check_prompts, reference_texts

    cfg, url = vllm_server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "smollm2"

        # Greedy identity on a prompt the start-up greedy check did not use (multi-byte text: Japanese).
        (prompt,) = check_prompts(cfg.target, 4)[3:]
        (expected,) = reference_texts(cfg.target, [prompt], 24)
        body = {"model": "smollm2", "prompt": prompt, "max_tokens": 24, "temperature": 0}
        done = client.post("/v1/completions", json=body).json()
        assert done["choices"][0]["text"] == expected
        assert done["usage"]["completion_tokens"] >= 1

        # Streaming: the deltas concatenate to the non-streamed text; usage comes at the end.
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == expected
        assert chunks[-1]["usage"]["completion_tokens"] == done["usage"]["completion_tokens"]

        chat = {"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 16, "temperature": 0}
        answer = client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
        with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as response:
            lines = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                     if line.startswith("data: ") and line != "data: [DONE]"]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in lines if c["choices"]) == answer
        assert "Paris" in answer

        # A client that leaves a stream after its first chunk: vLLM aborts the request (fewer tokens than the whole).
        story = {"model": "smollm2", "prompt": "Once upon a time, in a faraway land,", "max_tokens": 64,
                 "temperature": 0}
        started = time.monotonic()
        whole = client.post("/v1/completions", json=story).json()["usage"]["completion_tokens"]
        took = time.monotonic() - started
        assert whole >= 32
        before = client.get("/metrics").json()["speculative"]["new_tokens"]
        with client.stream("POST", "/v1/completions", json={**story, "stream": True}) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        time.sleep(max(5.0, 2 * took))  # time for the whole answer, had it gone on
        assert client.get("/metrics").json()["speculative"]["new_tokens"] - before < whole

        # The own engine's bad-input answers, through vLLM's app.
        bad = check_bad_requests(client, url, {"model": "smollm2", "prompt": "Hi", "max_tokens": 4})
        assert client.post("/v1/completions", json=body).status_code == 200

        metrics = client.get("/metrics").json()
    assert (metrics["engine"], metrics["k"], metrics["errors"]) == ("vllm", 4, bad)
    speculative = metrics["speculative"]
    assert speculative["drafts"] > 0 and speculative["draft_tokens"] == 4 * speculative["drafts"]
    assert 0 <= speculative["accepted_tokens"] <= speculative["draft_tokens"]
    assert speculative["mean_accepted_length"] == pytest.approx(1 + speculative["accepted_tokens"] / speculative["drafts"])
    assert len(speculative["acceptance_rate_by_position"]) == 4


def test_gpu_greedy_check_path_scores_the_served_tokens_with_the_engine_itself(vllm_server):
    """The greedy check as it runs on GPUs (no transformers model in the driver): the served greedy tokens, scored by a
    target-only prefill in the same engine, are the target's argmax (here on the CPU build, float32)."""
    from sdd_ray.serve.greedy_check import verify_greedy_identity

    cfg, url = vllm_server
    checks = verify_greedy_identity(cfg, url, reference="engine")
    assert len(checks) == cfg.verify_prompts and all(c.identical and c.served for c in checks)
