"""Losses, optimisers and learning-rate schedules.

The schedule is a pure function of the step: `lr_factor(step)` multiplies each group's base lr. It has no
state of its own, so a checkpoint needs only the step to restore it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdamConfig, SGDConfig, TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_function(name: str, reduction: str = "mean") -> LossFn:
    """`ce`: cross-entropy on logits. `mse`: squared error to one-hot targets, averaged over batch and classes
    (PyTorch's MSELoss, as the neural-collapse code). reduction="sum" sums the per-sample losses."""
    if name == "ce":
        return lambda out, y: F.cross_entropy(out, y, reduction=reduction)
    if name == "mse":

        def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = F.one_hot(y, out.shape[-1]).to(out.dtype)
            per_sample = (out - target).pow(2).mean(dim=-1)
            return per_sample.sum() if reduction == "sum" else per_sample.mean()

        return mse
    raise ValueError(f"unknown loss {name!r}")


def build_optimizer(cfg: SGDConfig | AdamConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser, with biases and normalisation parameters (1-D tensors) exempt from decay if asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_norm_and_bias or cfg.weight_decay == 0:
        groups: list[dict] = [{"params": params}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if cfg.kind == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.kind == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


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
