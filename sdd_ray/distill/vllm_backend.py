"""The `vllm` backend: `ray.data.llm`'s vLLM processor, configured from a `DistillConfig`.

The production path on GPU clusters: each of `num_workers` engines holds the teacher sharded over
`tensor_parallel_size` GPUs, and Ray Data streams batches of `batch_size` prompts to them. Nothing
here imports vLLM; `ray.data.llm` imports it inside the engine actors.

On CPU-only nodes (`vllm.device: cpu`, or `auto` on a cluster without GPUs; a CPU build of vLLM)
each engine is given a CPU bundle instead of a GPU: without it, Ray Data LLM reserves
`num_gpus = tp * pp` for the engine actor and a CPU-only cluster never schedules it.

vLLM is handed token ids, not text: `PromptEncoder` renders and tokenizes each prompt as the hf
backend does (`as_chat`, then `sdd_ray.prompts.encode_prompt`). ray.data.llm's own chat-template and
tokenize stages stay off: its tokenize stage adds the tokenizer's special tokens to text whose chat
template already wrote them, so Llama-3.1 prompts would start `<|begin_of_text|>` twice and the two
backends would feed the teacher different prompts.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pyarrow as pa

from sdd_ray.config import ModelSpec
from sdd_ray.distill.config import DistillConfig, resolve_engine_device
from sdd_ray.distill.rewrite import as_chat
from sdd_ray.distill.schema import GENERATED, PREPARED, to_table
from sdd_ray.models import load_tokenizer
from sdd_ray.prompts import encode_prompt
from sdd_ray.runtime import cluster_gpus
from sdd_ray.vllm_engine import engine_args

# Set by ray.data.llm on rows whose inference failed (with `should_continue_on_error`): "Type: message".
# Such rows skip the later stages, so they carry no `generated_text` (ray/llm/_internal/batch/stages).
ERROR_COLUMN = "__inference_error__"
PROMPT_TOO_LONG = "is longer than the maximum model length"  # vLLM's input validation error


def engine_kwargs(cfg: DistillConfig, cluster_gpus: float) -> dict[str, Any]:
    """`vllm.EngineArgs` for the teacher (`sdd_ray.vllm_engine`: CPU-correct defaults), then `cfg.vllm.engine_kwargs`.

    The device is the cluster's (`resolve_engine_device`), not the driver's: a driver on a CPU head
    node still places its engines on GPU workers.
    """
    options = resolve_engine_device(cfg.vllm, cluster_gpus)
    return engine_args(
        cfg.teacher, device=options.device, max_model_len=options.max_model_len,
        gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,  # None: engine_args' per-device default
        tensor_parallel_size=options.tensor_parallel_size,
        pipeline_parallel_size=options.pipeline_parallel_size, overrides=options.engine_kwargs,
    )


def processor_config(cfg: DistillConfig, cluster_gpus: float):
    """The `ray.data.llm.vLLMEngineProcessorConfig` of `cfg` on a cluster with `cluster_gpus` GPUs
    (raises ImportError without ray[llm])."""
    from ray.data.llm import vLLMEngineProcessorConfig

    options = resolve_engine_device(cfg.vllm, cluster_gpus)
    extra: dict[str, Any] = {}
    if options.device == "cpu":
        bundles = [{"CPU": options.cpus_per_engine}] * (options.tensor_parallel_size * options.pipeline_parallel_size)
        extra["placement_group_config"] = {"bundles": bundles}
    if options.accelerator_type:
        extra["accelerator_type"] = options.accelerator_type
    return vLLMEngineProcessorConfig(
        model_source=cfg.teacher.path,
        engine_kwargs=engine_kwargs(cfg, cluster_gpus),
        concurrency=cfg.num_workers,
        batch_size=cfg.batch_size,
        max_concurrent_batches=options.max_concurrent_batches,
        should_continue_on_error=True,  # one bad row must not kill the job
        # The CPU stages around the engine are actor pools too; left at Ray's default of one CPU
        # each, they and the engine ask for more CPUs than a small machine has, and nothing runs.
        chat_template_stage={"enabled": False},  # `PromptEncoder` renders and tokenizes: one BOS
        tokenize_stage={"enabled": False},
        detokenize_stage={"enabled": True, "num_cpus": options.cpus_per_stage},
        **extra,
    )


class PromptEncoder:
    """Prepared rows with `prompt` rendered for the teacher (`as_chat`) and `tokenized_prompt` its ids
    (`encode_prompt`): the token ids the hf backend generates from, which vLLM then receives as given."""

    def __init__(self, teacher: dict):
        self.tokenizer = load_tokenizer(ModelSpec(**teacher))

    def __call__(self, batch: pa.Table) -> pa.Table:
        prompts = [as_chat(self.tokenizer, prompt) for prompt in batch.column("prompt").to_pylist()]
        ids = pa.array([encode_prompt(self.tokenizer, prompt) for prompt in prompts], pa.list_(pa.int32()))
        batch = batch.set_column(batch.schema.get_field_index("prompt"), "prompt", pa.array(prompts, pa.string()))
        return batch.append_column("tokenized_prompt", ids)


def request(row: dict, max_new_tokens: int) -> dict:
    """An encoded row (`PromptEncoder`) as a vLLM request (greedy), carrying the row's columns along."""
    return {**row, "sampling_params": {"temperature": 0.0, "max_tokens": max_new_tokens}}


def generated_columns(batch: pa.Table, max_new_tokens: int) -> pa.Table:
    """The processor's output rows in the pipeline's generated schema.

    An engine error becomes `generation_error` (a `teacher_failed` row), except a prompt longer than
    the engine's context, which is the input's fault: rejected as too long, as the hf backend does.
    """
    rows = batch.to_pylist()
    for row in rows:
        error = row.get(ERROR_COLUMN) or ""
        if PROMPT_TOO_LONG in error and not row["reject_reason"]:
            row["reject_reason"] = f"prompt too long: {error}"
            error = ""
        generated = int(row.get("num_generated_tokens") or 0)
        row.update(
            teacher_response=(row.get("generated_text") or "").strip() if not error else "",
            truncated=generated >= max_new_tokens,
            prompt_tokens=int(row.get("num_input_tokens") or 0),
            generated_tokens=generated,
            generation_error=str(error),
        )
    return to_table(rows, pa.schema(list(PREPARED) + list(GENERATED)))


def rewrite_with_vllm(ds, cfg: DistillConfig):
    """Generate the rewrites of `ds` (prepared rows) with `ray.data.llm`; returns rows with GENERATED columns."""
    from ray.data.llm import build_processor

    processor = build_processor(
        processor_config(cfg, cluster_gpus()),
        preprocess=partial(request, max_new_tokens=cfg.max_new_tokens),
        preprocess_map_kwargs={"num_cpus": 0.25},
    )
    encoded = ds.map_batches(PromptEncoder, fn_constructor_kwargs={"teacher": cfg.teacher.model_dump()},
                             batch_format="pyarrow", concurrency=1, num_cpus=cfg.vllm.cpus_per_stage)
    return processor(encoded).map_batches(
        generated_columns, fn_kwargs={"max_new_tokens": cfg.max_new_tokens}, batch_format="pyarrow", num_cpus=0.25
    )
