"""Run the speculative decoding measurement and write `specdec.json`.

Drafts are measured one at a time: each is loaded beside the target, decodes every prompt interleaved
prompt by prompt with a target-only run (so that CPU contention and thermal drift hit both alike, and
each speed-up is against a baseline measured alongside it), and is freed before the next loads. One
GPU then holds the target and one draft, not the target and every draft (an 8B target and three
pruned drafts: ~52 GiB in bf16).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from sdd_ray.data import DataSpec, capped, iter_records
from sdd_ray.io import write_json
from sdd_ray.models import load_model, load_tokenizer
from sdd_ray.prompts import prompt_token_ids, stop_token_ids
from sdd_ray.specdec.config import SpecDecConfig
from sdd_ray.specdec.decoding import Sampling

PROMPT_FIELDS = ("prompt", "instruction", "question")
"""File rows give the user's message in the first of these fields (`input` is appended to `instruction`)."""


def load_prompts(spec: DataSpec) -> list[tuple[str, str]]:
    """(instruction, input) pairs from the rows of `spec`: toy rows, JSONL/Parquet files or a hub data set.

    They are user messages: `measure` renders them with the target's chat template (or the plain
    instruction format), as fine-tuning and evaluation do, so drafts are measured on the prompts
    they were tuned on.
    """
    prompts = []
    for i, record in enumerate(iter_records(spec)):
        row = json.loads(record) if isinstance(record, str) else record
        field = next((f for f in PROMPT_FIELDS if isinstance(row.get(f), str) and row[f].strip()), None)
        if field is None:
            raise ValueError(f"{spec.source}: row {i} has no non-empty string field among {list(PROMPT_FIELDS)}")
        prompts.append((row[field], (row.get("input") or "") if field == "instruction" else ""))
    return prompts


def _draft_entry(spec, target, identical: list[bool] | None, num_layers: int) -> dict:
    """One table row's figures: `spec` and `target` are the DecodeMetrics of speculative and target-only decoding."""
    return {
        "num_layers": num_layers,
        "mean_accepted_length": spec.mean_accepted_length,
        "acceptance_rate": spec.acceptance_rate,
        "acceptance_rate_by_position": spec.acceptance_rate_by_position,
        "tokens_per_s_speculative": spec.tokens_per_s,
        "tokens_per_s_target": target.tokens_per_s,
        "speedup": spec.tokens_per_s / target.tokens_per_s if target.tokens_per_s else 0.0,
        # The same ratio in process CPU time: on a shared, oversubscribed CPU the wall-clock ratio
        # swings with other jobs' load; CPU time does much less (single-process, CPU runs only).
        "speedup_cpu_time": spec.tokens_per_cpu_s / target.tokens_per_cpu_s if target.tokens_per_cpu_s else 0.0,
        "outputs_identical": all(identical) if identical is not None else None,
        "identical_prompts": sum(identical) if identical is not None else None,
        "metrics": spec.as_dict(),
    }


def measure(cfg: SpecDecConfig, prompts: list[tuple[str, str]]) -> dict:
    """Decode `prompts` target-only and with each draft; the table of results (see docs/specdec.md)."""
    tokenizer = load_tokenizer(cfg.target)
    target = load_model(cfg.target)
    stops = stop_token_ids(tokenizer, target.generation_config)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.seed)
    encoded = [prompt_token_ids(tokenizer, instruction, input) for instruction, input in prompts]

    table, target_total = [], None
    for name, spec in cfg.drafts.items():
        draft = load_model(spec)
        entry, baseline = _measure_draft(cfg, target, draft, stops, sampling, encoded)
        table.append({"draft": name, "path": spec.path, **entry})
        target_total = baseline if target_total is None else target_total.merge(baseline)
        del draft
        _free_accelerator_memory()
    result = {
        "target": cfg.target.path,
        "target_num_layers": target.config.num_hidden_layers,
        "data": cfg.data.source,
        "prompts": len(prompts),
        "k": cfg.k,
        "max_new_tokens": cfg.max_new_tokens,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed},
        "target_only": target_total.as_dict(),
        "drafts": table,
    }
    if len(table) == 1:
        result.update({key: value for key, value in table[0].items() if key not in ("metrics", "path")})
    return result


def _measure_draft(cfg: SpecDecConfig, target, draft, stops: list[int], sampling, encoded: list[list[int]]):
    """One draft's table row (without its name and path) and the target-only metrics measured alongside it."""
    import torch

    from sdd_ray.specdec.engine import SpeculativeDecoder, target_only_generate

    decoder = SpeculativeDecoder(target, draft, cfg.k, stops)
    for ids in encoded[: cfg.warmup]:
        target_only_generate(target, ids, cfg.max_new_tokens, sampling, stops)
        decoder.generate(ids, cfg.max_new_tokens, sampling)
    target_total = total = None
    identical: list[bool] = []
    with torch.inference_mode():
        for ids in encoded:
            reference, metrics = target_only_generate(target, ids, cfg.max_new_tokens, sampling, stops)
            target_total = metrics if target_total is None else target_total.merge(metrics)
            tokens, metrics = decoder.generate(ids, cfg.max_new_tokens, sampling)
            total = metrics if total is None else total.merge(metrics)
            identical.append(tokens == reference)
    entry = _draft_entry(total, target_total, identical if sampling.greedy else None, draft.config.num_hidden_layers)
    return entry, target_total


def _free_accelerator_memory() -> None:
    """Return a freed draft's memory to the device before the next draft loads."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_specdec(cfg: SpecDecConfig, out: str | Path) -> dict:
    """Measure, write `out` (JSON, atomically) and return the result."""
    prompts = load_prompts(capped(cfg.data, cfg.limit))
    if not prompts:
        raise ValueError(f"{cfg.data.source}: no prompts")
    result = measure(cfg, prompts)
    write_json(result, out)
    return result
