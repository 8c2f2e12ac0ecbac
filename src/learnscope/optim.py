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


# --- SGD on the sphere at a fixed effective learning rate ---------------------------------------------------


class SphereSGDConfig(OptimConfig):
    """SGD of a scale-invariant model on the sphere of its initial SI norm ρ, at a fixed effective learning
    rate (Kodryan et al., NeurIPS 2022; docs/studies/sphere_regimes.md): lr = elr·ρ², then every step is
    rescaled back to the sphere, which is projected SGD on the unit sphere with step `elr`. The SI set is
    found from the architecture (models/scale_invariant.py); other trainable parameters take `other_lr`."""

    kind: Literal["sphere_sgd"] = "sphere_sgd"
    elr: PositiveFloat = 1e-3
    # whole: one sphere for the SI vector (the original); layer: one per group of parameters that is
    # scale-invariant on its own (each layer of ConvNetSI and MLPSI; ResNet18SI's joint groups)
    sphere: Literal["whole", "layer"] = "whole"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # tangent: the buffer is projected onto the tangent space at every step (Riemannian momentum); plain:
    # torch's buffer as it is (the original's behaviour, which only warns that it is ambiguous)
    momentum_mode: Literal["tangent", "plain"] = "tangent"
    other_lr: NonNegativeFloat = 0.0  # the original's noninvlr: a frozen head has no trainable parameters


class _HostScalars:
    """SphereSGD's scalar arithmetic as Python floats (float64), read from the Gram matrix in one transfer."""

    @staticmethod
    def read(gram: torch.Tensor) -> list[list[float]]:
        return gram.tolist()

    @staticmethod
    def sqrt(x: float) -> float:
        return math.sqrt(max(x, 0.0))

    @staticmethod
    def degrees_atan2(y: float, x: float) -> float:
        return math.degrees(math.atan2(y, x))

    @staticmethod
    def scale(tensors: list[torch.Tensor], factor: float) -> None:
        torch._foreach_mul_(tensors, factor)

    @staticmethod
    def add_scaled(tensors: list[torch.Tensor], others: list[torch.Tensor], factor: float) -> None:
        torch._foreach_add_(tensors, others, alpha=factor)


class _DeviceScalars:
    """The same as float64 device scalars: no host sync (the update takes them cast to the weights' dtype)."""

    @staticmethod
    def read(gram: torch.Tensor) -> torch.Tensor:
        return gram

    @staticmethod
    def sqrt(x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x.clamp_min(0))

    @staticmethod
    def degrees_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.rad2deg(torch.atan2(y, x))

    @staticmethod
    def scale(tensors: list[torch.Tensor], factor: torch.Tensor) -> None:
        torch._foreach_mul_(tensors, factor.to(tensors[0].dtype))

    @staticmethod
    def add_scaled(tensors: list[torch.Tensor], others: list[torch.Tensor], factor) -> None:
        factor = torch.as_tensor(factor, dtype=tensors[0].dtype, device=tensors[0].device)
        torch._foreach_add_(tensors, torch._foreach_mul(others, factor))


