"""The first-GPU check: what sdd_ray's CUDA paths need, run on one GPU in under 10 minutes, written to one JSON.

No GPU has run sdd_ray yet; its CUDA paths are written against the real APIs and tested as
configuration. This script runs them on the first lent GPU, with nothing downloaded (random-init
models built from configs, a few MiB of files) and only what the machine has: torch and transformers
are needed; DeepSpeed + peft (+ pydantic, for sdd_ray's configs), Ray, vLLM's CUDA build and lm-eval
are used where installed and each check that needs a missing one is `skipped` with the reason.

| check | what runs |
| --- | --- |
| `cuda_bf16_load` | a Llama checkpoint loaded by `sdd_ray.models.load_model` in bfloat16 on CUDA; finite logits |
| `zero2_lora`, `zero3_lora`, `zero3_offload` | `sdd_ray.finetune`'s DeepSpeed engine over NCCL (world of 1): LoRA steps in bf16 with gradient checkpointing, ZeRO-3 loaded partitioned (`zero.Init`), optimizer (and parameters) offloaded; the export gathered, reloaded strictly into a plain model, the trained adapters non-zero |
| `layer_memory_8b` | peak CUDA memory of one decoder layer at Llama-3.1-8B's width, at the 8B config's micro-batch and length (forward + backward, bf16), extrapolated to 32 layers + embeddings + logits, with and without gradient checkpointing, against 40 and 80 GB |
| `specdec_identity` | `SpeculativeDecoder` greedy output equals target-only output on CUDA (float32: exact; bf16: counted) |
| `prune_calibration` | angular distances from `LayerStateRecorder` on CUDA equal the CPU's (float32) |
| `ray_data_llm_distill`, `served_pair`, `lm_eval_vllm` | `sdd-ray distill --backend vllm`, `serve --engine vllm` with its GPU greedy check, lm-eval's vLLM backend, on the toy teacher (need Ray, vLLM's CUDA build, lm-eval) |

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --dry-run      # here, without a GPU: the CPU-checkable parts, so it is known to start

Exit status 1 when a check failed; skipped checks do not fail the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sdd_ray, whatever is installed
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
LLAMA_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "num_hidden_layers": 32, "vocab_size": 128256}
GB = 1e9


class Skip(Exception):
    """A check this machine cannot run (a package or CUDA missing, or a dry run)."""


def requires(*modules: str, cuda: bool = True, ctx: dict) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"not installed: {', '.join(missing)}")
    if cuda and ctx["device"].type != "cuda":
        raise Skip("needs CUDA (dry run)" if ctx["dry_run"] else "needs CUDA")


def tiny_llama(out: Path, num_layers: int, hidden: int, seed: int = 0) -> Path:
    """A random Llama with the toy tokenizer (float32 checkpoint), built from a config: nothing downloaded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdd_ray.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden // 4, max_position_embeddings=1024, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def random_ids(vocab: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=generator)


# ---- checks: each returns its details, raises Skip, or fails with an exception -------------------


def cuda_bf16_load(ctx: dict) -> dict:
    from sdd_ray.config import ModelSpec
    from sdd_ray.models import load_model

    requires("pydantic", cuda=False, ctx=ctx)
    start = time.perf_counter()
    model = load_model(ModelSpec(path=str(ctx["model"]), dtype="bfloat16", device=ctx["device"].type))
    seconds = time.perf_counter() - start
    ids = random_ids(model.config.vocab_size, 2, 64).to(ctx["device"])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    assert dtypes == ["torch.bfloat16"], dtypes
    assert torch.isfinite(logits).all(), "non-finite logits"
    return {"load_s": round(seconds, 2), "param_dtypes": dtypes, "device": str(next(model.parameters()).device)}


def _init_single_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MASTER_PORT", "29531"),
                       "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    dist.init_process_group("nccl")
    torch.cuda.set_device(0)


