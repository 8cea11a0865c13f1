"""The per-worker training function that Ray Train runs: plain torch + DeepSpeed/DDP.

`train_func(config)` reads everything from its config dict (`{"finetune": FinetuneConfig dump}`).
Ray appears only in `get_dataset_shard`, `get_checkpoint`, `report` and `get_device`. Every
worker reads the whole (small) data set, tokenizes it and takes its slice of one global batch plan
(`sdd_ray.finetune.data.epoch_plan`), so all workers run the same steps in the same order on every
run; a resumed run continues the same plan from the checkpoint's step, with the loss history.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sdd_ray.finetune.config import FinetuneConfig
from sdd_ray.finetune.data import IGNORE_INDEX, DataError, collate, epoch_plan, tokenize_rows, worker_slice
from sdd_ray.finetune.export import apply_lora, export_model
from sdd_ray.models import load_model, load_tokenizer, resolve_dtype

STATE_FILE = "train_state.json"
EXPORT_DIR = "export"  # the final checkpoint holds the HF model here, for the driver to copy out


class InjectedFailure(RuntimeError):
    """Raised on purpose (`fail_at_step`) to test restarts."""


def _peak_memory_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _plan_steps(num_examples: int, cfg: FinetuneConfig, world_size: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    global_batch = cfg.batch_size * world_size
    steps_per_epoch = num_examples // global_batch // cfg.grad_accum
    if steps_per_epoch == 0:
        raise DataError(
            f"{num_examples} usable examples do not fill one optimizer step of "
            f"batch_size x num_workers x grad_accum = {global_batch * cfg.grad_accum} sequences"
        )
    total = steps_per_epoch * cfg.epochs
    return steps_per_epoch, min(total, cfg.max_steps) if cfg.max_steps else total


def _micro_batches(lengths, cfg: FinetuneConfig, step: int, steps_per_epoch: int, rank: int, world: int):
    """This worker's example indices for each micro-batch of optimizer step `step` (0-based)."""
    epoch, within = divmod(step, steps_per_epoch)
    window = 16 if cfg.batch_order == "length" else 1  # one batch per window: composition from the shuffle alone
    plan = epoch_plan(lengths, cfg.batch_size * world, cfg.seed, epoch, window=window)
    first = within * cfg.grad_accum
    return [worker_slice(batch, rank, world) for batch in plan[first : first + cfg.grad_accum]]


def weights_dtype(cfg: FinetuneConfig, device):
    """The dtype the model trains and is exported in: `cfg.model.dtype`, `auto` resolved for `device`."""
    return resolve_dtype(cfg.model.model_copy(update={"device": device.type}))


def uses_bf16(cfg: FinetuneConfig, dtype) -> bool:
    """bf16 compute: weights stored in bfloat16, or mixed precision asked for (GPU `auto`, or `bf16`)."""
    import torch

    if dtype == torch.bfloat16 or cfg.precision == "bf16":
        return True
    return cfg.use_gpu and cfg.precision == "auto" and torch.cuda.is_bf16_supported()


@contextmanager
def zero3_construction(ds_config: dict | None):
    """Within it, `from_pretrained` builds the model under `deepspeed.zero.Init` (partitioned as it loads).

    transformers reads the DeepSpeed config from a global weak reference (`HfDeepSpeedConfig`); it is
    set only around the model's construction, so that later loads (the export's) build plain models.
    """
    if ds_config is None:
        yield
        return
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    deepspeed.init_distributed()  # DeepSpeed's view of Ray Train's process group: without it the config sees 1 worker
    hf_config = HfDeepSpeedConfig(ds_config)
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del hf_config


