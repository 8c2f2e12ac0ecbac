"""Sharpness: the top eigenvalue (and optionally the trace) of the Hessian of the training loss, on a fixed
subset of the training set, by Lanczos or power iteration on Hessian-vector products (curvature.py).

The loss is the training objective's mean: the context's summed loss over the subset divided by its size.
In train mode (the default) BatchNorm normalises by batch statistics, per chunk of `batch_size` samples, as
in training, and its running statistics are left as they were; the model's parameters, buffers, modes and
the global RNG are left exactly as found (stochastic layers draw fixed masks from the probe's own seed).

`params="scale_invariant"` differentiates only the model's scale-invariant parameters θ (found from the
architecture, models/scale_invariant.py) and also records the values at the unit-sphere point θ/‖θ‖: for a
scale-invariant loss H(θ/‖θ‖) = ‖θ‖²·H(θ) (up to BatchNorm's ε, which adds ε/‖θ‖² to the normalised
variance), so `top_eig_unit = top_eig·‖θ‖²` (and `trace_unit`): the sharpness in the units of SGD on the
unit sphere at an effective learning rate (Kodryan et al., NeurIPS 2022; docs/studies/sphere_regimes.md).
`tangent=True` restricts to the tangent space of that sphere (P H P, the Riemannian Hessian of an SI loss):
directions that only rescale θ are left out. Scale invariance holds in train mode; in eval mode BatchNorm's
running statistics make the loss depend on ‖θ‖.

Records: `sharpness/top_eig`, with `trace_samples` ≥ 2 `sharpness/trace` and `sharpness/trace_se`, with
scale-invariant parameters `sharpness/top_eig_unit` (and `sharpness/trace_unit`). One host read-back.
"""

from __future__ import annotations

from typing import Literal, Self

import torch
from pydantic import NonNegativeInt, PositiveInt, model_validator
from torch import Tensor, nn

from ..curvature import hutchinson_trace, hvp_operator, top_eigenvalue
from ..data.dataset import Split
from ..errors import ConfigError
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext


class SharpnessConfig(ProbeConfig):
    kind: Literal["sharpness"] = "sharpness"
    samples: PositiveInt | Literal["all"] = 512  # training samples: a fixed subset drawn with `seed`
    iters: PositiveInt = 20  # Lanczos steps or power iterations (Hessian-vector products)
    method: Literal["lanczos", "power"] = "lanczos"  # largest eigenvalue, or largest in magnitude
    trace_samples: NonNegativeInt = 0  # Hutchinson's Rademacher vectors for the trace (0: no trace)
    params: Literal["all", "scale_invariant"] = "all"  # which parameters the Hessian is over
    tangent: bool = False  # with scale_invariant: the tangent space of their sphere only
    mode: Literal["train", "eval"] = "train"  # the model's mode for the loss (BatchNorm batch statistics)
    batch_size: PositiveInt | None = None  # chunk size of the products; None: the probes' batch size
    backend: Literal["autograd", "func"] = "autograd"  # double backward, or torch.func forward over reverse
    seed: NonNegativeInt = 0  # the subset, the start and Rademacher vectors, dropout masks

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.tangent and self.params != "scale_invariant":
            raise ValueError("tangent=true needs params='scale_invariant' (the sphere of those parameters)")
        if self.trace_samples == 1:
            raise ValueError("trace_samples must be 0 (no trace) or at least 2 (for a standard error)")
        return self


def training_subset(split: Split, samples: int | Literal["all"], seed: int) -> tuple[Tensor, Tensor]:
    """`samples` training samples, the same at every step (a private generator; sorted indices), or all."""
    n = len(split)
    if samples == "all" or samples >= n:
        return split.x, split.y
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=generator)[:samples].sort().values.to(split.x.device)
    return split.x[index], split.y[index]


def _parameters(model: nn.Module, which: str) -> list[nn.Parameter]:
    if which == "all":
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        from ..models.scale_invariant import scale_invariant_parameters

        params = [p for _, p in scale_invariant_parameters(model)]
    if not params:
        what = "scale-invariant " if which == "scale_invariant" else "trainable "
        raise ConfigError(f"probe sharpness: {type(model).__name__} has no {what}parameters")
    return params


@PROBES.register("sharpness", SharpnessConfig)
def sharpness(cfg: SharpnessConfig):
    def probe(ctx: ProbeContext) -> dict[str, float]:
        model = ctx.model
        x, y = training_subset(ctx.data.train, cfg.samples, cfg.seed)
        params = _parameters(model, cfg.params)
        modes = [(m, m.training) for m in model.modules()]
        model.train(cfg.mode == "train")
        try:
            op = hvp_operator(
                model,
                x,
                y,
                ctx.loss,
                params,
                cfg.batch_size or ctx.batch_size,
                scale=1.0 / len(y),
                tangent=cfg.tangent,
                backend=cfg.backend,
                seed=cfg.seed,
            )
            values: dict[str, Tensor] = {}
            if cfg.trace_samples:
                values["trace"], values["trace_se"] = hutchinson_trace(op, cfg.trace_samples, seed=cfg.seed)
            values["top_eig"] = top_eigenvalue(op, cfg.iters, method=cfg.method, seed=cfg.seed)
        finally:
            for m, training in modes:
                m.training = training
        if cfg.params == "scale_invariant":
            values["norm_sq"] = sum(p.detach().double().pow(2).sum() for p in params)
        host = dict(zip(values, torch.stack(list(values.values())).cpu().tolist(), strict=True))
        record = {f"sharpness/{k}": host[k] for k in ("top_eig", "trace", "trace_se") if k in host}
        if "norm_sq" in host:
            record["sharpness/top_eig_unit"] = host["top_eig"] * host["norm_sq"]
            if "trace" in host:
                record["sharpness/trace_unit"] = host["trace"] * host["norm_sq"]
        return record

    return probe
