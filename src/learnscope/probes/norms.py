"""Parameter norms of the probed layers: the simplest probe that reads a model by layer names."""

from __future__ import annotations

from typing import Literal

import torch

from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext
from .hooks import layer_names


class NormsConfig(ProbeConfig):
    kind: Literal["norms"] = "norms"
    layers: list[str] = []  # module names; empty: the model's probe_layers()


@PROBES.register("norms", NormsConfig)
def norms(cfg: NormsConfig):
    def probe(ctx: ProbeContext) -> dict[str, float]:
        names = layer_names(ctx.model, cfg.layers)
        modules = dict(ctx.model.named_modules())
        values = torch.stack(
            [torch.linalg.vector_norm(modules[n].weight.detach().double()) for n in names]
            + [torch.sqrt(sum(p.detach().double().pow(2).sum() for p in ctx.model.parameters()))]
        ).tolist()
        return {**{f"norm/{n}": v for n, v in zip(names, values, strict=False)}, "norm/all": values[-1]}

    return probe
