"""Probes: functions of the training state returning flat `{name: float}` records, run at scheduled steps.

A probe kind is a builder registered with its config class; the builder returns a callable that takes a
`ProbeContext` and returns a dict. Probes must not consume the training RNG. A probe that keeps state from
one probe step to the next (the previous weights, for an angle turned since) is an object with `state_dict()`
and `load_state_dict(state)` as well (tensors, numbers, lists and dicts): checkpoints save that state, so a
resumed run writes the same records.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..config import ProbesConfig
from ..errors import ConfigError
from ..registry import PROBES
from . import collapse, evaluation, norms, predictions, sharpness, sphere, teacher  # noqa: F401 (registers the built-in probes)
from .context import ProbeContext

__all__ = ["Probe", "ProbeContext", "Steps", "build_probes", "log_spaced_steps", "probe_steps"]

# More log-spaced probe points than this is a mistake (the records alone would not fit), refused in one line.
MAX_LOG_POINTS = 1_000_000


Probe = Callable[[ProbeContext], dict[str, float]]


def build_probes(cfg: ProbesConfig) -> list[Probe]:
    return [PROBES.builder(p.kind)(p) for p in cfg.use]


class Steps:
    """A set of steps in 0..`last`: a few steps named one by one, and progressions (every k-th step from a
    first one). Its size and the cost of `in` do not grow with the run's length, so a run of 10^12 steps sets
    up as fast as one of 100. Iterating yields the steps in order (as many as there are)."""

    def __init__(self, last: int, named: Iterable[int] = (), every: Iterable[tuple[int, int]] = ()):
        self.last = last
        self.named = {s for s in named if 0 <= s <= last}
        self.every = sorted({(first, k) for first, k in every if k > 0 and first <= last})

    def __contains__(self, step: int) -> bool:
        if step in self.named:
            return True
        return 0 <= step <= self.last and any(step >= a and (step - a) % k == 0 for a, k in self.every)

    def add(self, step: int) -> None:
        if 0 <= step <= self.last:
            self.named.add(step)

    def __or__(self, other: Steps) -> Steps:
        return Steps(max(self.last, other.last), self.named | other.named, [*self.every, *other.every])

    def __iter__(self) -> Iterator[int]:
        streams = [sorted(self.named), *(range(a, self.last + 1, k) for a, k in self.every)]
        previous = None
        for step in heapq.merge(*streams):
            if step != previous:
                yield step
                previous = step

    def __len__(self) -> int:
        return sum(1 for _ in self)


def probe_steps(cfg: ProbesConfig, total_steps: int, steps_per_epoch: int) -> Steps:
    """Steps at which probes run; step s means after s updates. Always includes 0 and the last step."""
    steps = Steps(total_steps, {0, total_steps})
    if "log" in cfg.schedule:
        steps = steps | Steps(total_steps, log_spaced_steps(total_steps, cfg.points))
    if "every" in cfg.schedule:
        steps = steps | Steps(total_steps, every=[(0, cfg.every)])
    if "epochs" in cfg.schedule:
        steps = steps | Steps(total_steps, every=[(0, steps_per_epoch)])
    return steps


def log_spaced_steps(last: int, points: int) -> list[int]:
    """`points` log-spaced steps from 1 to `last`, rounded to unique integers, plus 0."""
    if points > MAX_LOG_POINTS:
        raise ConfigError(f"probes.points={points}: at most {MAX_LOG_POINTS:,} log-spaced probe steps")
    if last < 1:
        return [0]
    grid = np.unique(np.round(np.logspace(0, np.log10(last), points)).astype(int))
    return [0, *grid.tolist()]
