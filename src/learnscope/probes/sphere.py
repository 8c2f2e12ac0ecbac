"""What a scale-invariant network does on its sphere (Kodryan et al., NeurIPS 2022; docs/studies/
sphere_regimes.md): the norm ρ of its scale-invariant (SI) parameters and each layer's share of it, the
effective learning rate lr/ρ² (whole vector and per layer), the angle turned per step and the effective
gradient norm ρ‖∇L(w)‖ (the gradient at the unit-sphere point), and the training loss and accuracy measured as
the original does: BatchNorm in train mode (batch statistics) over fixed, unshuffled batches. A window of the
last probe values of that loss gives its mean and standard deviation, the statistics the regimes are told
apart by (the window is the probe's state, saved in checkpoints).

The angle and the effective gradient norm of every step come from the optimiser when it measures them
(`sphere_sgd`: the mean over the steps since the previous probe); for any other optimiser, with
`grad_batches` > 0, the effective gradient norm is the mean over that many fixed minibatches of the minibatch
gradient norm times ρ (the original's definition, measured at the probe's weights).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt

from ..curvature import untouched
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext


class SphereConfig(ProbeConfig):
    kind: Literal["sphere"] = "sphere"
    batch_size: PositiveInt = 128  # the fixed batches of the train-mode loss (the original's 128)
    grad_batches: NonNegativeInt = 0  # without an optimiser that measures it: batches for the gradient norm
    window: PositiveInt = 10  # probe records of the train-mode loss kept for its mean and std


class SphereProbe:
    """The probe; its state is the window of recent train-mode losses."""

    def __init__(self, cfg: SphereConfig):
        self.cfg = cfg
        self.losses: list[float] = []
        self._si: tuple[int, list] | None = None  # (id of the model, its SI parameters): traced once

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.losses = [float(v) for v in state["losses"]]

    def __call__(self, ctx: ProbeContext) -> dict[str, float]:
        from ..models.scale_invariant import scale_invariant_parameters

        if self._si is None or self._si[0] != id(ctx.model):
            self._si = (id(ctx.model), scale_invariant_parameters(ctx.model))
        named = self._si[1]
        if not named:
            return {}
        params = [p for _, p in named]
        sq = torch.stack([p.detach().double().pow(2).sum() for p in params])
        loss, acc = train_mode_loss(ctx.model, ctx.data.train.x, ctx.data.train.y, self.cfg.batch_size)
        scalars = [loss, acc]
        measures = ctx.optimizer is not None and hasattr(ctx.optimizer, "step_statistics")
        stats = ctx.optimizer.step_statistics() if measures else {}
        if not measures and self.cfg.grad_batches:
            scalars.append(mean_grad_norm(ctx, params, self.cfg.batch_size, self.cfg.grad_batches))
        flat = torch.cat([torch.stack(scalars).double(), sq]).cpu().tolist()  # one read-back
        read, squares = flat[: len(scalars)], flat[len(scalars) :]
        norm_sq = sum(squares)
        record = {
            "sphere/norm": math.sqrt(norm_sq),
            "sphere/train_tm_loss": read[0],
            "sphere/train_tm_acc": read[1],
        }
        for (name, _), square in zip(named, squares, strict=True):
            record[f"sphere/share/{name}"] = square / norm_sq
        lr = _si_lr(ctx.optimizer, params)
        if lr is not None:
            per_layer = getattr(ctx.optimizer, "defaults", {}).get("sphere") == "layer"
            # per-layer spheres: the group's lr is the ELR of every layer; one sphere: lr = elr·ρ², and a
            # layer holding the share s of ρ² turns at the effective rate lr / (s ρ²)
            record["sphere/elr"] = lr if per_layer else lr / norm_sq
            for (name, _), square in zip(named, squares, strict=True):
                record[f"sphere/elr/{name}"] = lr if per_layer else lr / square
        if "angle" in stats:
            record["sphere/angle"] = stats["angle"]
            record["sphere/effective_grad_norm"] = stats["effective_grad_norm"]
        elif len(read) > 2:
            record["sphere/effective_grad_norm"] = read[2] * math.sqrt(norm_sq)
        self.losses = [*self.losses, read[0]][-self.cfg.window :]
        window = torch.tensor(self.losses, dtype=torch.float64)
        record["sphere/loss_mean"] = float(window.mean())
        record["sphere/loss_std"] = float(window.std(correction=0))
        return record


@PROBES.register("sphere", SphereConfig)
def sphere(cfg: SphereConfig) -> SphereProbe:
    return SphereProbe(cfg)


def _si_lr(optimizer, params) -> float | None:
    """The learning rate of the param group holding the SI parameters (None without an optimiser)."""
    if optimizer is None:
        return None
    first = params[0]
    for group in optimizer.param_groups:
        if any(p is first for p in group["params"]):
            return float(group["lr"])
    return None


@torch.no_grad()
def train_mode_loss(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy with BatchNorm in train mode over fixed consecutive batches (the
    original's training-set measurement), as device scalars. The model is left as found (curvature.untouched:
    BatchNorm's running statistics, which train-mode forward passes would update, and the RNG)."""
    was_training = model.training
    model.train()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    with untouched(model, x.device, grad=False):
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss += F.cross_entropy(out, target, reduction="sum").double()
            correct += (out.argmax(-1) == target).sum()
    model.train(was_training)
    return loss / len(x), correct / len(x)


def mean_grad_norm(ctx: ProbeContext, params, batch_size: int, batches: int) -> torch.Tensor:
    """Mean over `batches` fixed consecutive minibatches of the norm of the minibatch gradient (mean
    cross-entropy) with respect to `params`, BatchNorm in train mode; the model is left as found (buffers by
    curvature.untouched; `autograd.grad` leaves `.grad` alone)."""
    model, x, y = ctx.model, ctx.data.train.x, ctx.data.train.y
    was_training = model.training
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    count = 0
    with untouched(model, x.device):
        for start in range(0, min(len(x), batches * batch_size), batch_size):
            loss = F.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size])
            grads = torch.autograd.grad(loss, params)
            total += torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
            count += 1
    model.train(was_training)
    return total / max(count, 1)
