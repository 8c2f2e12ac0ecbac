"""Probes: functions of the training state returning flat `{name: float}` records, run at scheduled steps.

A probe kind is a builder registered with its config class; the builder returns a callable that takes a
`ProbeContext` and returns a dict. Probes must not consume the training RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ProbesConfig
from ..data.dataset import Dataset
from ..registry import PROBES


@dataclass
class ProbeContext:
    model: nn.Module
    data: Dataset
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # summed over the batch
    step: int
    batch_size: int  # evaluation batch
    # What one probe computed at a step for others at the same step (e.g. the evaluation probe's argmax
    # predictions, read by the predictions probe): key -> (step, value). Entries of other steps are stale.
    shared: dict[Any, tuple[int, Any]] = field(default_factory=dict)

    def publish(self, key: Any, value: Any) -> None:
        self.shared[key] = (self.step, value)

    def lookup(self, key: Any) -> Any:
        """What was published under `key` at the current step, else None."""
        step, value = self.shared.get(key, (None, None))
        return value if step == self.step else None


Probe = Callable[[ProbeContext], dict[str, float]]


def build_probes(cfg: ProbesConfig) -> list[Probe]:
    return [PROBES.builder(p.kind)(p) for p in cfg.use]


def probe_steps(cfg: ProbesConfig, total_steps: int, steps_per_epoch: int) -> list[int]:
    """Sorted steps at which probes run; step s means after s updates. Always includes 0 and the last step."""
    steps = {0, total_steps}
    if "log" in cfg.schedule:
        steps |= set(log_spaced_steps(total_steps, cfg.points))
    if "every" in cfg.schedule:
        steps |= set(range(0, total_steps + 1, cfg.every))
    if "epochs" in cfg.schedule:
        steps |= set(range(0, total_steps + 1, steps_per_epoch))
    return sorted(steps)


def log_spaced_steps(last: int, points: int) -> list[int]:
    """`points` log-spaced steps from 1 to `last`, rounded to unique integers, plus 0."""
    if last < 1:
        return [0]
    grid = np.unique(np.round(np.logspace(0, np.log10(last), points)).astype(int))
    return [0, *grid.tolist()]


from . import collapse, evaluation, norms, predictions  # noqa: E402,F401  (registers the built-in probes)
