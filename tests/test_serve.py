"""The Ray Serve app over real HTTP on loopback, its request validation, and the vLLM configuration."""

from __future__ import annotations

import json
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import make_tiny_llama

from sdd_ray.config import ConfigError, validate_config
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.protocol import CompletionRequest, RequestError, parse_request
from sdd_ray.testing.ports import reserved_port

API_KEY = "test-key-123"
PROMPT = "### Instruction:\nWhat is 12 plus 7?\n\n### Response:\n"


# ---- request validation (no server) ---------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"model": "m"}', 400, "prompt: Field required"),
    (b'{"model": "m", "prompt": "   "}', 400, "the prompt is empty"),
    (b'{"model": "other", "prompt": "hi"}', 404, "'other' does not exist"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": 0}', 400, "max_tokens must be between 1 and 32"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": 33}', 400, "max_tokens must be between 1 and 32"),
    (b'{"model": "m", "prompt": "hi", "temperature": 3}', 400, "temperature"),
    (b'{"model": "m", "prompt": "hi", "stop": ["\\n"]}', 400, "stop sequences are not supported"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nests deeper than 32"),
    (b'{"model": "m", "prompt": "hi", "user": ' + b"[" * 33 + b"]" * 33 + b"}", 400, "nests deeper than 32"),
    (b'{"model": "m", "prompt": "hi", "max_tokens": ' + b"7" * 5000 + b"}", 400, "not valid JSON"),
    (b'{"model": "m", "prompt": "hi", "temperature": NaN}', 400, "NaN is not a JSON number"),
])
def test_bad_requests_are_rejected_with_a_reason(body, status, reason):
    with pytest.raises(RequestError) as caught:
        parse_request(CompletionRequest, body, "m", max_tokens_limit=32, default_max_tokens=8)
    assert caught.value.status == status
    assert reason in caught.value.message


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", 2), ("logprobs", True), ("top_logprobs", 3), ("echo", True), ("best_of", 2),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logit_bias", {"50256": -100}), ("suffix", "end"),
    ("response_format", {"type": "json_object"}), ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"), ("functions", [{"name": "f"}]), ("n", 2),
])
def test_fields_that_change_the_output_are_refused_by_name(field, value):
    raw = json.dumps({"model": "m", "prompt": "hi", field: value}).encode()
    with pytest.raises(RequestError) as caught:
        parse_request(CompletionRequest, raw, "m", max_tokens_limit=32, default_max_tokens=8)
    assert caught.value.status == 400 and caught.value.param == field
    assert field in caught.value.message


def test_neutral_values_of_unsupported_fields_are_accepted():
    neutral = {"logprobs": None, "echo": False, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
               "logit_bias": {}, "response_format": {"type": "text"}, "tools": [], "n": 1, "user": "u"}
    raw = json.dumps({"model": "m", "prompt": "hi", **neutral}).encode()
    assert parse_request(CompletionRequest, raw, "m", 32, 8).prompt == "hi"


def test_max_completion_tokens_zero_is_refused_not_replaced():
    from sdd_ray.serve.protocol import ChatCompletionRequest

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(RequestError) as caught:
        parse_request(ChatCompletionRequest, json.dumps({**chat, "max_completion_tokens": 0}).encode(), "m", 32, 8)
    assert caught.value.param == "max_completion_tokens" and "got 0" in caught.value.message
    both = {**chat, "max_completion_tokens": 5, "max_tokens": 9}
    assert parse_request(ChatCompletionRequest, json.dumps(both).encode(), "m", 32, 8).max_tokens == 5


def test_default_and_explicit_max_tokens():
    request = parse_request(CompletionRequest, b'{"model": "m", "prompt": ["hi"], "user": "x"}', "m", 32, 8)
    assert (request.prompt, request.max_tokens, request.temperature) == ("hi", 8, 1.0)
    assert parse_request(CompletionRequest, b'{"model": "m", "prompt": "hi", "max_tokens": 32}', "m", 32, 8).max_tokens == 32


# ---- vLLM configuration (vllm not installed) ------------------------------------------------