def zero_lora(ctx: dict, stage: int, offload: bool = False) -> dict:
    """LoRA steps through sdd_ray's DeepSpeed engine; the export gathered, reloaded, the adapters trained."""
    requires("deepspeed", "peft", "pydantic", ctx=ctx)
    from transformers import AutoModelForCausalLM

    from sdd_ray.finetune.config import FinetuneConfig
    from sdd_ray.finetune.engines import DeepSpeedEngine, deepspeed_config
    from sdd_ray.finetune.export import apply_lora
    from sdd_ray.finetune.loop import _load_model

    _init_single_process_group()
    cfg = FinetuneConfig(model={"path": str(ctx["model"])}, data={"source": "toy:all"}, zero_stage=stage,
                         precision="bf16", method="lora", use_gpu=True, num_workers=1, batch_size=2, grad_accum=1,
                         lr=1e-3, gradient_checkpointing=True, offload_optimizer=offload, offload_params=offload and stage == 3)
    start = time.perf_counter()
    model, _ = _load_model(cfg, torch.bfloat16, deepspeed_config(cfg, 1, True))
    partitioned = stage == 3 and all(p.numel() == 0 for p in model.parameters() if not p.requires_grad)
    engine = DeepSpeedEngine(model, cfg, total_steps=4, bf16=True)
    losses = []
    for step in range(4):
        ids = random_ids(model.config.vocab_size, 2, 128, seed=step).to(engine.device)
        loss = engine.loss(ids, torch.ones_like(ids), ids)
        engine.backward(loss, boundary=True)
        losses.append(float(loss))
    state = engine.export_state_dict()
    plain = apply_lora(AutoModelForCausalLM.from_pretrained(ctx["model"], dtype=torch.bfloat16), cfg.lora)
    plain.load_state_dict(state, strict=True)  # every key, every shape: nothing left partitioned
    trained = [k for k, v in state.items() if "lora_B" in k and v.abs().sum() > 0]
    assert all(map(lambda x: x == x, losses)), f"NaN loss: {losses}"
    assert trained, "no LoRA B weight changed: the export holds untrained adapters"
    return {"losses": [round(x, 4) for x in losses], "seconds": round(time.perf_counter() - start, 1),
            "loaded_partitioned": partitioned if stage == 3 else None, "exported_tensors": len(state),
            "trained_lora_b": len(trained), "offload": offload}


