"""Pretraining the toy teacher: a 12-layer Llama trained from scratch on the toy task mix.

The teacher learns three things: to answer each task family in its own style, to rewrite a
reference answer in that style when given a distillation template (so that self-data distillation
has a teacher to call), and the knowledge base as cloze answers (for log-likelihood scoring).
Loss is on response tokens only; batches are bucketed by length to limit padding.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from sdd_ray.evaluate.builtin import evaluate_builtin
from sdd_ray.finetune.data import collate
from sdd_ray.prompts import instruction_prompt, load_template, rewrite_prompt
from sdd_ray.toy.tasks import GENERATORS, KB, TASK_KIND

TEACHER_DIR = Path(__file__).parent / "teacher"

# Share of each document type in the pretraining mix.
MIX = {"arith": 0.40, "facts": 0.18, "cloze": 0.10, "instruct": 0.14, "rewrite": 0.18}
REWRITE_TASKS = {"arith": 0.5, "facts": 0.25, "instruct": 0.25}


class TeacherTrainConfig(BaseModel):
    """How the toy teacher is trained (see `jobs/train_toy_teacher.py`)."""

    steps: int = Field(3000, gt=0)
    batch_size: int = Field(32, gt=0)
    bf16: bool = True  # autocast on CPU: ~1.45x faster per step on AMX cores; weights stay fp32
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    threads: int = Field(2, gt=0)
    eval_every: int = Field(250, gt=0)
    eval_limit: int = Field(200, gt=0)
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = Field(12, ge=12)
    num_attention_heads: int = 2
    head_dim: int = 64  # vLLM's CPU attention needs a head size of 64 or more
    init_from: str | None = None
    """Continue from this checkpoint's weights (a fresh optimizer and schedule) instead of from scratch."""


def model_config(cfg: TeacherTrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pretrain_document(rng: random.Random) -> tuple[str, str]:
    """One (prompt, response) pair of the pretraining mix."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if kind == "cloze":
        relation, country = rng.choice(KB.RELATIONS), rng.choice(KB.countries)
        return instruction_prompt(KB.question(relation, country)), KB.value(relation, country)
    if kind == "rewrite":
        task = rng.choices(list(REWRITE_TASKS), weights=list(REWRITE_TASKS.values()))[0]
        row = GENERATORS[task](rng)
        template = load_template(TASK_KIND[task])
        return rewrite_prompt(template, row["instruction"], row["reference_response"]), row["teacher_response"]
    row = GENERATORS[kind](rng)
    return instruction_prompt(row["instruction"]), row["teacher_response"]


def encode_document(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) for one document, ending with EOS."""
    prompt_ids = tokenizer(prompt).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids


def bucketed_batches(tokenizer, rng: random.Random, batch_size: int, pool: int = 8):
    """Endless batches; each pool of `pool` batches is sorted by length to limit padding."""
    while True:
        docs = [encode_document(tokenizer, *pretrain_document(rng)) for _ in range(batch_size * pool)]
        docs.sort(key=lambda d: len(d[0]))
        batches = [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield collate(batch, tokenizer.pad_token_id)


def lr_at(step: int, cfg: TeacherTrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_teacher(cfg: TeacherTrainConfig, out: Path, log=print) -> dict:
    """Train the toy teacher from scratch and save it as an HF checkpoint in `out`."""
    from transformers import LlamaForCausalLM

    from sdd_ray.toy.tokenizer import build_tokenizer

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    tokenizer = build_tokenizer()
    if cfg.init_from:
        model = LlamaForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(model_config(cfg, tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"toy teacher: {n_params / 1e6:.2f}M parameters, {cfg.steps} steps of {cfg.batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    history, evals = [], []
    start = time.time()
    batches = bucketed_batches(tokenizer, rng, cfg.batch_size)
    for step in range(cfg.steps):
        model.train()
        input_ids, mask, labels = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(round(loss.item(), 4))
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr_at(step, cfg):.2e} {time.time() - start:.0f}s")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()
            scores = evaluate_builtin(model, tokenizer, ["arith", "facts", "instruct"], cfg.eval_limit)
            summary = {t: round(r["value"], 3) for t, r in scores.items()}
            summary["facts_letter"] = round(scores["facts"]["acc_letter"], 3)
            evals.append({"step": step + 1, "wall_s": round(time.time() - start, 1), **summary})
            log(f"eval at step {step + 1}: {summary}")
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
    report = {
        "config": cfg.model_dump(),
        "parameters": n_params,
        "wall_s": round(time.time() - start, 1),
        "loss": history,
        "evals": evals,
    }
    (out / "training.json").write_text(json.dumps(report, indent=1))
    return report
