"""sdd_ray's speculative decoder vs transformers' assisted generation, same pair, same prompts.

    .venv/bin/python benchmarks/specdec_vs_hf_assisted.py [--target toy-teacher] [--draft DIR] [--k 4]

Four greedy decoders over the same prompts, interleaved prompt by prompt:
- `ours_target_only`: sdd_ray's plain KV-cached loop (the same-run baseline);
- `ours_speculative`: `SpeculativeDecoder` with a constant k;
- `hf_greedy`: `target.generate(do_sample=False)`;
- `hf_assisted`: `target.generate(assistant_model=draft)` with transformers' assistant settings pinned
  to a constant k and no confidence early-stop (`num_assistant_tokens_schedule="constant"`,
  `assistant_confidence_threshold=0`), so both engines draft k tokens per step.

Tokens per target forward pass (the mean accepted length) is counted with a forward hook on the
target for both engines. Writes benchmarks/results/specdec_vs_hf_assisted.json. The default pair
is the toy teacher and the teacher with a third of its layers removed from the middle (no
fine-tuning); without the teacher, a random 6-layer/2-layer pair.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


class ForwardCounter:
    """Counts forward calls of a module (one per target pass, in both engines)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def load_pair(target_arg: str, draft_arg: str | None, workdir: Path):
    from sdd_ray.models import TOY_TEACHER, load_model, load_tokenizer

    if target_arg == "toy-teacher" and not (TOY_TEACHER / "config.json").is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_tiny_llama

        target_path = make_tiny_llama(workdir / "target", num_layers=6, seed=0)
        draft_path = make_tiny_llama(workdir / "draft", num_layers=2, seed=1)
        return load_model(target_path), load_model(draft_path), load_tokenizer(target_path), "random 6-layer target, random 2-layer draft"
    target, tokenizer = load_model(target_arg), load_tokenizer(target_arg)
    if draft_arg:
        return target, load_model(draft_arg), tokenizer, f"{target_arg} / {draft_arg}"
    from sdd_ray.prune.surgery import contiguous_block, remove_layers

    layers = target.config.num_hidden_layers
    block = contiguous_block(layers // 3, layers // 3)
    draft = remove_layers(load_model(target_arg), block)
    return target, draft, tokenizer, f"{target_arg} / itself without layers {block[0]}..{block[-1]} (no fine-tuning)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="toy-teacher")
    parser.add_argument("--draft", default=None, help="draft checkpoint (default: the target, layers removed)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "specdec_vs_hf_assisted.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import tempfile

    from sdd_ray.data import DataSpec
    from sdd_ray.prompts import prompt_token_ids
    from sdd_ray.specdec.engine import DecodeMetrics, SpeculativeDecoder, target_only_generate
    from sdd_ray.specdec.run import load_prompts

    with tempfile.TemporaryDirectory() as workdir:
        target, draft, tokenizer, pair = load_pair(args.target, args.draft, Path(workdir))
    counter = ForwardCounter(target)
    eos = tokenizer.eos_token_id
    draft.generation_config.num_assistant_tokens = args.k
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    decoder = SpeculativeDecoder(target, draft, args.k, eos)
    prompts = load_prompts(DataSpec(source="toy:all", split="test", limit=args.prompts))

    def hf(ids: list[int], assisted: bool) -> list[int]:
        input_ids = torch.tensor([ids])
        out = target.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=args.max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
            assistant_model=draft if assisted else None,
        )
        return out[0, len(ids):].tolist()

    runners = {
        "ours_target_only": lambda ids: target_only_generate(target, ids, args.max_new_tokens, eos_token_id=eos)[0],
        "ours_speculative": lambda ids: decoder.generate(ids, args.max_new_tokens)[0],
        "hf_greedy": lambda ids: hf(ids, assisted=False),
        "hf_assisted": lambda ids: hf(ids, assisted=True),
    }
    stats = {name: {"seconds": 0.0, "new_tokens": 0, "target_forwards": 0} for name in runners}
    outputs: dict[str, list[list[int]]] = {name: [] for name in runners}
    encoded = [prompt_token_ids(tokenizer, instruction, input) for instruction, input in prompts]
    for run in runners.values():  # warm-up: first-call allocations
        run(encoded[0])
    ours = DecodeMetrics(requests=0)
    with torch.inference_mode():
        for ids in encoded:
            for name, run in runners.items():
                calls, start = counter.calls, time.perf_counter()
                tokens = run(ids)
                stats[name]["seconds"] += time.perf_counter() - start
                stats[name]["target_forwards"] += counter.calls - calls
                stats[name]["new_tokens"] += len(tokens)
                outputs[name].append(tokens)
            ours = ours.merge(decoder.generate(ids, args.max_new_tokens)[1])  # counters, untimed

    def cut(tokens: list[int]) -> list[int]:  # HF pads after EOS in some versions; compare up to EOS
        return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens

    reference = [cut(t) for t in outputs["ours_target_only"]]
    for row in stats.values():
        row["tokens_per_s"] = row["new_tokens"] / row["seconds"]
        row["tokens_per_target_forward"] = row["new_tokens"] / row["target_forwards"]
    for name in runners:
        stats[name]["outputs_identical_to_target_only"] = [cut(t) for t in outputs[name]] == reference
    base = stats["ours_target_only"]["tokens_per_s"]
    hf_base = stats["hf_greedy"]["tokens_per_s"]
    result = {
        "benchmark": "specdec_vs_hf_assisted",
        "command": " ".join(["benchmarks/specdec_vs_hf_assisted.py", *sys.argv[1:]]),
        "pair": pair,
        "target_layers": target.config.num_hidden_layers,
        "draft_layers": draft.config.num_hidden_layers,
        "k": args.k,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.threads,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), shared",
        "decoders": stats,
        "ours_mean_accepted_length": ours.mean_accepted_length,
        "ours_acceptance_rate": ours.acceptance_rate,
        "speedup_ours_vs_ours_target_only": stats["ours_speculative"]["tokens_per_s"] / base,
        "speedup_hf_assisted_vs_hf_greedy": stats["hf_assisted"]["tokens_per_s"] / hf_base,
        "ours_speculative_vs_hf_assisted_tokens_per_s": stats["ours_speculative"]["tokens_per_s"] / stats["hf_assisted"]["tokens_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "decoders"}, indent=2))
    for name, row in stats.items():
        print(f"{name:>18}: {row['tokens_per_s']:7.1f} tok/s  {row['tokens_per_target_forward']:.2f} tok/target pass  "
              f"identical={row['outputs_identical_to_target_only']}")


if __name__ == "__main__":
    main()
