"""A bounded loopback load test of `sdd-ray serve`, the own engine and vLLM side by side.

    .venv-vllm/bin/python benchmarks/serve_load.py --target T --draft D [--engines hf vllm] \
        [--concurrency 1 4 16] [--requests 16]

For each engine in turn: starts the app on a 127.0.0.1 port held for the run (same target, draft, k and
prompts; `--engine vllm` runs its start-up greedy check), then for each concurrency level
sends `max(--requests, 2 x concurrency)` greedy completions (half streamed) from that many client
threads and records requests/s, p50/p99 latency and errors; then four malformed requests that must
get 4xx; then stops the app. The acceptance of each engine over its load phase comes from the
difference of its `/metrics` counters before and after, so greedy-check and warm-up requests do not count
and both engines are measured on the same requests. Without vLLM installed only `hf` runs.
Writes benchmarks/results/serve_load.json. Loopback only; every request has a timeout and each
level stops sending after `--deadline-s`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COUNTERS = ("requests", "prompt_tokens", "new_tokens", "drafts", "draft_tokens", "accepted_tokens")
BAD_BODIES = [b"{oops", b'{"model": "nope", "prompt": "x"}', b'{"model": "bench", "prompt": ""}',
              b'{"model": "bench", "prompt": "x", "max_tokens": 100000}']


def start_ray(attempts: int = 3) -> None:
    """A private local 2-CPU Ray; retried because Ray gives a raylet only 30 s to register, which a loaded
    shared machine can miss."""
    import ray

    from sdd_ray.runtime import connect

    for attempt in range(attempts):
        try:
            connect(num_cpus=2, log_to_driver=False)
            return
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception for this timeout
            if "timed out during startup" not in str(error) or attempt == attempts - 1:
                raise
            ray.shutdown()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_prompts(target: str, source: str, count: int) -> list[str]:
    """`count` user questions from `source` (`sdd_ray.specdec.run.load_prompts`), rendered for the target."""
    from sdd_ray.data import DataSpec
    from sdd_ray.models import load_tokenizer
    from sdd_ray.prompts import render_prompt
    from sdd_ray.specdec.run import load_prompts as questions

    tokenizer = load_tokenizer(target)
    rows = questions(DataSpec(source=source, split="test", limit=count))
    return [render_prompt(tokenizer, instruction, input) for instruction, input in rows]


def send(base: str, prompt: str, max_tokens: int, stream: bool, deadline: float) -> tuple[float, int, str]:
    """(latency, HTTP status or -1 when past the deadline, error kind) of one greedy completion."""
    import httpx

    if time.perf_counter() > deadline:
        return 0.0, -1, "skipped"
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    start = time.perf_counter()
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            if stream:
                with client.stream("POST", "/v1/completions", json=body) as response:
                    lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                    ok = response.status_code == 200 and lines and lines[-1] == "data: [DONE]"
                    status = response.status_code if ok else 599
            else:
                status = client.post("/v1/completions", json=body).status_code
    except httpx.HTTPError as error:
        return time.perf_counter() - start, 0, type(error).__name__
    return time.perf_counter() - start, status, ""


def level(base: str, prompts: list[str], concurrency: int, count: int, max_tokens: int, deadline_s: float) -> dict:
    """One concurrency level: requests/s, p50/p99 latency and errors."""
    deadline = time.perf_counter() + deadline_s
    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda i: send(base, prompts[i % len(prompts)], max_tokens, i % 2 == 1, deadline),
                                range(count)))
    wall = time.perf_counter() - wall
    done = [r for r in results if r[1] != -1]
    latencies = [latency for latency, status, _ in done if status == 200]
    errors = [status or error for _, status, error in done if status != 200]
    return {
        "concurrency": concurrency, "requests_sent": len(done), "requests_ok": len(latencies), "errors": len(errors),
        "error_kinds": sorted({str(e) for e in errors}), "wall_s": wall,
        "requests_per_s": len(latencies) / wall if wall else 0.0,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
    }


def acceptance(before: dict, after: dict) -> dict:
    """The load phase's speculative counters (after - before) and their rates, vLLM's definitions."""
    delta = {key: after[key] - before[key] for key in COUNTERS}
    delta["mean_accepted_length"] = 1 + delta["accepted_tokens"] / delta["drafts"] if delta["drafts"] else 1.0
    delta["acceptance_rate"] = delta["accepted_tokens"] / delta["draft_tokens"] if delta["draft_tokens"] else 0.0
    return delta


def run_engine(engine: str, args, prompts: list[str]) -> dict:
    """`engine`'s app on a loopback port held for the whole run (see `sdd_ray.testing.ports`)."""
    from sdd_ray.config import validate_config
    from sdd_ray.serve.config import ServeConfig
    from sdd_ray.testing.ports import reserved_port

    with reserved_port() as port:
        cfg = validate_config(ServeConfig, {
            "target": {"path": args.target}, "draft": {"path": args.draft}, "model_name": "bench", "k": args.k,
            "port": port, "engine": engine, "max_ongoing_requests": max(args.concurrency) * 2, "device": "cpu",
            "max_model_len": 1024 if engine == "vllm" else None,
        })
        return measure_engine(cfg, args, prompts)


