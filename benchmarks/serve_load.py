"""A bounded loopback load test of the Ray Serve app (`sdd-ray serve`).

    .venv/bin/python benchmarks/serve_load.py [--target toy-teacher] [--requests 48] [--concurrency 4]

Starts the app on a free 127.0.0.1 port (target + draft, by default the toy teacher and the teacher
with a third of its layers removed), sends `--requests` completions from `--concurrency` client
threads (half streamed), plus a few malformed ones that must get 4xx, and reports requests/s,
p50/p99 latency, error counts and the server's aggregated speculative metrics. Same-run baseline:
the same requests decoded in this process, one at a time, with no HTTP or Ray in between, which
gives the serving overhead. Writes benchmarks/results/serve_load.json. Loopback only; every request
has a timeout and the run is bounded by `--requests` and `--deadline-s`.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def prepare_pair(target: str, draft: str | None, workdir: Path) -> tuple[str, str, str]:
    """(target path, draft path, description); the default draft is the target minus a middle block."""
    from sdd_ray.models import TOY_TEACHER, as_spec, load_model, load_tokenizer, save_model

    if target == "toy-teacher" and not (TOY_TEACHER / "config.json").is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_tiny_llama

        t = make_tiny_llama(workdir / "target", num_layers=6, seed=0)
        d = make_tiny_llama(workdir / "draft", num_layers=2, seed=1)
        return str(t), str(d), "random 6-layer target, random 2-layer draft"
    target = as_spec(target).path
    if draft:
        return target, draft, f"{target} / {draft}"
    from sdd_ray.prune.surgery import contiguous_block, remove_layers

    model = load_model(target)
    layers = model.config.num_hidden_layers
    block = contiguous_block(layers // 3, layers // 3)
    out = save_model(remove_layers(model, block), load_tokenizer(target), workdir / "draft")
    return target, str(out), f"{target} / itself without layers {block[0]}..{block[-1]} (no fine-tuning)"


def start_ray(attempts: int = 3) -> None:
    """A local 2-CPU Ray; retried because Ray gives a raylet only 30 s to register, which a loaded
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="toy-teacher")
    parser.add_argument("--draft", default=None)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--deadline-s", type=float, default=150.0, help="stop sending after this long")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()

    import httpx
    import ray
    import torch
    from ray import serve

    from sdd_ray.config import validate_config
    from sdd_ray.data import DataSpec
    from sdd_ray.prompts import instruction_prompt
    from sdd_ray.serve.app import build_app
    from sdd_ray.serve.config import ServeConfig
    from sdd_ray.specdec.run import load_prompts

    torch.set_num_threads(1)
    prompts = [instruction_prompt(instruction, input) for instruction, input in load_prompts(DataSpec(source="toy:all", split="test", limit=24))]
    with tempfile.TemporaryDirectory() as workdir:
        target, draft, pair = prepare_pair(args.target, args.draft, Path(workdir))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = validate_config(ServeConfig, {
            "target": {"path": target}, "draft": {"path": draft}, "model_name": "bench", "k": args.k,
            "port": port, "max_ongoing_requests": args.concurrency * 2,
        })
        start_ray()
        started = time.perf_counter()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name="sdd-ray-bench", route_prefix="/", blocking=False)
        startup_s = time.perf_counter() - started
        base = f"http://127.0.0.1:{port}"
        deadline = time.perf_counter() + args.deadline_s

        def one(i: int) -> tuple[float, int, str]:
            if time.perf_counter() > deadline:
                return 0.0, -1, "skipped"
            body = {"model": "bench", "prompt": prompts[i % len(prompts)], "max_tokens": args.max_tokens,
                    "temperature": 0, "stream": i % 2 == 1}
            start = time.perf_counter()
            try:
                with httpx.Client(base_url=base, timeout=60) as client:
                    if body["stream"]:
                        with client.stream("POST", "/v1/completions", json=body) as response:
                            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                            ok = response.status_code == 200 and lines[-1] == "data: [DONE]"
                            status = response.status_code if ok else 599
                    else:
                        status = client.post("/v1/completions", json=body).status_code
            except httpx.HTTPError as error:
                return time.perf_counter() - start, 0, type(error).__name__
            return time.perf_counter() - start, status, ""

        try:
            one(0)  # warm-up
            wall = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - wall
            bad_bodies = [b"{oops", b'{"model": "nope", "prompt": "x"}', b'{"model": "bench", "prompt": ""}',
                          b'{"model": "bench", "prompt": "x", "max_tokens": 100000}']
            bad_status = [httpx.post(f"{base}/v1/completions", content=b, timeout=30).status_code for b in bad_bodies]
            server_metrics = httpx.get(f"{base}/metrics", timeout=30).json()
        finally:
            serve.shutdown()
            ray.shutdown()

        # Same-run baseline: the same requests in-process, sequential, no HTTP/Ray.
        from sdd_ray.models import load_model, load_tokenizer
        from sdd_ray.specdec.engine import SpeculativeDecoder

        tokenizer = load_tokenizer(target)
        decoder = SpeculativeDecoder(load_model(target), load_model(draft), args.k, tokenizer.eos_token_id)
        sent = [i for i, (_, status, _) in enumerate(results) if status != -1]
        inproc = []
        for i in sent:
            start = time.perf_counter()
            decoder.generate(tokenizer(prompts[i % len(prompts)]).input_ids, args.max_tokens)
            inproc.append(time.perf_counter() - start)

    done = [(latency, status, error) for latency, status, error in results if status != -1]
    latencies = [latency for latency, status, _ in done if status == 200]
    errors = [status or error for _, status, error in done if status != 200]
    result = {
        "benchmark": "serve_load",
        "command": " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]),
        "pair": pair,
        "k": args.k,
        "requests_sent": len(done),
        "requests_ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted({str(e) for e in errors}),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "streamed_fraction": 0.5,
        "startup_s": startup_s,
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
        "bad_requests_status": bad_status,
        "bad_requests_all_4xx": all(400 <= s < 500 for s in bad_status),
        "baseline_in_process_sequential": {
            "requests_per_s": len(inproc) / sum(inproc),
            "latency_p50_s": statistics.median(inproc),
        },
        "throughput_vs_in_process_sequential": (len(latencies) / wall) / (len(inproc) / sum(inproc)),
        "server_metrics": server_metrics,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "server_metrics"}, indent=2))


if __name__ == "__main__":
    main()