def test_vllm_app_configuration_matches_ray_serve_llm_schema():
    from sdd_ray.serve.vllm_app import llm_config

    cfg = validate_config(ServeConfig, {
        "target": {"path": "/models/llama-8b"}, "draft": {"path": "/models/llama-8b-pruned-sdd"},
        "engine": "vllm", "k": 5, "replicas": 2, "accelerator_type": "H100", "max_model_len": 4096, "api_key": "k",
    })
    llm = llm_config(cfg, cluster_gpus=0)  # the accelerator type names a GPU on a cluster scaled to none
    assert llm["model_loading_config"] == {"model_id": "llama-8b", "model_source": "/models/llama-8b"}
    assert llm["engine_kwargs"]["speculative_config"] == {
        "method": "draft_model", "model": "/models/llama-8b-pruned-sdd", "num_speculative_tokens": 5,
    }
    assert llm["engine_kwargs"]["max_model_len"] == 4096
    assert "enforce_eager" not in llm["engine_kwargs"] and "placement_group_config" not in llm  # a GPU: vLLM's defaults
    assert llm["deployment_config"]["num_replicas"] == 2
    # ray.serve.llm.LLMConfig is this class (re-exported); the public import needs vLLM, the base does not.
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    validated = LLMConfig.model_validate(llm)
    assert validated.model_id == "llama-8b"
    assert validated.accelerator_type == "H100"
    assert validated.engine_kwargs["speculative_config"]["method"] == "draft_model"
    assert validated.max_request_context_length == 4096


def test_vllm_cpu_defaults_come_from_one_place():
    """On the CPU build: eager mode (compiled mode gave wrong speculative text), float32, a small RAM share,
    CPU bundles; the same engine arguments for serve, distill and evaluate; explicit overrides win."""
    from sdd_ray.config import ModelSpec
    from sdd_ray.distill.config import DistillConfig
    from sdd_ray.distill.vllm_backend import engine_kwargs as distill_engine_kwargs
    from sdd_ray.serve.vllm_app import llm_config
    from sdd_ray.vllm_engine import CPU_DEFAULTS, engine_args

    cpu = engine_args(ModelSpec(path="/m"), device="cpu")
    assert cpu["enforce_eager"] is True and cpu["dtype"] == "float32" and cpu["kv_cache_memory_bytes"] == 1 << 30
    assert set(CPU_DEFAULTS) <= set(cpu)
    assert engine_args(ModelSpec(path="/m", dtype="bfloat16"), device="cpu", overrides={"enforce_eager": False}) == {
        **cpu, "dtype": "bfloat16", "enforce_eager": False}
    gpu = engine_args(ModelSpec(path="/m"), device="gpu")
    assert "enforce_eager" not in gpu and "dtype" not in gpu and gpu["gpu_memory_utilization"] == 0.9

    serve_cfg = validate_config(ServeConfig, {"target": {"path": "/m"}, "draft": {"path": "/d"}, "engine": "vllm",
                                              "device": "cpu", "k": 3, "engine_num_cpus": 0.5})
    served = llm_config(serve_cfg, cluster_gpus=8)  # `device: cpu` is kept on a GPU cluster
    assert {k: served["engine_kwargs"][k] for k in cpu} == cpu
    assert served["placement_group_config"] == {"bundles": [{"CPU": 0.5}]}
    distill_cfg = validate_config(DistillConfig, {"teacher": {"path": "/m"}, "data": {"source": "toy:all"},
                                                  "backend": "vllm", "vllm": {"device": "cpu"}})
    assert distill_engine_kwargs(distill_cfg, 0) == cpu


def test_vllm_engine_reports_missing_vllm(monkeypatch):
    # Where vLLM is absent (ray.serve.llm then fails to import), building the app says so instead of failing obscurely.
    from sdd_ray.serve.vllm_app import VLLMUnavailableError, build_vllm_app

    monkeypatch.setitem(sys.modules, "ray.serve.llm", None)
    monkeypatch.setitem(sys.modules, "sdd_ray.serve.vllm_deployments", None)
    cfg = validate_config(ServeConfig, {"target": {"path": "t"}, "draft": {"path": "d"}, "engine": "vllm"})
    with pytest.raises(VLLMUnavailableError, match="needs vLLM"):
        build_vllm_app(cfg)


