"""Losses, optimisers and learning-rate schedules.

Optimisers are a registry like models: a config class derived from `OptimConfig` and a builder
`(cfg, model) -> torch.optim.Optimizer`, one decorator (`@OPTIMISERS.register("name", NameConfig)`).

The schedule is a pure function of the step: `lr_factor(step)` multiplies each group's base lr. It has no
state of its own, so a checkpoint needs only the step to restore it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat
from torch import nn

from .config import TrainConfig
from .errors import ConfigError
from .registry import OPTIMISERS
from .sections import OptimConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_function(name: str, reduction: str = "mean") -> LossFn:
    """`ce`: cross-entropy on logits. `mse`: squared error averaged over the outputs, to one-hot targets for
    class labels (PyTorch's MSELoss, as the neural-collapse code) or to the targets of a regression.
    reduction="sum" sums the per-sample losses. `sse`: ½‖out − target‖² summed over outputs and samples,
    for either reduction (a per-sample mean is the evaluation's sum divided by the count)."""
    if name == "ce":

        def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if y.is_floating_point():
                raise ConfigError(
                    "train.loss=ce needs class labels; a regression's real targets need loss=mse"
                )
            return F.cross_entropy(out, y, reduction=reduction)

        return cross_entropy
    if name == "mse":

        def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = (
                y.reshape(out.shape) if y.is_floating_point() else F.one_hot(y, out.shape[-1]).to(out.dtype)
            )
            per_sample = (out - target).pow(2).mean(dim=-1)
            return per_sample.sum() if reduction == "sum" else per_sample.mean()

        return mse
    if name == "sse":

        def half_squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = (
                y.reshape(out.shape) if y.is_floating_point() else F.one_hot(y, out.shape[-1]).to(out.dtype)
            )
            # The training objective is the sum over the batch whatever `reduction` asks: "mean" is what
            # the loop trains on, and the summed loss is the one the theory's learning rates refer to.
            return 0.5 * (out - target).pow(2).sum()

        return half_squared_error
    raise ValueError(f"unknown loss {name!r}")


# A learning rate given as "1/sharpness" is 1/λ_max of the Hessian of the training loss over the whole
# training set at initialisation (for a linear model on the summed squared loss, 1/λ_max(XᵀX): the
# "optimal" step of gradient descent in the double-descent study, docs/studies/double_descent.md).
INVERSE_SHARPNESS = "1/sharpness"


class SGDConfig(OptimConfig):
    kind: Literal["sgd"] = "sgd"
    lr: PositiveFloat | Literal["1/sharpness"] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on biases and normalisation parameters


class AdamConfig(OptimConfig):
    kind: Literal["adam", "adamw"] = "adam"
    lr: PositiveFloat = 1e-3
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    decay_norm_and_bias: bool = True


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser of the registered kind `cfg.kind` over the model's trainable parameters."""
    return OPTIMISERS.builder(cfg.kind)(cfg, model)


def top_hessian_eigenvalue(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: LossFn,
    batch_size: int = 4096,
    max_iter: int = 2000,
    rtol: float = 1e-7,
) -> float:
    """λ_max of the Hessian of `loss` (summed over the batch) over all of (x, y) with respect to the model's
    trainable parameters, by power iteration on Hessian-vector products (double backward), in eval mode (no
    normalisation statistics change). Deterministic: the start vector has its own generator, so the
    training RNG is untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    was_training = model.training
    model.eval()

    def hvp(vec: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for start in range(0, len(x), batch_size):
            value = loss(model(x[start : start + batch_size]), y[start : start + batch_size])
            grads = torch.autograd.grad(value, params, create_graph=True)
            dot = sum((g * u).sum() for g, u in zip(grads, vec, strict=True))
            for acc, h in zip(out, torch.autograd.grad(dot, params), strict=True):
                acc += h
        return out

    try:
        estimate = 0.0
        for _ in range(max_iter):
            norm = torch.sqrt(sum((u.double() ** 2).sum() for u in v))
            v = [u / norm.to(u.dtype) for u in v]
            hv = hvp(v)
            rayleigh = float(sum((h.double() * u.double()).sum() for h, u in zip(hv, v, strict=True)))
            if abs(rayleigh - estimate) <= rtol * abs(rayleigh):
                return rayleigh
            estimate, v = rayleigh, hv
        return estimate
    finally:
        model.train(was_training)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = True) -> list[dict]:
    """The trainable parameters as param groups, biases and normalisation parameters (1-D tensors) exempt
    from weight decay unless `decay_norm_and_bias`: what every optimiser kind here (and a plugin's) uses."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


@OPTIMISERS.register("sgd", SGDConfig)
def sgd(cfg: SGDConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def adam(cfg: AdamConfig, model: nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.kind == "adamw" else torch.optim.Adam
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


OPTIMISERS.register("adam", AdamConfig)(adam)
OPTIMISERS.register("adamw", AdamConfig)(adam)


class Schedule:
    """lr factor as a function of the step: linear warm-up, then constant / multistep / cosine to zero."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
        scale = steps_per_epoch if cfg.unit == "epochs" else 1
        self.kind = cfg.schedule
        self.warmup = round(cfg.warmup * scale)
        self.milestones = [round(m * scale) for m in cfg.milestones]
        self.gamma = cfg.gamma
        self.total = total_steps
        self.per_epoch = steps_per_epoch if cfg.schedule_per_epoch else 1

    @property
    def constant(self) -> bool:
        return self.kind == "constant" and self.warmup == 0

    def __call__(self, step: int) -> float:
        step -= step % self.per_epoch
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "multistep":
            return self.gamma ** bisect.bisect_right(self.milestones, step)
        if self.kind == "cosine":
            span = max(self.total - self.warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / span))
        return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor
