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
- `serve.ingress.OpenAIIngress`, the front both engines share (key, validation, prompt, routes),
  with `HFClient` here: it calls the engine with the prompt's token ids and aggregates the engine's
  per-request speculative counters for `/metrics`.

The engine decodes one speculative step at a time on its own thread pool and awaits each step, so
a cancelled request (the client went away) stops at the next step instead of running to the end.

Both use fractional CPUs so that the app fits a 2-CPU machine next to other Ray work.
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from sdd_ray.models import load_model, load_tokenizer
from sdd_ray.prompts import IncrementalDetokenizer, stop_token_ids
from sdd_ray.serve.config import ServeConfig
from sdd_ray.serve.ingress import Job, bind_ingress, cancel_on_exit
from sdd_ray.serve.protocol import STREAM_DONE, chat_body, completion_body, stream_chunk
from sdd_ray.specdec.decoding import DecodeMetrics, Sampling


@serve.deployment(name="speculative-engine")
class SpeculativeEngine:
    """A target/draft pair and its tokenizer; each request decodes on the replica's pool, one step per await."""

    def __init__(self, config: dict):
        import torch

        from sdd_ray.specdec.engine import SpeculativeDecoder

        cfg = ServeConfig.model_validate(config)
        torch.set_num_threads(cfg.torch_threads)
        self.tokenizer = load_tokenizer(cfg.target)
        target = load_model(cfg.target)
        stops = stop_token_ids(self.tokenizer, target.generation_config)
        self.decoder = SpeculativeDecoder(target, load_model(cfg.draft), cfg.k, stops)
        self.pool = ThreadPoolExecutor(cfg.max_ongoing_requests, thread_name_prefix="decode")
        self.in_flight = 0
        self.steps = 0

    async def stream(self, payload: dict) -> AsyncIterator[dict]:
        """{text} deltas, one per target forward pass; the last also has finish_reason, metrics, tokens.

        Each step runs on the pool and is awaited: cancelling the request stops decoding after the
        step in progress.
        """
        loop = asyncio.get_running_loop()
        metrics = DecodeMetrics()
        sampling = Sampling(payload["temperature"], payload["top_p"], payload["seed"])
        steps = self.decoder.stream(payload["prompt_ids"], payload["max_tokens"], sampling, metrics)
        tokens: list[int] = []
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        self.in_flight += 1
        try:
            while (chunk := await loop.run_in_executor(self.pool, next, steps, None)) is not None:
                self.steps += 1
                tokens += chunk.tokens
                event = {"text": detokenizer.push(chunk.tokens)}
                if chunk.finish_reason:
                    event["text"] += detokenizer.finish()
                    event.update(finish_reason=chunk.finish_reason, metrics=metrics.as_dict(), tokens=tokens)
                yield event
        finally:
            self.in_flight -= 1

    async def generate(self, payload: dict) -> dict:
        """{text, finish_reason, metrics}."""
        async for event in self.stream(payload):
            last = event
        return {"text": self.tokenizer.decode(last["tokens"], skip_special_tokens=True),
                "finish_reason": last["finish_reason"], "metrics": last["metrics"]}

    def load(self) -> dict:
        """Requests decoding now and steps decoded since start (how tests see that a cancelled request stopped)."""
        return {"in_flight": self.in_flight, "steps": self.steps}


class HFClient:
    """The ingress's side of `SpeculativeEngine`: OpenAI bodies from its events, counters summed over requests."""

    name = "hf"

    def __init__(self, engine, cfg: ServeConfig):
        self.engine = engine
        self.total = DecodeMetrics(requests=0)

    def _record(self, metrics: dict) -> None:
        self.total = self.total.merge(DecodeMetrics.from_dict({**metrics, "requests": 1}))

    @staticmethod
    def payload(job: Job) -> dict:
        """What `SpeculativeEngine` takes: the prompt's ids and the sampling settings."""
        return {"prompt_ids": job.prompt_ids, "max_tokens": job.max_tokens, "temperature": job.temperature,
                "top_p": job.top_p, "seed": job.seed}

    async def complete(self, job: Job) -> dict:
        async with cancel_on_exit(self.engine.generate.remote(self.payload(job))) as response:
            result = await response
        self._record(result["metrics"])
        build = chat_body if job.chat else completion_body
        return build(job.request_id, job.model, result["text"], result["finish_reason"], result["metrics"])

    async def stream(self, job: Job) -> AsyncIterator[str]:
        async with cancel_on_exit(self.engine.options(stream=True).stream.remote(self.payload(job))) as events:
            first = True
            async for event in events:
                metrics = event.get("metrics")
                if metrics is not None:
                    self._record(metrics)
                yield stream_chunk(job.chat, job.request_id, job.model, event["text"], event.get("finish_reason"),
                                   metrics, first=first)
                first = False
        yield STREAM_DONE

    async def speculative(self) -> dict:
        return self.total.as_dict()


def build_app(cfg: ServeConfig):
    """The Serve application (not yet running): the shared ingress bound to the engine deployment."""
    config = cfg.model_dump(mode="json")
    engine = SpeculativeEngine.options(
        num_replicas=cfg.replicas,
        max_ongoing_requests=cfg.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.engine_num_cpus, "num_gpus": cfg.engine_num_gpus},
    ).bind(config)
    return bind_ingress(HFClient, engine, cfg)
