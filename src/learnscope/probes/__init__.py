"""Probes: functions of the training state returning flat `{name: float}` records, run at scheduled steps.

A probe kind is a builder registered with its config class; the builder returns a callable that takes a
`ProbeContext` and returns a dict. Probes must not consume the training RNG. A probe that keeps state from
one probe step to the next (the previous weights, for an angle turned since) is an object with `state_dict()`
and `load_state_dict(state)` as well (tensors, numbers, lists and dicts): checkpoints save that state, so a
resumed run writes the same records.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import ProbesConfig
from ..registry import PROBES
from . import collapse, evaluation, norms, predictions, sharpness, sphere, teacher  # noqa: F401 (registers the built-in probes)
from .context import ProbeContext

__all__ = ["Probe", "ProbeContext", "build_probes", "log_spaced_steps", "probe_steps"]


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