def test_api_key_comes_from_one_named_source_and_is_never_empty(monkeypatch, tmp_path):
    from sdd_ray.serve.cli import resolve_api_key

    monkeypatch.setenv("SDD_TEST_KEY", "secret")
    monkeypatch.setenv("SDD_EMPTY_KEY", "")
    monkeypatch.delenv("SDD_UNSET_KEY", raising=False)
    (tmp_path / "key").write_text("from-file\n")
    (tmp_path / "empty").write_text("\n")
    assert resolve_api_key(env="SDD_TEST_KEY") == "secret"
    assert resolve_api_key(file=tmp_path / "key") == "from-file"
    assert resolve_api_key("literal-key") == "literal-key"
    assert resolve_api_key() is None
    for kwargs, reason in [
        ({"env": "SDD_EMPTY_KEY"}, "environment variable SDD_EMPTY_KEY is empty"),
        ({"file": tmp_path / "empty"}, "is empty"),
        ({"literal": ""}, "--api-key is empty"),
        ({"literal": " "}, "--api-key is empty"),
        ({"env": "SDD_UNSET_KEY"}, "SDD_UNSET_KEY is not set"),
        ({"file": tmp_path / "missing"}, "cannot read"),
        ({"literal": "SDD_TEST_KEY"}, "use --api-key-env SDD_TEST_KEY"),  # never the variable's value by guessing
        ({"literal": "k", "env": "SDD_TEST_KEY"}, "give one of --api-key, --api-key-env"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            resolve_api_key(**kwargs)
    with pytest.raises(ConfigError, match="API key is empty"):
        validate_config(ServeConfig, {"target": {"path": "t"}, "draft": {"path": "d"}, "api_key": ""})


def _serve_cli(capsys, monkeypatch, *flags: str) -> tuple[int, list[str]]:
    """`sdd-ray serve` with `flags`, which must fail before Ray and the models start; its exit code and stderr lines."""
    from sdd_ray.cli import main

    def started(*_, **__):
        raise AssertionError("serve started Ray and the models before refusing")

    monkeypatch.setattr("sdd_ray.serve.cli.start", started)
    capsys.readouterr()  # what the test wrote before (model saving's progress bars)
    with pytest.raises(SystemExit) as caught:
        main(["serve", *flags])
    return caught.value.code, capsys.readouterr().err.strip().splitlines()


def test_serve_refuses_a_port_in_use_before_loading_anything(capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = _serve_cli(capsys, monkeypatch, "--target", "toy-teacher", "--draft", "toy-teacher",
                                 "--port", str(port))
    assert (code, len(lines)) == (2, 1) and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]


def test_serve_refuses_a_draft_with_another_vocabulary_before_starting_engines(capsys, monkeypatch, tmp_path):
    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<extra-token>"])
    draft = make_tiny_llama(tmp_path / "other-vocab", num_layers=1, tokenizer=tokenizer)
    code, lines = _serve_cli(capsys, monkeypatch, "--target", "toy-teacher", "--draft", str(draft))
    assert (code, len(lines)) == (2, 1) and "vocabulary" in lines[0] and str(draft) in lines[0]


def test_engine_stops_decoding_within_a_step_of_a_cancelled_request(tmp_path):
    """Serve cancels a request whose client left; the engine must stop at the next step, not run to max_tokens."""
    import asyncio

    from sdd_ray.models import load_tokenizer
    from sdd_ray.prompts import encode_prompt
    from sdd_ray.serve.app import SpeculativeEngine

    # Greedy on this random model writes 2,000 tokens without an end-of-sequence token.
    model = make_tiny_llama(tmp_path / "tiny", num_layers=2, seed=0, max_positions=4096)
    cfg = validate_config(ServeConfig, {"target": {"path": str(model)}, "draft": {"path": str(model)},
                                        "k": 2, "max_tokens_limit": 600})
    engine = SpeculativeEngine.func_or_class(cfg.model_dump(mode="json"))
    payload = {"prompt_ids": encode_prompt(load_tokenizer(model), PROMPT), "max_tokens": 600,
               "temperature": 0.0, "top_p": 1.0, "seed": None}

    async def cancel_after_first_event():
        got = asyncio.Event()

        async def consume():
            async for _ in engine.stream(payload):
                got.set()

        task = asyncio.create_task(consume())
        first = asyncio.create_task(got.wait())
        await asyncio.wait({first, task}, return_when=asyncio.FIRST_COMPLETED)
        assert got.is_set(), task.exception()
        task.cancel()
        at_cancel = engine.steps
        await asyncio.sleep(1.0)  # room for many more steps, had decoding gone on
        return at_cancel

    at_cancel = asyncio.run(cancel_after_first_event())
    assert engine.in_flight == 0
    assert engine.steps <= at_cancel + 1 < 100  # the whole request is 200 steps (3 tokens each)


# ---- the running app ------------------------------------------------------------------------


def test_reserved_port_is_held_from_others_yet_bindable_by_serves_proxy():
    """The port stays ours for the whole block: a plain bind is refused, a SO_REUSEPORT listener (Serve's proxy) binds."""
    with reserved_port() as port:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        with socket.socket() as proxy:
            proxy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            proxy.bind(("127.0.0.1", port))
            proxy.listen()


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    """The app on a loopback port, target = draft (every token accepted), with an API key.

    Greedy on this random model writes 2,000 tokens without an end-of-sequence token, long enough
    to see a stream stop when its client leaves.
    """
    from ray import serve

    from sdd_ray.serve.app import build_app

    root = tmp_path_factory.mktemp("serve")
    target = make_tiny_llama(root / "tiny-target", num_layers=2, seed=0, max_positions=4096)
    with reserved_port() as port:
        cfg = validate_config(ServeConfig, {
            "target": {"path": str(target)}, "draft": {"path": str(target)}, "k": 3, "port": port,
            "api_key": API_KEY, "max_tokens_limit": 2000, "default_max_tokens": 8,
            "engine_num_cpus": 0.5, "ingress_num_cpus": 0.1,
        })
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name="sdd-ray-test", route_prefix="/", blocking=False)
        yield f"http://127.0.0.1:{port}"
        serve.shutdown()


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.mark.timeout(300)  # Serve start-up is most of it; slow on a loaded 2-core machine
def test_serve_app_over_http(client, server):
    import httpx
    from ray import serve

    models = client.get("/v1/models")
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "tiny-target"

    body = {"model": "tiny-target", "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    done = client.post("/v1/completions", json=body).json()
    assert done["object"] == "text_completion" and done["choices"][0]["finish_reason"] in ("stop", "length")
    usage = done["usage"]
    assert usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["speculative"]["acceptance_rate"] == 1.0  # draft == target
    assert client.post("/v1/completions", json=body).json()["choices"][0]["text"] == done["choices"][0]["text"]

    # Streaming: the concatenated deltas are the non-streamed text; usage comes with the last chunk.
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == done["choices"][0]["text"]
    assert chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]

    chat = client.post("/v1/chat/completions", json={
        "model": "tiny-target", "messages": [{"role": "user", "content": "What is 12 plus 7?"}],
        "max_tokens": 6, "temperature": 0,
    }).json()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    with client.stream("POST", "/v1/chat/completions", json={
        "model": "tiny-target", "messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 5,
        "stream": True, "temperature": 0.7, "seed": 3,
    }) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[0].removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"

    # Concurrent requests all succeed.
    def ask(i: int) -> int:
        with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=90) as c:
            return c.post("/v1/completions", json={**body, "max_tokens": 4 + i % 3}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(ask, range(6))) == [200] * 6

    # Bad requests get a 4xx with a reason, and the server keeps serving.
    bad = check_bad_requests(client, server, body)
    assert client.post("/v1/completions", json=body).status_code == 200

    # A client that leaves a long stream after its first chunk stops the engine within a step.
    engine = serve.get_deployment_handle("speculative-engine", app_name="sdd-ray-test")
    with client.stream("POST", "/v1/completions", json={**body, "max_tokens": 2000, "stream": True}) as response:
        next(line for line in response.iter_lines() if line.startswith("data: "))
    deadline = time.monotonic() + 60
    while (load := engine.load.remote().result())["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    assert load["in_flight"] == 0 and engine.load.remote().result()["steps"] <= load["steps"] + 1
    assert load["steps"] < 2000 // 4  # far from the whole stream: 500 steps of 4 tokens

    metrics = client.get("/metrics").json()
    assert metrics["errors"] == bad
    speculative = metrics["speculative"]
    assert speculative["requests"] == 12  # 3 completions + 2 chats + 6 concurrent + 1 after the bad ones
    assert speculative["acceptance_rate"] == 1.0
    assert speculative["mean_accepted_length"] > 1.0
    assert client.get("/v1/metrics").json()["speculative"]["requests"] == 12


def check_bad_requests(client, server: str, body: dict) -> int:
    """Send the bad requests every engine must refuse alike (status and reason); returns how many."""
    import httpx

    model = body["model"]
    bad = [
        (client.post("/v1/completions", content=b"{oops", headers={"content-type": "application/json"}), 400, "JSON"),
        (client.post("/v1/completions", json={**body, "model": "gpt-4"}), 404, "does not exist"),
        (client.post("/v1/completions", json={**body, "max_tokens": 100_000}), 400, "max_tokens"),
        (client.post("/v1/completions", json={**body, "logprobs": 1}), 400, "logprobs is not supported"),
        (client.post("/v1/completions", content=json.dumps(body), headers={"content-type": "text/plain"}), 415,
         "application/json"),
        (client.post("/v1/completions", json={**body, "prompt": ""}), 400, "empty"),
        (client.post("/v1/completions", json={**body, "stop": ["\n"]}), 400, "stop sequences are not supported"),
        (client.post("/v1/chat/completions", json={"model": model, "messages": []}), 400, "messages"),
        (httpx.post(f"{server}/v1/completions", json=body, timeout=30), 401, "API key"),
        (httpx.post(f"{server}/v1/completions", json=body, headers={"Authorization": "Bearer nope"}, timeout=30), 401, "API key"),
    ]
    for response, status, reason in bad:
        assert response.status_code == status, response.text
        assert reason in response.json()["error"]["message"]
    return len(bad)


def test_speculative_config_keys_are_vllm_fields(vllm):
    """Where vLLM is installed (`make setup` installs it): our keys are fields of vLLM's SpeculativeConfig."""
    import dataclasses
    import typing

    from vllm.config import speculative

    from sdd_ray.serve.vllm_app import speculative_config

    cfg = validate_config(ServeConfig, {"target": {"path": "t"}, "draft": {"path": "d", "revision": "main"},
                                        "engine": "vllm", "k": 3})
    spec = speculative_config(cfg)
    assert set(spec) <= {f.name for f in dataclasses.fields(speculative.SpeculativeConfig)}
    assert spec["method"] in typing.get_args(speculative.SpeculativeMethod)


def test_served_pair_uses_only_public_stable_ray_names():
    """Fails loudly when a Ray release moves, renames or demotes a name `--engine vllm` relies on."""
    import importlib
    import inspect
    from pathlib import Path

    pytest.importorskip("vllm")
    from sdd_ray.serve import vllm_deployments
    from sdd_ray.serve.vllm_deployments import LLM_SERVER_METHODS, PUBLIC_RAY_NAMES

    for module_name, names in PUBLIC_RAY_NAMES.items():
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name, None)
            assert obj is not None, f"{module_name}.{name} is gone"
            assert getattr(obj, "_annotated", None) == obj.__name__, f"{module_name}.{name} is not a Ray public API"
            assert obj._annotated_type.value == "PublicAPI" and "PublicAPI (" not in (obj.__doc__ or ""), \
                f"{module_name}.{name} is not stable"
    from ray.serve.llm import LLMServer, build_llm_deployment

    for method in LLM_SERVER_METHODS:
        assert inspect.iscoroutinefunction(getattr(LLMServer, method)), f"LLMServer.{method}"
    assert "deployment_cls" in inspect.signature(build_llm_deployment).parameters
    source = Path(vllm_deployments.__file__).read_text()
    assert "_internal" not in source and "_private" not in source
