"""The two training strategies behind one small interface: DeepSpeed ZeRO and torch DDP.

Each engine does forward/backward with gradient accumulation, the optimizer + scheduler step with
clipping, saving/loading its resumable state into a directory (every rank writes its own files, so
Ray Train can merge them into one checkpoint), and gathering the full weights for export. Plain
torch and DeepSpeed, no Ray.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from sdd_ray.finetune.config import FinetuneConfig

STATE_TAG = "state"  # DeepSpeed checkpoint tag: one fixed name, each Ray checkpoint holds one state


def cosine_schedule(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier for optimizer step `s`: linear warm-up, then cosine decay to `min_ratio`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(model, cfg: FinetuneConfig, total_steps: int):
    """torch AdamW over the trainable parameters and its cosine schedule.

    DeepSpeed takes this client optimizer too: its own CPU Adam needs a JIT C++ build (minutes).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, warmup, cfg.min_lr_ratio))
    return optimizer, scheduler


def deepspeed_config(cfg: FinetuneConfig, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed JSON config for our settings."""
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,  # the client torch AdamW
        "zero_force_ds_cpu_optimizer": False,  # ...also with optimizer offload
        "steps_per_print": 2**31,
    }


class DeepSpeedEngine:
    """ZeRO-2/3 through `deepspeed.initialize`; DeepSpeed handles accumulation, clipping and the schedule."""

    def __init__(self, model, cfg: FinetuneConfig, total_steps: int, bf16: bool):
        import deepspeed

        deepspeed.utils.logger.setLevel(logging.WARNING)
        optimizer, scheduler = make_optimizer(model, cfg, total_steps)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(cfg, dist.get_world_size(), bf16),
        )
        self.zero_stage = cfg.zero_stage
        self.device = self.engine.device

    def loss(self, input_ids, mask, labels):
        return self.engine(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    def backward(self, loss, boundary: bool) -> None:
        self.engine.backward(loss)
        self.engine.step()  # a no-op for the optimizer until the accumulation boundary

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=STATE_TAG)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=STATE_TAG)
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed state {STATE_TAG!r} in the checkpoint")

    def export_state_dict(self) -> dict | None:
        """All weights on rank 0's CPU (None elsewhere); ZeRO-3 gathers them one submodule at a time."""
        if self.zero_stage == 3:
            import deepspeed

            return export_state_dict(self.engine.module, partial(deepspeed.zero.GatheredParameters, modifier_rank=None))
        return export_state_dict(self.engine.module)


class DDPEngine:
    """torch DistributedDataParallel with AdamW, no_sync accumulation and norm clipping."""

    def __init__(self, model, cfg: FinetuneConfig, total_steps: int, device: torch.device, bf16: bool):
        from torch.nn.parallel import DistributedDataParallel

        self.module = model.to(device)
        self.device = device
        self.model = DistributedDataParallel(self.module, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer, self.scheduler = make_optimizer(self.module, cfg, total_steps)
        self.grad_accum = cfg.grad_accum
        self.max_grad_norm = cfg.max_grad_norm
        self.bf16 = bf16

    def loss(self, input_ids, mask, labels):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    def backward(self, loss, boundary: bool) -> None:
        if boundary:
            (loss / self.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            with self.model.no_sync():  # gradients are all-reduced once, at the boundary
                (loss / self.grad_accum).backward()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path) -> None:
        """Rank 0 writes the trainable weights (safetensors), optimizer and scheduler states."""
        from safetensors.torch import save_file

        if dist.get_rank() != 0:
            return
        trainable = {n: p.detach().cpu().contiguous() for n, p in self.module.named_parameters() if p.requires_grad}
        save_file(trainable, str(directory / "trainable.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        weights = load_file(str(directory / "trainable.safetensors"), device=str(self.device))
        missing = set(weights) - {n for n, _ in self.module.named_parameters()}
        if missing:
            raise KeyError(f"{directory}: checkpoint weights not in the model: {sorted(missing)[:5]}")
        self.module.load_state_dict(weights, strict=False)
        states = torch.load(directory / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])

    def export_state_dict(self) -> dict | None:
        return export_state_dict(self.module)


def export_state_dict(module, gather=None) -> dict | None:
    """The module's state on rank 0's CPU, each tensor in its training dtype; None on other ranks.

    At most one copy of the weights: a tensor already on the CPU is shared with the module, not
    cloned (the export runs after the final checkpoint, when nothing trains any more). `gather`
    (ZeRO-3: `GatheredParameters`) is entered for one submodule's own parameters at a time, so a
    partitioned model is never gathered whole; a gathered tensor is copied, since its storage is
    released on exit. A parameter shared by two modules (tied embeddings) is one tensor under both names.
    """
    keys = set(module.state_dict(keep_vars=True))  # parameters and persistent buffers, as saved
    rank0 = dist.get_rank() == 0
    state: dict = {}
    by_id: dict[int, torch.Tensor] = {}
    for prefix, submodule in module.named_modules():
        own = [*submodule.named_parameters(recurse=False), *submodule.named_buffers(recurse=False)]
        with gather([p for _, p in own if isinstance(p, torch.nn.Parameter)]) if gather else nullcontext():
            if not rank0:
                continue
            for name, tensor in own:
                key = f"{prefix}.{name}" if prefix else name
                if key not in keys:
                    continue
                if id(tensor) not in by_id:
                    by_id[id(tensor)] = tensor.detach().to("cpu", copy=gather is not None)
                state[key] = by_id[id(tensor)]
    return state if rank0 else None


def build_engine(model, cfg: FinetuneConfig, total_steps: int, device: torch.device, bf16: bool):
    if cfg.strategy == "deepspeed":
        return DeepSpeedEngine(model, cfg, total_steps, bf16)
    return DDPEngine(model, cfg, total_steps, device, bf16)
