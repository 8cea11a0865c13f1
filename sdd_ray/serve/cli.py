"""`sdd-ray serve`."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import NOT_CONFIG, console, model_spec, stage_config
from sdd_ray.config import ConfigError
from sdd_ray.models import check_model_exists, text_config
from sdd_ray.runtime import connect
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.greedy_check import verify_greedy_identity
from sdd_ray.serve.vllm_app import build_vllm_app


def resolve_api_key(literal: str | None = None, env: str | None = None, file: Path | None = None) -> str | None:
    """The key from exactly one of `--api-key KEY`, `--api-key-env NAME`, `--api-key-file PATH`; None if none is given.

    Nothing is guessed: a literal is the key, never a variable's name. An empty key (an exported but
    empty variable, an empty file) is an error rather than a server without authentication, and a
    literal that is the name of a set variable is refused (the old `--api-key NAME` meant the variable).
    """
    given = [flag for flag, value in (("--api-key", literal), ("--api-key-env", env), ("--api-key-file", file))
             if value is not None]
    if len(given) > 1:
        raise ConfigError(f"command line: give one of {', '.join(given)}, not several")
    if env is not None:
        if env not in os.environ:
            raise ConfigError(f"command line: --api-key-env: environment variable {env} is not set")
        key, source = os.environ[env], f"environment variable {env}"
    elif file is not None:
        try:
            key = Path(file).read_text(encoding="utf-8").strip()  # the file's trailing newline is not part of the key
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"command line: --api-key-file: cannot read {file}: {error}") from None
        source = f"file {file}"
    elif literal is not None:
        if literal in os.environ:
            raise ConfigError(f"command line: --api-key: {literal!r} is the name of an environment variable; "
                              f"use --api-key-env {literal} to read the key from it")
        key, source = literal, "--api-key"
    else:
        return None
    if not key.strip():
        raise ConfigError(f"command line: api_key: {source} is empty; an empty key would leave the server open")
    return key


def check_vocabularies(cfg) -> None:
    """The draft must share the target's vocabulary; checked from the configs, before any engine starts."""
    target, draft = text_config(cfg.target).vocab_size, text_config(cfg.draft).vocab_size
    if target != draft:
        raise ConfigError(f"draft {cfg.draft.path}: vocabulary of {draft} tokens differs from the target's {target} "
                          f"({cfg.target.path}); speculative decoding needs a draft with the target's tokenizer")


def check_port_free(host: str, port: int) -> None:
    """Fail in one line when `host:port` cannot be bound here (taken, or not a local address).

    Serve's proxy binds it later, after Ray and the models start; this turns its retries into one
    error up front. The socket is closed at once: the port is checked, not reserved.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            probe.bind(address)
    except OSError as error:
        raise ConfigError(f"command line: port: cannot listen on {host}:{port} ({error.strerror or error}); "
                          "choose another --port or --host") from None


def serve(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="Target model directory or hub id; `toy-teacher` for the toy teacher.")] = None,
    draft: Annotated[str | None, typer.Option(help="Draft model (e.g. the pruned, self-distilled target).")] = None,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        help="Require `Authorization: Bearer KEY` with this key (visible in `ps`: prefer --api-key-env or --api-key-file).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Read the API key from this environment variable.")] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="Read the API key from this file (one line).")] = None,
    k: Annotated[int, typer.Option(help="Tokens proposed by the draft per step.")] = 4,
    engine: Annotated[str, typer.Option(help="hf (sdd_ray's decoder) or vllm (ray.serve.llm; vLLM's CUDA or CPU build).")] = "hf",
    model_name: Annotated[str | None, typer.Option(help="Model name clients use (default: target dir name).")] = None,
    replicas: Annotated[int, typer.Option(help="Engine replicas, each holding the pair.")] = 1,
    max_tokens_limit: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
    device: Annotated[str, typer.Option(help="vllm: auto, cpu (vLLM's CPU build) or gpu.")] = "auto",
    verify_prompts: Annotated[int, typer.Option(
        help="vllm: prompts on which start-up checks greedy output against the target's own (0: off).")] = 3,
    max_model_len: Annotated[int | None, typer.Option(help="vllm: context length to allocate (default: the model's).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML ServeConfig; the flags given override it.")] = None,
) -> None:
    """Serve the target with the draft as its speculative decoder, OpenAI-compatible, on Ray Serve."""
    from ray import serve as ray_serve

    cfg = stage_config(ctx, ServeConfig, convert={"target": model_spec, "draft": model_spec},
                       skip=(*NOT_CONFIG, "api_key", "api_key_env", "api_key_file"))
    key = resolve_api_key(api_key, api_key_env, api_key_file)
    if key is not None:
        cfg.api_key = key
    # Each of these fails here in one line, not after Ray, Serve and the models start.
    check_model_exists(cfg.target)
    check_model_exists(cfg.draft)
    check_vocabularies(cfg)
    if not os.environ.get("RAY_ADDRESS", "").startswith("ray://"):  # a Ray client's proxy is on another machine
        check_port_free(cfg.host, cfg.port)
    url = start(cfg)
    console.print(f"serving {cfg.served_name!r} ({cfg.engine}, k={cfg.k}) on {url}/v1")
    try:
        while True:
            time.sleep(3600)
    finally:
        ray_serve.shutdown()


def start(cfg, ray_address: str | None = None, app_name: str = "sdd-ray") -> str:
    """Start Serve and the app of `cfg` (joining or starting Ray); returns the base URL once it answers.

    With `--engine vllm` the served greedy text is first compared with the target's own
    (`sdd_ray.serve.greedy_check`): a mismatch shuts the app down and raises, naming the setting to change.
    """
    from ray import serve as ray_serve

    connect(ray_address)
    if cfg.engine == "vllm":
        application = build_vllm_app(cfg)  # after ray.init: ray.serve.llm reads the runtime context
    else:
        from sdd_ray.serve.app import build_app

        application = build_app(cfg)
    ray_serve.start(http_options={"host": cfg.host, "port": cfg.port})
    ray_serve.run(application, name=app_name, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if cfg.host in ('0.0.0.0', '::') else cfg.host}:{cfg.port}"
    if cfg.engine == "vllm" and cfg.verify_prompts:
        try:
            checks = verify_greedy_identity(cfg, url)
        except BaseException:
            ray_serve.shutdown()
            raise
        console.print(f"greedy output identical to the target's own on {len(checks)} prompts")
    return url
