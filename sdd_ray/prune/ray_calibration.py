"""Calibration sharded on Ray Data: an actor pool computes per-batch sums, the driver adds them.

Each actor loads the model once (in `__init__`) and turns a batch of texts into the additive pieces
of the pruning metrics (`CalibrationSums`); the driver sums the rows and divides once, so the result
does not depend on how many workers ran or how the rows were batched (up to float rounding).
Actors take a fraction of a CPU by default: an actor pool that claims every CPU starves the Ray Data
tasks that feed it.
"""

from __future__ import annotations

import numpy as np
import torch

from sdd_ray.config import ModelSpec
from sdd_ray.models import load_model_and_tokenizer
from sdd_ray.prune.calibrate import CalibrationSums, LayerStateRecorder, batch_sums, tokenize
from sdd_ray.runtime import connect


class CalibrationActor:
    """Ray Data callable class: text batch -> one row of calibration sums."""

    def __init__(self, model: dict, max_length: int | None, metric: str, torch_threads: int = 1):
        torch.set_num_threads(torch_threads)
        self.model, self.tokenizer = load_model_and_tokenizer(ModelSpec(**model))
        self.max_length = max_length
        self.recorder = LayerStateRecorder(self.model, with_bi=metric == "bi").__enter__()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        encoded = tokenize(self.tokenizer, [str(text) for text in batch["text"]], self.max_length)
        sums = batch_sums(self.model, self.recorder, encoded["input_ids"], encoded["attention_mask"])
        return {
            "angle_sums": sums.angle_sums.numpy()[None],  # (1, L+1, L+1)
            "samples": np.array([sums.samples]),
            "bi_sums": sums.bi_sums.numpy()[None],  # (1, L)
            "tokens": np.array([sums.tokens]),
        }


def reduce_rows(rows, num_layers: int) -> CalibrationSums:
    """Add the per-batch rows that the actors returned."""
    total = CalibrationSums.zeros(num_layers)
    for row in rows:
        total = total + CalibrationSums(
            torch.tensor(np.asarray(row["angle_sums"]), dtype=torch.float64), int(row["samples"]),
            torch.tensor(np.asarray(row["bi_sums"]), dtype=torch.float64), int(row["tokens"]),
        )
    return total


def calibration_sums_ray(
    model: ModelSpec,
    texts: list[str],
    num_layers: int,
    max_length: int | None,
    batch_size: int,
    metric: str,
    num_workers: int,
    cpus_per_worker: float = 0.5,
    gpus_per_worker: float = 0.0,
) -> CalibrationSums:
    """Calibration sums of `texts` from a pool of `num_workers` actors (uses the running Ray, or starts one)."""
    import ray

    connect(log_to_driver=False)
    # Sort by token-free length proxy so batches pad less; several blocks per worker keep all busy.
    ordered = sorted(texts, key=len)
    dataset = ray.data.from_items([{"text": text} for text in ordered],
                                  override_num_blocks=min(len(ordered), 4 * num_workers))
    sums = dataset.map_batches(
        CalibrationActor,
        fn_constructor_kwargs={"model": model.model_dump(), "max_length": max_length, "metric": metric,
                               "torch_threads": max(1, int(cpus_per_worker))},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )
    return reduce_rows(sums.iter_rows(), num_layers)
