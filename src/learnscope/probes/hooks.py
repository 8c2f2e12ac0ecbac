"""Reading a model's layers by name: probes use these, so they work on any nn.Module, ours or the user's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import ConfigError


def layer_names(model: nn.Module, requested: list[str] | None = None) -> list[str]:
    """The layers to probe: `requested` if given (checked), else the model's own `probe_layers()`."""
    modules = dict(model.named_modules())
    if requested:
        unknown = [n for n in requested if n not in modules]
        if unknown:
            known = ", ".join(n for n in modules if n)
            raise ConfigError(
                f"probe layers {unknown} are not modules of {type(model).__name__}; it has: {known}"
            )
        return list(requested)
    if hasattr(model, "probe_layers"):
        return list(model.probe_layers())
    raise ConfigError(
        f"{type(model).__name__} has no probe_layers(): name the layers to probe (the probe's `layers`)"
    )


@contextlib.contextmanager
def capture(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass stores each named module's output in the yielded dict."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def hook(_module, _inputs, output, name=name):
            outputs[name] = output

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
