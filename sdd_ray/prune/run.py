"""Run the pruning stage: check, calibrate, choose the block, remove it, save a plain HF checkpoint.

Outputs, all in `out`: the pruned checkpoint (`config.json`, `model.safetensors`, tokenizer files),
`pruning.json` (the choice and the evidence) and `distances.png` (the heatmap). A dry run
(`block_size` 0) writes only `pruning.json` and `distances.png`. Every cheap check (block size,
architecture, calibration data, lengths) runs before the weights are loaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sdd_ray.config import ConfigError
from sdd_ray.guards import check_out
from sdd_ray.io import staged
from sdd_ray.models import load_model, load_tokenizer, model_num_layers, save_model
from sdd_ray.prune.config import PruneConfig, check_block_size
from sdd_ray.prune.data import load_calibration_texts
from sdd_ray.prune.plot import plot_distances

PRUNING_JSON = "pruning.json"
DISTANCES_PNG = "distances.png"


def _model_config(cfg: PruneConfig):
    """The checkpoint's config and its text config, without the weights."""
    from transformers import AutoConfig

    model_num_layers(cfg.model)  # a clear error if the checkpoint is missing
    config = AutoConfig.from_pretrained(cfg.model.path, revision=cfg.model.revision,
                                        trust_remote_code=cfg.model.trust_remote_code)
    return config, (config.get_text_config() if hasattr(config, "get_text_config") else config)


def _check_replaceable(out: Path) -> None:
    """Refuse to later replace a directory that is not a pruning output."""
    if out.exists() and any(out.iterdir()) and not (out / PRUNING_JSON).is_file():
        raise ConfigError(f"--out {out}: exists and is not a pruning output; choose an empty or new directory")


def _surgery_spec(cfg: PruneConfig, config):
    """Load for surgery alone on the driver's CPU, in the checkpoint's own dtype (an 8B bf16 model
    stays 16 GB rather than the 32 GB of the CPU default float32)."""
    update = {"device": "cpu"}
    saved = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "").removeprefix("torch.")
    if cfg.model.dtype == "auto" and saved in ("float32", "bfloat16", "float16"):
        update["dtype"] = saved
    return cfg.model.model_copy(update=update)


def calibrate(cfg: PruneConfig, num_layers: int, context: int | None):
    """Calibration sums for `cfg` (in process or on Ray Data), the model if it was loaded here, and the sample count."""
    from sdd_ray.prune.calibrate import calibration_sums, check_lengths

    texts = load_calibration_texts(cfg.calib, cfg.text_field, cfg.num_samples)
    tokenizer = load_tokenizer(cfg.model)
    check_lengths(tokenizer, texts, cfg.max_length, context)
    if cfg.num_workers == 0:
        model = load_model(cfg.model)
        return calibration_sums(model, tokenizer, texts, cfg.max_length, cfg.batch_size, cfg.metric), model, tokenizer, len(texts)
    from sdd_ray.prune.ray_calibration import calibration_sums_ray

    sums = calibration_sums_ray(cfg.model, texts, num_layers, cfg.max_length, cfg.batch_size, cfg.metric,
                                cfg.num_workers, cfg.cpus_per_worker, cfg.gpus_per_worker)
    return sums, None, tokenizer, len(texts)


def run_prune(cfg: PruneConfig, out: str | Path) -> dict:
    """Prune `cfg.model` into `out`; returns the contents of `pruning.json`."""
    from sdd_ray.prune.distances import choose_block
    from sdd_ray.prune.surgery import check_prunable, contiguous_block, remove_layers

    out = Path(out)
    config, text_config = _model_config(cfg)
    num_layers = int(text_config.num_hidden_layers)
    try:
        check_block_size(cfg.block_size, num_layers)
    except ValueError as error:
        raise ConfigError(f"prune.block_size: {error}") from None
    check_prunable(config, cfg.model.trust_remote_code)
    check_out(out, "prune", {"--model": cfg.model.path, "--calib": cfg.calib.source}, own_files=(PRUNING_JSON,))
    _check_replaceable(out)
    with staged(out) as tmp:  # removed if anything below fails; published whole at the end
        started = time.perf_counter()
        sums, model, tokenizer, samples = calibrate(cfg, num_layers, getattr(text_config, "max_position_embeddings", None))
        calibration_s = time.perf_counter() - started
        distances = sums.distances(cfg.metric)

        removed: list[int] = []
        chosen = None
        if cfg.block_size:
            start = choose_block(distances, cfg.block_size)
            removed = contiguous_block(start, cfg.block_size)
            chosen = {"start_layer": start, "distance": float(distances[cfg.block_size][start])}
            model = model if model is not None else load_model(_surgery_spec(cfg, config))
            remove_layers(model, removed)
            save_model(model, tokenizer, tmp)

        report = {
            "model": cfg.model.path,
            "metric": cfg.metric,
            "block_size": cfg.block_size,
            "removed_layers": removed,
            "chosen": chosen,
            "num_layers_before": num_layers,
            "num_layers_after": num_layers - len(removed),
            "calibration": {"source": cfg.calib.source, "split": cfg.calib.split, "samples": samples, "max_length": cfg.max_length,
                            "num_workers": cfg.num_workers, "seconds": round(calibration_s, 3)},
            "distances": {str(n): [float(d) for d in row] for n, row in distances.items()},
        }
        (tmp / PRUNING_JSON).write_text(json.dumps(report, indent=2))
        plot_distances({n: row.tolist() for n, row in distances.items()},
                       tmp / DISTANCES_PNG, cfg.metric,
                       chosen=(chosen["start_layer"], cfg.block_size) if chosen else None,
                       title=f"{Path(cfg.model.path).name}: {cfg.metric}, {samples} samples")
    return report
