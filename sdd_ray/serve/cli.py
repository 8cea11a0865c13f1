"""`sdd-ray serve`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from sdd_ray.cli_utils import console


def resolve_api_key(value: str | None) -> str | None:
    """`--api-key`: the name of a set environment variable (its value is used), or the key itself.

    A value shaped like a variable name (`SDD_API_KEY`) that is not set is an error rather than a
    key, so a forgotten `export` does not silently make the variable's name the password.
    """
    if not value:
        return None
    if value in os.environ:
        return os.environ[value]
    if re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
        from sdd_ray.config import ConfigError

        raise ConfigError(f"command line: api_key: environment variable {value} is not set")
    return value


def serve(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="Target model directory or hub id; `toy-teacher` for the toy teacher.")] = None,
    draft: Annotated[str | None, typer.Option(help="Draft model (e.g. the pruned, self-distilled target).")] = None,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        help="Require `Authorization: Bearer KEY`; give the key or the name of an environment variable holding it.")] = None,
    k: Annotated[int, typer.Option(help="Tokens proposed by the draft per step.")] = 4,
    engine: Annotated[str, typer.Option(help="hf (sdd_ray's decoder, CPU/GPU) or vllm (ray.serve.llm, GPU).")] = "hf",
    model_name: Annotated[str | None, typer.Option(help="Model name clients use (default: target dir name).")] = None,
    replicas: Annotated[int, typer.Option(help="Engine replicas, each holding the pair.")] = 1,
    max_tokens_limit: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
    config: Annotated[Path | None, typer.Option(help="YAML ServeConfig; the flags given override it.")] = None,
) -> None:
    """Serve the target with the draft as its speculative decoder, OpenAI-compatible, on Ray Serve."""
    from ray import serve as ray_serve

    from sdd_ray.cli_utils import model_spec, stage_config
    from sdd_ray.models import check_model_exists
    from sdd_ray.runtime import connect
    from sdd_ray.serve.config import ServeConfig

    cfg = stage_config(ctx, ServeConfig, convert={"target": model_spec, "draft": model_spec, "api_key": resolve_api_key})
    check_model_exists(cfg.target)  # a bad path fails here in one line, not after Ray and Serve start
    check_model_exists(cfg.draft)
    if cfg.engine == "vllm":
        from sdd_ray.serve.vllm_app import build_vllm_app

        application = build_vllm_app(cfg)
    else:
        from sdd_ray.serve.app import build_app

        application = build_app(cfg)
    connect()
    ray_serve.start(http_options={"host": cfg.host, "port": cfg.port})
    console.print(f"serving {cfg.served_name!r} ({cfg.engine}, k={cfg.k}) on http://{cfg.host}:{cfg.port}/v1")
    ray_serve.run(application, name="sdd-ray", route_prefix="/", blocking=True)