def _load_model(cfg: FinetuneConfig, dtype, ds_config: dict | None):
    """The model in `dtype` (LoRA-wrapped when asked), on the CPU or, under ZeRO-3, already partitioned.

    It is not moved to the device here: the engines place it (DDP moves it, DeepSpeed ZeRO-2 moves
    it in `initialize`), and under ZeRO-3 `from_pretrained` loads it partitioned across the workers
    (`deepspeed.zero.Init`), so no worker ever holds the whole model. Moving it first would put a
    full copy on every GPU (Ray Train may also show a worker every GPU of its node).
    """
    import torch

    torch.manual_seed(cfg.seed)  # same adapter init on every rank
    spec = cfg.model.model_copy(update={"device": "cpu", "dtype": str(dtype).removeprefix("torch.")})
    zero3 = ds_config if cfg.strategy == "deepspeed" and cfg.zero_stage == 3 else None
    with zero3_construction(zero3):
        model = load_model(spec, eval_mode=False)
        if cfg.gradient_checkpointing:
            # non-reentrant: gradients reach LoRA adapters inside checkpointed layers whose inputs need none
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method == "lora":
            model = apply_lora(model, cfg.lora)
    return model, load_tokenizer(cfg.model)


def _save_state(directory: Path, engine, state: dict, rank: int) -> None:
    import torch

    engine.save(directory)
    torch.save(torch.get_rng_state(), directory / f"rng_rank{rank}.pt")
    if rank == 0:
        (directory / STATE_FILE).write_text(json.dumps(state))


def _load_state(directory: Path, engine, rank: int) -> dict:
    import torch

    engine.load(directory)
    rng = directory / f"rng_rank{rank}.pt"
    if rng.is_file():
        torch.set_rng_state(torch.load(rng, weights_only=True))
    return json.loads((directory / STATE_FILE).read_text())


def _fail_once(cfg: FinetuneConfig, step: int, rank: int) -> None:
    """Testing aid: raise once per run directory after `fail_at_step` (a marker file remembers)."""
    if cfg.fail_at_step != step or rank != 0 or cfg.storage_path is None:
        return
    marker = Path(cfg.storage_path) / cfg.run_name / f".failed_at_{step}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise InjectedFailure(f"injected failure after step {step}")


