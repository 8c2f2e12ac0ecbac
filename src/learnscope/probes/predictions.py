"""The network's predicted class of every sample of an evaluation set, stored compactly in the record.

Refinetti et al. (2023) compare networks trained on a clone with networks trained on the real data through
their accuracy; comparing their predictions sample by sample (do they agree, not only are they as often
right) needs the predictions themselves at each probe step. They go into the record as one string per set,
`<set>/pred` = "u1:" or "u2:" and the base64 of a uint8 (fewer than 256 classes) or little-endian uint16
array: 2,000 MNIST-1D test predictions take 2.7 kB, CIFAR-10's 10,000 take 13 kB.

Placed after the evaluation probe in `probes.use`, it reuses that probe's forward pass at the same step;
otherwise (or for a set the evaluation probe does not report) it runs its own.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext

_DTYPES = {"u1": np.dtype(np.uint8), "u2": np.dtype("<u2")}


class PredictionsConfig(ProbeConfig):
    kind: Literal["predictions"] = "predictions"
    sets: list[str] = ["test"]  # evaluation sets whose predictions are recorded


def encode_predictions(pred: np.ndarray | torch.Tensor, num_classes: int) -> str:
    """Class indices (N,) -> "u1:<base64>" (num_classes <= 256) or "u2:<base64>" (<= 65,536)."""
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred)
    if pred.ndim != 1:
        raise ValueError(f"predictions must be one-dimensional, got shape {pred.shape}")
    if len(pred) and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predictions must lie in [0, {num_classes}), found {pred.min()}..{pred.max()}")
    if num_classes <= 256:
        tag = "u1"
    elif num_classes <= 65_536:
        tag = "u2"
    else:
        raise ValueError(f"cannot encode predictions of {num_classes} classes (at most 65,536)")
    return f"{tag}:" + base64.b64encode(pred.astype(_DTYPES[tag]).tobytes()).decode("ascii")


def decode_predictions(text: str) -> np.ndarray:
    """The inverse of `encode_predictions`: an int64 array of class indices."""
    tag, sep, body = text.partition(":")
    if not sep or tag not in _DTYPES:
        raise ValueError(f"not an encoded prediction array: {text[:20]!r}")
    return np.frombuffer(base64.b64decode(body), dtype=_DTYPES[tag]).astype(np.int64)


def agreement(a: np.ndarray | str, b: np.ndarray | str) -> float:
    """Fraction of samples on which two networks predict the same class (arrays or encoded strings)."""
    a = decode_predictions(a) if isinstance(a, str) else np.asarray(a)
    b = decode_predictions(b) if isinstance(b, str) else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"predictions of {a.shape} and {b.shape} samples cannot be compared")
    return float(np.mean(a == b)) if len(a) else float("nan")


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """argmax of the model's outputs on x, batched, in eval mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        parts = [model(x[i : i + batch_size]).argmax(dim=-1) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device=x.device)


@PROBES.register("predictions", PredictionsConfig)
def predictions(cfg: PredictionsConfig):
    def probe(ctx: ProbeContext) -> dict[str, str]:
        data = ctx.data
        unknown = [n for n in cfg.sets if n not in data.evals]
        if unknown:
            raise ConfigError(f"probes predictions.sets: unknown {unknown}; the data has {list(data.evals)}")
        record = {}
        for name in cfg.sets:
            split = data.evals[name]
            pred = ctx.lookup(("predictions", name))
            if pred is None or len(pred) != len(split):
                pred = predict(ctx.model, split.x, ctx.batch_size)
            record[f"{name}/pred"] = encode_predictions(pred, data.num_classes)
        return record

    return probe
