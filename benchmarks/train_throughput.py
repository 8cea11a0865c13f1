"""Fine-tuning throughput: the Ray Train job vs a plain single-process torch loop, and 1 vs 2 workers.

Same model, same tokenized rows, same batch plan, same AdamW and the same torch threads per worker
(1). Tokens/s counts every non-padding token of the batches trained on, over the training loop
(start-up excluded: the Ray side's worker-group start, model load and data read are reported
separately as end-to-end wall time), and per CPU-second of the training processes, which stays
comparable on a machine shared with other jobs. The plain loop runs before and after the Ray runs. Writes benchmarks/results/train_throughput.json.

    .venv/bin/python benchmarks/train_throughput.py [--model toy-teacher] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
DATA = "toy:arith"


def bench_model(model: str, tmp: Path) -> str:
    """`model`, or a random Llama of the toy teacher's width when the teacher is not committed yet."""
    from sdd_ray.models import TOY_TEACHER

    if model != "toy-teacher" or (TOY_TEACHER / "config.json").is_file():
        return str(TOY_TEACHER) if model == "toy-teacher" else model
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=6,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = tmp / "random_llama"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def plain_loop(model_path: str, rows: int, batch_size: int, steps: int) -> dict:
    """One process, one model, AdamW over the same bucketed batches: what Ray Train has to keep up with."""
    import torch

    from sdd_ray.finetune.data import collate, epoch_plan, tokenize_rows
    from sdd_ray.finetune.trainer import toy_rows
    from sdd_ray.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, eval_mode=False)
    examples, _ = tokenize_rows(toy_rows(DATA, rows), tokenizer, "response", 512, "truncate")
    plan = epoch_plan([len(ids) for ids, _ in examples], batch_size, seed=0, epoch=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, losses = 0, []
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        input_ids, mask, labels = collate([examples[i] for i in plan[step % len(plan)]], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        losses.append(round(loss.item(), 4))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"tokens": tokens, "train_s": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "cpu_s": round(cpu, 3), "tokens_per_cpu_s": round(tokens / cpu, 1),
            "first_loss": losses[0], "last_loss": losses[-1]}


def ray_run(model_path: str, rows: int, batch_size: int, steps: int, workers: int, strategy: str, tmp: Path) -> dict:
    from sdd_ray.config import ModelSpec
    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.run import run_finetune

    cfg = FinetuneConfig(model=ModelSpec(path=model_path), data={"source": DATA, "limit": rows}, strategy=strategy,
                         method="full", num_workers=workers, cpus_per_worker=1, batch_size=batch_size,
                         max_steps=steps, lr=1e-3, warmup_ratio=0.0, log_every=10)
    out = tmp / f"{strategy}-{workers}w"
    metrics = run_finetune(cfg, out)
    return {"strategy": strategy, "workers": workers, "tokens": metrics["tokens"],
            "train_s": round(metrics["train_seconds"], 3), "tokens_per_s": round(metrics["tokens_per_s"], 1),
            "cpu_s_per_worker": metrics["cpu_seconds_per_worker"],
            "tokens_per_cpu_s": round(metrics["tokens_per_cpu_s"], 1),
            "wall_s": round(metrics["wall_seconds"], 2), "first_loss": metrics["initial_loss"],
            "last_loss": metrics["final_loss"], "peak_memory_mib": metrics["peak_memory_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy-teacher")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per worker per step")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    from sdd_ray.runtime import connect

    connect(num_cpus=2, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = bench_model(args.model, tmp)
        plain_before = plain_loop(model_path, args.rows, args.batch_size, args.steps)
        runs = [ray_run(model_path, args.rows, args.batch_size, args.steps, w, s, tmp)
                for s, w in (("ddp", 1), ("deepspeed", 1), ("deepspeed", 2))]
        plain_after = plain_loop(model_path, args.rows, args.batch_size, args.steps)  # the load drifts: bracket
    plain = {key: round((plain_before[key] + plain_after[key]) / 2, 1) for key in ("tokens_per_s", "tokens_per_cpu_s")}
    ray.shutdown()
    ddp1, ds1, ds2 = runs
    result = {
        "benchmark": "train_throughput",
        "command": "python benchmarks/train_throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "model": "random Llama (hidden 128, 6 layers; toy teacher not committed yet)"
        if model_path.endswith("random_llama") else args.model,
        "settings": {"rows": args.rows, "batch_size_per_worker": args.batch_size, "steps": args.steps,
                     "torch_threads_per_worker": 1, "method": "full"},
        "plain_loop": {"before": plain_before, "after": plain_after, "mean": plain},
        "ray_train": runs,
        "ratios": {
            "ray_ddp_1w_vs_plain": round(ddp1["tokens_per_s"] / plain["tokens_per_s"], 3),
            "ray_deepspeed_1w_vs_plain": round(ds1["tokens_per_s"] / plain["tokens_per_s"], 3),
            "ray_deepspeed_2w_vs_1w": round(ds2["tokens_per_s"] / ds1["tokens_per_s"], 3),
            "per_cpu_second": {
                "ray_ddp_1w_vs_plain": round(ddp1["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"], 3),
                "ray_deepspeed_1w_vs_plain": round(ds1["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"], 3),
                "ray_deepspeed_2w_vs_1w": round(ds2["tokens_per_cpu_s"] / ds1["tokens_per_cpu_s"], 3),
            },
        },
        "note": "tokens/s is wall-clock and at the mercy of the machine's load (load_avg_1m); tokens per CPU-second "
                "(summed over workers) is the load-independent efficiency figure",
        "target": "ray 1 worker >= 0.8x plain loop",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
