"""Loss and accuracy of the model on every evaluation set (eval mode, no grad, batched); loss alone for a
regression."""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import ConfigError
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext


class EvaluationConfig(ProbeConfig):
    kind: Literal["evaluation"] = "evaluation"
    sets: list[str] = []  # evaluation sets to report; empty: all of them
    noise_subsets: bool = True  # with label noise: also the clean and the noisy training samples


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss,
    batch_size: int,
    predictions: list[torch.Tensor] | None = None,
) -> tuple:
    """(summed loss, correct count) as device tensors: the caller reads them back once. The argmax of
    each batch is appended to `predictions` when a list is given (no extra pass, no wait for the device).
    Regression targets (floats) have no argmax: the count stays 0."""
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(y), batch_size):
        out = model(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        loss_sum += loss(out, yb).double()
        if yb.is_floating_point():
            continue
        pred = out.argmax(dim=-1)
        correct += (pred == yb).sum()
        if predictions is not None:
            predictions.append(pred)
    return loss_sum, correct


@PROBES.register("evaluation", EvaluationConfig)
def evaluation(cfg: EvaluationConfig):
    def probe(ctx: ProbeContext) -> dict[str, float]:
        data = ctx.data
        names = cfg.sets or list(data.evals)
        unknown = [n for n in names if n not in data.evals]
        if unknown:
            raise ConfigError(f"probes evaluation.sets: unknown {unknown}; the data has {list(data.evals)}")
        targets = {n: (data.evals[n].x, data.evals[n].y) for n in names}
        if cfg.noise_subsets and data.noisy is not None and data.true_train_labels is not None:
            x, y, noisy = data.train.x, data.train.y, data.noisy
            targets["train_clean"] = (x[~noisy], y[~noisy])
            targets["train_noisy"] = (x[noisy], y[noisy])  # fit of the corrupted labels (memorisation)
            targets["train_noisy_true"] = (x[noisy], data.true_train_labels[noisy])
        was_training = ctx.model.training
        ctx.model.eval()
        preds: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
        try:
            sums = {
                n: evaluate(ctx.model, x, y, ctx.loss, ctx.batch_size, preds[n])
                for n, (x, y) in targets.items()
            }
        finally:
            ctx.model.train(was_training)
        for name in names:  # for the predictions probe at this step: the same forward pass, not another
            ctx.publish(
                ("predictions", name), torch.cat(preds[name]) if preds[name] else targets[name][1][:0]
            )
        flat = torch.stack([torch.stack([s.double(), c.double()]) for s, c in sums.values()]).cpu().tolist()
        record = {}
        for (name, (_, y)), (loss_sum, correct) in zip(targets.items(), flat, strict=True):
            n = max(len(y), 1)
            record[f"{name}/loss"] = loss_sum / n
            if not data.regression:
                record[f"{name}/acc"] = correct / n
        return record

    return probe