class SphereSGD(torch.optim.Optimizer):
    """Projected SGD on spheres. Group 0 holds the SI tensors with lr = elr·ρ² and its radii (saved with the
    optimiser's state), group 1 (if any) the other trainable parameters, plain SGD at `other_lr`.

    One step on a sphere of radius ρ through w: g = ∇L(w) (tangent already for an SI loss; projected anyway),
    b = m·P_w b + P_w g (tangent mode) or b = m·b + g (plain), w' = w − lr·b, then w ← ρ·w'/‖w'‖. With
    u = w/ρ and lr = elr·ρ², u' = (u − elr·∇L(u))/‖u − elr·∇L(u)‖ for m = 0: the angle turned is
    arctan(elr·‖∇L(u)‖). The optimiser accumulates, on the device (no host sync), the angle turned and the
    effective gradient norm ‖∇L(u)‖ = ρ‖∇L(w)‖ of every step; `step_statistics()` reads and resets them.
    """

    def __init__(self, si_params, other_params=(), *, elr: float, sphere: str = "whole",
                 momentum: float = 0.0, momentum_mode: str = "tangent", other_lr: float = 0.0,
                 sphere_sizes: list[int] | None = None):  # fmt: skip
        """`sphere_sizes` (layer mode): how many consecutive tensors of `si_params` share each sphere
        (default: one tensor each)."""
        si_params = list(si_params)
        if not si_params:
            raise ConfigError("optim.kind=sphere_sgd: the model has no scale-invariant parameters")
        sizes = [len(si_params)] if sphere == "whole" else list(sphere_sizes or [1] * len(si_params))
        if sum(sizes) != len(si_params):
            raise ValueError(f"sphere_sizes {sizes} do not add up to {len(si_params)} tensors")
        with torch.no_grad():
            squares = [float(torch.linalg.vector_norm(p.double())) ** 2 for p in si_params]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        radii = [math.sqrt(sum(squares[a : a + n])) for a, n in zip(starts, sizes, strict=True)]
        if min(radii) == 0:
            raise ConfigError("optim.kind=sphere_sgd: a scale-invariant parameter starts at zero norm")
        groups = [{"params": si_params, "lr": elr * radii[0] ** 2 if sphere == "whole" else elr,
                   "radii": radii, "sphere_sizes": sizes, "scale_invariant": True}]  # fmt: skip
        other = [p for p in other_params if p.requires_grad]
        if other and other_lr > 0:
            groups.append(
                {"params": other, "lr": other_lr, "radii": [], "sphere_sizes": [], "scale_invariant": False}
            )
        super().__init__(groups, {"momentum": momentum, "sphere": sphere, "momentum_mode": momentum_mode,
                                  "elr": elr})  # fmt: skip
        device = si_params[0].device
        self.host_scalars = device.type == "cpu"  # see _sphere_step
        self._gram_rows: dict[tuple[int, int], torch.Tensor] = {}  # see _gram
        self._angle_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._grad_norm_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._steps = 0

    def _spheres(self, group) -> list[list[torch.Tensor]]:
        params, out, start = group["params"], [], 0
        for size in group["sphere_sizes"]:
            out.append(params[start : start + size])
            start += size
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            if not group["scale_invariant"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])
                continue
            spheres = self._spheres(group)
            for params, radius in zip(spheres, group["radii"], strict=True):
                # whole: the group's lr is elr·ρ²; per layer it holds elr and each sphere takes elr·ρ_l²
                lr = group["lr"] if group["sphere"] == "whole" else group["lr"] * radius**2
                angle, grad_norm = self._sphere_step(group, params, radius, lr)
                self._angle_sum += angle / len(spheres)
                self._grad_norm_sum += grad_norm / len(spheres)
        self._steps += 1
        return loss

    def _gram(self, *vectors: list[torch.Tensor]) -> torch.Tensor:
        """The float64 Gram matrix of vectors given as lists of tensors (each list one vector): each vector
        concatenated into a row of one float64 buffer kept per sphere and size, then one product, not a pass
        per tensor and pair (the step's cost on small models)."""
        key = (id(vectors[0][0]), len(vectors))
        rows = self._gram_rows.get(key)
        if rows is None:
            size = sum(t.numel() for t in vectors[0])
            rows = torch.empty(len(vectors), size, dtype=torch.float64, device=vectors[0][0].device)
            self._gram_rows[key] = rows
        for row, v in zip(rows, vectors, strict=True):
            torch.cat([t.reshape(-1) for t in v], out=row)
        return rows @ rows.T

    def _sphere_step(self, group, params, radius: float, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on one sphere; returns (angle turned in degrees, effective gradient norm ρ‖P g‖).
        Everything the step needs of the vectors comes from Gram matrices; the update is w ← s·(a·w − lr·b)
        by foreach ops. The scalars in between are a dozen float64 operations: on the CPU they are done on
        the host (`host_scalars`), where a tensor op per scalar would cost more than the step's arithmetic
        on a small model; on an accelerator they stay device scalars, so a step never waits for the device."""
        m, tangent = group["momentum"], group["momentum_mode"] == "tangent"
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        scalars = _HostScalars if self.host_scalars else _DeviceScalars
        if m == 0:
            gram = scalars.read(self._gram(params, grads))
        else:  # b = m·b + g, then one Gram matrix of (w, g, b)
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            if buffers[0] is None:
                buffers = [g.clone() for g in grads]
                for p, buf in zip(params, buffers, strict=True):
                    self.state[p]["momentum_buffer"] = buf
            else:
                torch._foreach_mul_(buffers, m)
                torch._foreach_add_(buffers, grads)
            gram = scalars.read(self._gram(params, grads, buffers))
        w_sq, w_g, g_sq = gram[0][0], gram[0][1], gram[1][1]
        # the tangent gradient P g = g − c·w (c = 0 without projection), its norm from the Gram matrix
        c = w_g / w_sq if tangent else 0.0
        grad_norm = scalars.sqrt(g_sq - 2 * c * w_g + c * c * w_sq) * radius
        if m == 0:  # the direction b = g − c·w: w·b and b·b from the same Gram matrix
            direction, a = grads, 1 + lr * c
            w_b, b_sq = w_g - c * w_sq, g_sq - 2 * c * w_g + c * c * w_sq
        else:
            direction, a = buffers, 1.0
            w_b, b_sq = gram[0][2], gram[2][2]
            if tangent:  # the buffer projected onto this point's tangent space, and kept so (P b: w·P b = 0)
                k = w_b / w_sq
                scalars.add_scaled(direction, params, -k)
                w_b, b_sq = w_b - k * w_sq, b_sq - 2 * k * w_b + k * k * w_sq
        # w' = a·w − lr·b; the angle between w and w' (the rescaling does not turn it), by atan2: accurate for
        # the tiny angles of the convergence regime, where an arccos of a cosine near 1 is not
        along = a * w_sq - lr * w_b  # w·w'
        new_sq = a * a * w_sq - 2 * a * lr * w_b + lr * lr * b_sq
        across = scalars.sqrt(new_sq * w_sq - along * along)  # ‖w‖‖w'‖ sin θ
        angle = scalars.degrees_atan2(across, along)
        scale = radius / scalars.sqrt(new_sq)
        scalars.scale(params, scale * a)
        scalars.add_scaled(params, direction, -lr * scale)
        return angle, grad_norm

    def state_dict(self) -> dict:
        """torch's state, plus the step statistics accumulated since they were last read, so a run resumed
        from a checkpoint between two probes reports what the uninterrupted run would have."""
        state = super().state_dict()
        state["step_statistics"] = {
            "angle_sum": self._angle_sum.clone(),
            "grad_norm_sum": self._grad_norm_sum.clone(),
            "steps": self._steps,
        }
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        stats = state_dict.pop("step_statistics", None)
        super().load_state_dict(state_dict)
        if stats is not None:
            self._angle_sum.copy_(stats["angle_sum"])
            self._grad_norm_sum.copy_(stats["grad_norm_sum"])
            self._steps = int(stats["steps"])

    def step_statistics(self) -> dict[str, float]:
        """Mean angle turned per step (degrees; per sphere, averaged over spheres) and mean effective gradient
        norm ρ‖g‖ since the last call, then reset (one read-back)."""
        if self._steps == 0:
            return {}
        angle, grad = (torch.stack([self._angle_sum, self._grad_norm_sum]) / self._steps).tolist()
        self._angle_sum.zero_()
        self._grad_norm_sum.zero_()
        self._steps = 0
        return {"angle": angle, "effective_grad_norm": grad}


@OPTIMISERS.register("sphere_sgd", SphereSGDConfig)
def sphere_sgd(cfg: SphereSGDConfig, model: nn.Module) -> torch.optim.Optimizer:
    from .models.scale_invariant import scale_invariant_groups

    groups = [[p for _, p in group] for group in scale_invariant_groups(model)]
    si = [p for group in groups for p in group]
    if not si:
        raise ConfigError(
            f"optim.kind=sphere_sgd needs a scale-invariant model (bias-free layers feeding BatchNorm, e.g. "
            f"mlp_si, convnet_si, resnet18_si); {type(model).__name__} has no scale-invariant parameters"
        )
    ids = {id(p) for p in si}
    other = [p for p in model.parameters() if id(p) not in ids]
    return SphereSGD(si, other, elr=cfg.elr, sphere=cfg.sphere, momentum=cfg.momentum,
                     momentum_mode=cfg.momentum_mode, other_lr=cfg.other_lr,
                     sphere_sizes=[len(group) for group in groups])  # fmt: skip