def train_func(config: dict) -> None:
    """Train one worker's share; rank 0 prints progress, every rank reports to Ray Train."""
    cfg = FinetuneConfig.model_validate(config["finetune"])
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from sdd_ray.finetune.engines import build_engine, deepspeed_config

    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # DeepSpeed and NCCL use the current device
    dtype = weights_dtype(cfg, device)
    bf16 = uses_bf16(cfg, dtype)

    model, tokenizer = _load_model(cfg, dtype, deepspeed_config(cfg, world, bf16))
    rows = list(ray.train.get_dataset_shard("train").iter_rows())
    examples, stats = tokenize_rows(rows, tokenizer, cfg.response_column, cfg.max_length, cfg.overlong)
    if not examples:
        raise DataError(f"no usable rows: {stats.rows} rows, {stats.rejected} rejected {stats.reasons}")
    lengths = [len(ids) for ids, _ in examples]
    steps_per_epoch, total_steps = _plan_steps(len(examples), cfg, world)
    engine = build_engine(model, cfg, total_steps, device, bf16)

    state = {"step": 0, "history": [], "tokens": 0, "train_seconds": 0.0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = _load_state(Path(directory), engine, rank)
        if rank == 0:
            print(f"[finetune] resumed at step {state['step']}/{total_steps}", flush=True)
    if checkpoint is None:
        torch.manual_seed(cfg.seed + 1000 * rank)  # dropout streams; a resumed run restores its saved state

    base = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "rows": stats.rows,
            "used": stats.used, "truncated": stats.truncated, "rejected": stats.rejected,
            "resumed_from_step": state["step"]}
    started, cpu_started = time.perf_counter(), time.process_time()
    step_tokens = torch.zeros(2, dtype=torch.float64)  # (all tokens, supervised tokens) of this step
    start_step, start_seconds, start_tokens = state["step"], state["train_seconds"], state["tokens"]
    for step in range(start_step, total_steps):
        losses = []
        batches = _micro_batches(lengths, cfg, step, steps_per_epoch, rank, world)
        for i, indices in enumerate(batches):
            input_ids, mask, labels = (t.to(engine.device) for t in collate([examples[j] for j in indices],
                                                                             tokenizer.pad_token_id))
            loss = engine.loss(input_ids, mask, labels)
            engine.backward(loss, boundary=i == len(batches) - 1)
            losses.append(loss.detach().float().cpu())
            step_tokens[0] += mask.sum().item()
            step_tokens[1] += (labels != IGNORE_INDEX).sum().item()
        summed = torch.cat([torch.stack(losses).mean().reshape(1), step_tokens.float()]).to(engine.device)
        dist.all_reduce(summed)  # sum over workers: mean loss x world, tokens, supervised tokens
        step_tokens.zero_()
        state["step"] = step + 1
        state["tokens"] += int(summed[1].item())
        state["supervised_tokens"] = state.get("supervised_tokens", 0) + int(summed[2].item())
        state["train_seconds"] = start_seconds + time.perf_counter() - started
        state["history"].append({"step": step + 1, "loss": round(summed[0].item() / world, 6), "lr": engine.lr()})
        done = step + 1 == total_steps
        save = done or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)
        tokens_per_s = (state["tokens"] - start_tokens) / max(1e-9, state["train_seconds"] - start_seconds)
        metrics = {**base, "step": step + 1, "loss": state["history"][-1]["loss"], "lr": engine.lr(),
                   "tokens_per_s": tokens_per_s}
        if rank == 0 and (save or (step + 1) % cfg.log_every == 0):
            print(f"[finetune] step {step + 1}/{total_steps} loss {metrics['loss']:.4f} "
                  f"lr {metrics['lr']:.2e} {tokens_per_s:,.0f} tok/s", flush=True)
        if done:
            break
        if save:
            with tempfile.TemporaryDirectory() as tmp:
                _save_state(Path(tmp), engine, state, rank)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        elif (step + 1) % cfg.log_every == 0:
            ray.train.report(metrics)
        _fail_once(cfg, step + 1, rank)

    base["cpu_seconds"] = time.process_time() - cpu_started
    _finish(cfg, engine, state, base, rank, device, dtype, start_tokens, start_seconds)


def _finish(cfg: FinetuneConfig, engine, state: dict, base: dict, rank: int, device, dtype,
            start_tokens: int, start_seconds: float) -> None:
    """Final checkpoint: the resumable state, the exported HF model and the run's figures."""
    import ray.train
    import torch.distributed as dist

    per_worker = [None] * dist.get_world_size()
    dist.all_gather_object(per_worker, (round(_peak_memory_mib(device), 1), round(base.pop("cpu_seconds"), 3)))
    peaks, cpu = [p for p, _ in per_worker], [c for _, c in per_worker]
    seconds = state["train_seconds"] - start_seconds
    summary = {**base, "step": state["step"], "loss": state["history"][-1]["loss"] if state["history"] else None,
               "tokens_per_s": (state["tokens"] - start_tokens) / seconds if seconds > 0 else 0.0,
               "peak_memory_mib": peaks, "cpu_seconds": cpu,
               "tokens_per_cpu_s": (state["tokens"] - start_tokens) / sum(cpu) if sum(cpu) > 0 else 0.0,
               "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "rss"}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _save_state(directory, engine, state, rank)
        weights = engine.export_state_dict()  # every rank takes part in a ZeRO-3 gather; rank 0 gets them
        if rank == 0:
            export_model(weights, cfg.model, directory / EXPORT_DIR, lora=cfg.lora if cfg.method == "lora" else None,
                         adapter_out=directory / "adapter" if cfg.save_adapter and cfg.method == "lora" else None,
                         dtype=str(dtype).removeprefix("torch."))
            (directory / "summary.json").write_text(json.dumps(summary))
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(tmp))

