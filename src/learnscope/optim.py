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
    reduction="sum" sums the per-sample losses."""
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
    raise ValueError(f"unknown loss {name!r}")


class SGDConfig(OptimConfig):
    kind: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 0.05
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
