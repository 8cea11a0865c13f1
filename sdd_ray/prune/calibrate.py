"""Run calibration texts through the model and keep the additive pieces of the pruning metrics.

States are captured with forward hooks on the decoder layers rather than `output_hidden_states=True`:
HF returns the LAST hidden state after the final norm, which would compare the final block's
input with a normed output; and it keeps L+1 full (batch, seq, hidden) tensors alive, while the
hooks keep only each layer's last-token vector and reduce Block Influence on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdd_ray.config import ConfigError
from sdd_ray.prune.distances import angle_sums, bi_token_sums, distances_from_angle_sums, distances_from_bi_sums
from sdd_ray.prune.surgery import find_decoder_layers

METRICS = ("angular", "bi")


class CalibrationLengthError(ConfigError):
    """A calibration text (or the requested max length) exceeds the model's context."""


@dataclass
class CalibrationSums:
    """Per-shard sums; shards add up exactly, the driver divides once."""

    angle_sums: torch.Tensor
    """(L+1, L+1) float64: sum over samples of the pairwise angles / pi between layer states."""
    samples: int
    bi_sums: torch.Tensor
    """(L,) float64: sum over non-padding tokens of 1 - cos(layer input, layer output)."""
    tokens: int

    @classmethod
    def zeros(cls, num_layers: int) -> CalibrationSums:
        return cls(torch.zeros(num_layers + 1, num_layers + 1, dtype=torch.float64), 0,
                   torch.zeros(num_layers, dtype=torch.float64), 0)

    def __add__(self, other: CalibrationSums) -> CalibrationSums:
        return CalibrationSums(self.angle_sums + other.angle_sums, self.samples + other.samples,
                               self.bi_sums + other.bi_sums, self.tokens + other.tokens)

    def distances(self, metric: str) -> dict[int, torch.Tensor]:
        if metric == "angular":
            return distances_from_angle_sums(self.angle_sums, self.samples)
        if metric == "bi":
            return distances_from_bi_sums(self.bi_sums, self.tokens)
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class LayerStateRecorder:
    """Hooks on the decoder layers: each layer's input at the last real token, and per-layer BI sums."""

    def __init__(self, model, with_bi: bool = False):
        _, self.layers = find_decoder_layers(model)
        self.with_bi = with_bi
        self.handles = []
        self.reset(None, None)

    def reset(self, last_index: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        self.last_index, self.mask = last_index, mask
        self.states: list[torch.Tensor] = []
        self.bi = torch.zeros(len(self.layers), dtype=torch.float64)
        self.tokens = 0

    def _last_token(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, self.last_index.to(hidden.device)].detach().float().cpu()  # (batch, hidden)

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            inputs, outputs = _hidden_of(args, kwargs), _output_of(output)
            self.states.append(self._last_token(inputs))
            if index == len(self.layers) - 1:
                self.states.append(self._last_token(outputs))
            if self.with_bi:
                total, count = bi_token_sums(inputs, outputs, self.mask.to(inputs.device))
                self.bi[index] = total
                self.tokens = count
        return hook

    def __enter__(self) -> LayerStateRecorder:
        self.handles = [layer.register_forward_hook(self._hook(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def hidden(self) -> torch.Tensor:
        """(batch, L+1, hidden) states of the last batch."""
        if len(self.states) != len(self.layers) + 1:
            raise RuntimeError(f"captured {len(self.states)} layer states, expected {len(self.layers) + 1}")
        return torch.stack(self.states, dim=1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last non-padding token (any padding side)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(dim=1)


def pad_right(token_ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: with causal attention the pads then never touch the real tokens."""
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def token_ids(tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
    return tokenizer(texts, truncation=max_length is not None, max_length=max_length)["input_ids"]


def tokenize(tokenizer, texts: list[str], max_length: int | None) -> dict[str, torch.Tensor]:
    """Tokenized, truncated to `max_length`, right-padded."""
    return pad_right(token_ids(tokenizer, texts, max_length), tokenizer.pad_token_id)


def check_lengths(tokenizer, texts: list[str], max_length: int | None, context: int | None) -> list[int]:
    """Token counts of `texts` (after truncation to max_length); errors before any model is loaded."""
    if context is not None and max_length is not None and max_length > context:
        raise CalibrationLengthError(
            f"max_length {max_length} exceeds the model's context ({context} tokens); lower --max-length"
        )
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    if max_length is not None:
        return [min(n, max_length) for n in lengths]
    if context is not None:
        too_long = [(i, n) for i, n in enumerate(lengths) if n > context]
        if too_long:
            index, n = too_long[0]
            raise CalibrationLengthError(
                f"{len(too_long)} calibration text(s) exceed the model's context of {context} tokens "
                f"(text {index}: {n} tokens); set --max-length to truncate them"
            )
    return lengths


@torch.inference_mode()
def batch_sums(model, recorder: LayerStateRecorder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CalibrationSums:
    """The calibration sums of one tokenized batch."""
    device = next(model.parameters()).device
    recorder.reset(last_token_index(attention_mask), attention_mask)
    model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
    angles, samples = angle_sums(recorder.hidden())
    return CalibrationSums(angles, samples, recorder.bi.clone(), recorder.tokens)


def calibration_sums(model, tokenizer, texts: list[str], max_length: int | None, batch_size: int,
                     metric: str = "angular") -> CalibrationSums:
    """Sums over `texts` in batches, in this process. Texts are sorted by length to pad less; sums don't care."""
    _, layers = find_decoder_layers(model)
    total = CalibrationSums.zeros(len(layers))
    encoded = sorted(token_ids(tokenizer, texts, max_length), key=len)
    with LayerStateRecorder(model, with_bi=metric == "bi") as recorder:
        for start in range(0, len(encoded), batch_size):
            batch = pad_right(encoded[start:start + batch_size], tokenizer.pad_token_id)
            total = total + batch_sums(model, recorder, batch["input_ids"], batch["attention_mask"])
    return total