def measure_engine(cfg, args, prompts: list[str]) -> dict:
    """Start the app of `cfg`, load it level by level, stop it; the engine's figures."""
    import httpx
    from ray import serve

    from sdd_ray.serve.cli import start

    engine = cfg.engine
    started = time.perf_counter()
    base = start(cfg, app_name=f"sdd-ray-bench-{engine}")
    startup_s = time.perf_counter() - started
    try:
        send(base, prompts[0], args.max_tokens, False, float("inf"))  # warm-up
        before = httpx.get(f"{base}/metrics", timeout=60).json()["speculative"]
        levels = []
        for c in args.concurrency:
            levels.append(level(base, prompts, c, max(args.requests, 2 * c), args.max_tokens, args.deadline_s))
            print(engine, json.dumps(levels[-1]), file=sys.stderr, flush=True)
        after = httpx.get(f"{base}/metrics", timeout=60).json()["speculative"]
        bad_status = [httpx.post(f"{base}/v1/completions", content=b, timeout=60).status_code for b in BAD_BODIES]
    finally:
        serve.shutdown()
    return {"engine": engine, "startup_s": startup_s, "levels": levels, "acceptance": acceptance(before, after),
            "bad_requests_status": bad_status, "bad_requests_all_4xx": all(400 <= s < 500 for s in bad_status)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="model spec (`smollm2-135m`, a checkpoint directory)")
    parser.add_argument("--draft", required=True)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--prompts", default=str(ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"),
                        help="questions: a JSONL/Parquet file or `toy:all`")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16, help="per concurrency level (at least 2 x concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--deadline-s", type=float, default=300.0, help="per level: stop sending after this long")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()

    import ray

    from sdd_ray.models import as_spec

    args.target, args.draft = as_spec(args.target).path, as_spec(args.draft).path
    engines = args.engines
    if "vllm" in engines:
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("vLLM is not installed here: running the hf engine only", file=sys.stderr)
            engines = [e for e in engines if e != "vllm"]
    prompts = load_prompts(args.target, args.prompts, args.num_prompts)
    result = {
        "benchmark": "serve_load",
        "command": " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]),
        "target": args.target, "draft": args.draft, "k": args.k, "max_tokens": args.max_tokens,
        "prompts": f"{args.prompts} (first {args.num_prompts}, chat template)", "streamed_fraction": 0.5,
        "engines": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start_ray()
    try:
        for engine in engines:
            result["engines"].append(run_engine(engine, args, prompts))
            tmp = args.out.with_suffix(".json.tmp")  # after each engine: a cut run keeps what it measured
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(args.out)
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