def layer_memory_8b(ctx: dict) -> dict:
    """One 8B-width decoder layer, forward + backward at the 8B config's micro-batch, extrapolated to the model."""
    import yaml
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    run = yaml.safe_load((ROOT / "configs" / "llama3.1-8b-sdd.yaml").read_text())["finetune"]
    batch, length = run["batch_size"], run["max_length"]
    shape = dict(LLAMA_8B)
    if ctx["dry_run"]:  # the same code path at a width a CPU runs in seconds; no CUDA memory to measure
        shape.update(hidden_size=256, intermediate_size=896, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
        batch, length = 1, 128
    config = LlamaConfig(**shape, max_position_embeddings=length)
    device = ctx["device"]
    layer = LlamaDecoderLayer(config, layer_idx=0).to(device, torch.bfloat16)
    layer.requires_grad_(False)  # LoRA: the base is frozen; the input carries the gradient
    rotary = LlamaRotaryEmbedding(config).to(device)
    hidden = torch.randn(batch, length, shape["hidden_size"], device=device, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(length, device=device).unsqueeze(0)
    cos_sin = rotary(hidden, positions)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    out = layer(hidden, position_embeddings=cos_sin, position_ids=positions)
    out = out[0] if isinstance(out, tuple) else out
    out.float().sum().backward()
    if device.type != "cuda":
        return {"dry_run": True, "layer_forward_backward": "ran", "batch": batch, "length": length}
    torch.cuda.synchronize()
    activations = torch.cuda.max_memory_allocated() - base  # one layer's saved activations + backward workspace
    layer_weights = sum(p.numel() for p in layer.parameters()) * 2
    hidden_bytes = batch * length * shape["hidden_size"] * 2
    embed = 2 * shape["vocab_size"] * shape["hidden_size"] * 2  # input embeddings + untied lm_head, bf16
    logits = batch * length * shape["vocab_size"] * (2 + 4 + 4)  # bf16 logits, float32 upcast and its gradient
    layers = shape["num_hidden_layers"]
    weights = layers * layer_weights + embed
    without = weights + layers * activations + logits
    with_checkpointing = weights + layers * hidden_bytes + activations + logits
    return {"batch": batch, "length": length, "layer_weights_gb": layer_weights / GB,
            "layer_activation_peak_gb": activations / GB, "weights_gb": weights / GB,
            "estimate_gb": {"no_checkpointing": without / GB, "gradient_checkpointing": with_checkpointing / GB},
            "fits": {f"{size}GB": {"no_checkpointing": without < 0.9 * size * GB,
                                   "gradient_checkpointing": with_checkpointing < 0.9 * size * GB} for size in (40, 80)},
            "note": "per GPU under ZeRO-2 LoRA (weights replicated); optimizer state of the adapters left out (MBs)"}


def specdec_identity(ctx: dict) -> dict:
    from transformers import AutoModelForCausalLM

    from sdd_ray.specdec.engine import SpeculativeDecoder, target_only_generate

    device, results = ctx["device"], {}
    prompts, tokens_each = (2, 8) if ctx["dry_run"] else (8, 32)  # bf16 matmuls crawl on a CPU
    for dtype in (torch.float32,) if ctx["dry_run"] else (torch.float32, torch.bfloat16):
        target = AutoModelForCausalLM.from_pretrained(ctx["model"], dtype=dtype).to(device).eval()
        draft = AutoModelForCausalLM.from_pretrained(ctx["draft"], dtype=dtype).to(device).eval()
        decoder = SpeculativeDecoder(target, draft, k=4, eos_token_id=[])
        same = 0
        for seed in range(prompts):
            ids = random_ids(target.config.vocab_size, 1, 24, seed=seed)[0].tolist()
            reference, _ = target_only_generate(target, ids, tokens_each, eos_token_id=[])
            tokens, _ = decoder.generate(ids, tokens_each)
            same += tokens == reference
        results[str(dtype).removeprefix("torch.")] = f"{same}/{prompts} identical"
        if dtype == torch.float32:
            assert same == prompts, f"float32 speculative output differs from target-only on {prompts - same} prompts"
    return results


def prune_calibration(ctx: dict) -> dict:
    requires("pydantic", cuda=not ctx["dry_run"], ctx=ctx)
    from transformers import AutoModelForCausalLM

    from sdd_ray.prune.calibrate import LayerStateRecorder, batch_sums
    from sdd_ray.prune.distances import distances_from_angle_sums

    distances = {}
    for device in {"cpu", ctx["device"].type}:
        model = AutoModelForCausalLM.from_pretrained(ctx["model"], dtype=torch.float32).to(device).eval()
        ids = random_ids(model.config.vocab_size, 4, 48)
        mask = torch.ones_like(ids)
        with LayerStateRecorder(model) as recorder, torch.inference_mode():
            sums = batch_sums(model, recorder, ids.to(device), mask.to(device))
        distances[device] = distances_from_angle_sums(sums.angle_sums, sums.samples)
    gap = max((distances["cpu"][n] - d).abs().max().item() for n, d in distances[ctx["device"].type].items())
    assert gap < 1e-3, f"angular distances differ between CPU and {ctx['device'].type} by {gap}"
    return {"max_abs_difference": gap, "block_sizes": sorted(distances["cpu"])}


def _cli(args: list[str], timeout: int) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} exited {result.returncode}: {result.stderr[-1500:]}")
    return result.stdout


def _needs_stack(ctx: dict) -> None:
    requires("ray", "vllm", "pydantic", ctx=ctx)
    if ctx["dry_run"]:
        raise Skip("dry run: starts vLLM engines")


def ray_data_llm_distill(ctx: dict) -> dict:
    _needs_stack(ctx)
    out = ctx["tmp"] / "distill"
    config = ctx["tmp"] / "distill.yaml"
    config.write_text(json.dumps({"vllm": {"device": "gpu", "max_model_len": 512, "gpu_memory_utilization": 0.3}}))
    _cli(["jobs/distill.py", "--teacher", "toy-teacher", "--data", "toy:all", "--limit", "16", "--backend", "vllm",
          "--max-new-tokens", "32", "--out", str(out), "--config", str(config), "--no-progress"], timeout=300)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_in"] == 16 and stats["backend"] == "vllm", stats
    return {key: stats[key] for key in ("rows_in", "rows_out", "prompt_tokens") if key in stats}


def served_pair(ctx: dict) -> dict:
    """The toy teacher drafting for itself behind ray.serve.llm; start-up runs the GPU greedy check (engine-scored)."""
    _needs_stack(ctx)
    import httpx
    from ray import serve

    from sdd_ray.serve.cli import start
    from sdd_ray.serve.config import ServeConfig

    cfg = ServeConfig(target={"path": "toy-teacher"}, draft={"path": str(ctx["draft"])}, engine="vllm", k=3,
                      device="gpu", max_model_len=512, gpu_memory_utilization=0.3, port=8765, verify_prompts=3)
    try:
        url = start(cfg)
        reply = httpx.post(f"{url}/v1/completions", timeout=120,
                           json={"model": cfg.served_name, "prompt": "### Instruction:\nWhat is 2 plus 3?\n\n### Response:\n",
                                 "max_tokens": 16, "temperature": 0})
        reply.raise_for_status()
        return {"guard": "passed", "text": reply.json()["choices"][0]["text"]}
    finally:
        serve.shutdown()


def lm_eval_vllm(ctx: dict) -> dict:
    _needs_stack(ctx)
    requires("lm_eval", ctx=ctx)
    out = ctx["tmp"] / "eval.json"
    _cli(["-m", "sdd_ray.cli", "evaluate", "--config", "configs/evaluate_toy_harness.yaml", "--model", "toy-teacher",
          "--limit", "20", "--out", str(out)], timeout=300)
    return json.loads(out.read_text()).get("scores", {})


CHECKS = {
    "cuda_bf16_load": cuda_bf16_load,
    "zero2_lora": lambda ctx: zero_lora(ctx, 2),
    "zero3_lora": lambda ctx: zero_lora(ctx, 3),
    "zero3_offload": lambda ctx: zero_lora(ctx, 3, offload=True),
    "layer_memory_8b": layer_memory_8b,
    "specdec_identity": specdec_identity,
    "prune_calibration": prune_calibration,
    "ray_data_llm_distill": ray_data_llm_distill,
    "served_pair": served_pair,
    "lm_eval_vllm": lm_eval_vllm,
}


def run_checks(dry_run: bool, names: list[str]) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
    report = {"dry_run": dry_run, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "checks": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = {"device": device, "dry_run": dry_run, "tmp": Path(tmp)}
        ctx["model"] = tiny_llama(Path(tmp) / "model", num_layers=6, hidden=256)
        ctx["draft"] = tiny_llama(Path(tmp) / "draft", num_layers=2, hidden=256, seed=1)
        for name in names:
            began = time.perf_counter()
            try:
                result = {"status": "passed", **CHECKS[name](ctx)}
            except Skip as reason:
                result = {"status": "skipped", "reason": str(reason)}
            except Exception as error:  # one failing check must not hide the others' results
                result = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                          "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - began, 2)
            report["checks"][name] = result
            print(f"{name}: {result['status']} ({result['seconds']} s) {result.get('reason') or result.get('error') or ''}",
                  flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--dry-run", action="store_true", help="CPU only: the checks' CPU-checkable parts")
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated check names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {list(CHECKS)}")
    report = run_checks(args.dry_run, names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = [n for n, r in report["checks"].items() if r["status"] == "failed"]
    print(f"wrote {args.out}: {len(report['checks']) - len(failed)} of {len(report['checks'])} not failed"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
