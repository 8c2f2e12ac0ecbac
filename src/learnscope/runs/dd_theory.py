"""Closed-form double-descent curves as runs (run kind `dd_theory`): stored, swept and reported like
experiments, with records (t, R, Q, eg, eg_clean, ...) that `load_runs` reads next to trained runs. `eg` is
the paper's Eq. 6 as written, ½(1 + σ² − 2R + Q); `eg_clean` = ½(1 − 2R + Q) the error on noiseless labels
(docs/studies/double_descent.md §2).

`form = "approx"` is the paper's fast–slow formula (Pezeshki et al. 2022, Eqs. 12 and 14 into Eq. 6;
docs/studies/double_descent.md §4) on a log grid of times; `form = "exact"` averages the exact curves of
`draws` finite data sets (§3), gradient descent at integer steps or gradient flow. The theory itself is in
`theory/double_descent.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ..config import RunKindConfig
from ..data.teachers import sample_teachers, singular_values
from ..registry import RUN_KINDS
from ..theory.double_descent import APPROX_T_SHIFT, approx_curves, curve_summary, exact_curves
from .lifecycle import RunResult, computed_run


class DoubleDescentTheoryConfig(RunKindConfig):
    """One theoretical curve of the linear teacher–student model (defaults: the paper's Fig. 1)."""

    kind: Literal["dd_theory"] = "dd_theory"
    name: str = ""
    form: Literal["approx", "exact"] = "approx"
    features: Literal["both", "fast", "slow"] = "both"  # approx: learn both groups, or one only
    dynamics: Literal["gd", "flow"] = "gd"  # exact: gradient descent (integer steps) or gradient flow
    n: PositiveInt = 150
    d: PositiveInt = 100
    p: NonNegativeInt = 70
    kappa: Annotated[float, Field(ge=1)] = 100.0
    sigma: NonNegativeFloat = 0.0
    l2: NonNegativeFloat = 0.0
    groups: list[tuple[PositiveInt, PositiveFloat]] | None = None  # exact: the spectrum of F (teachers.py)
    power: PositiveFloat | None = None  # exact: s_i = i^-power
    draws: PositiveInt = 32  # exact: data sets averaged
    seed: int = 0  # exact: the first draw (draw k is the data kind linear_teacher with seed k)
    points: PositiveInt = 300  # times 10^linspace(log10 t_min, log10 t_max, points), as the original
    t_min: PositiveFloat = 1e-3
    t_max: PositiveFloat = 1e8

    @model_validator(mode="after")
    def _consistent(self) -> DoubleDescentTheoryConfig:
        if self.form == "approx" and (self.groups is not None or self.power is not None):
            raise ValueError(
                "groups and power are options of form=exact (the approximate form has two groups)"
            )
        if self.form == "exact" and self.features != "both":
            raise ValueError("features=fast|slow are variants of form=approx")
        if self.groups is None and self.power is None and self.p > self.d:
            raise ValueError(f"p = {self.p} exceeds d = {self.d}")
        if self.t_max <= self.t_min:
            raise ValueError(f"t_max = {self.t_max} must exceed t_min = {self.t_min}")
        return self

    def times(self) -> np.ndarray:
        """The grid; for exact gradient descent its distinct whole steps (0 included)."""
        grid = np.logspace(np.log10(self.t_min), np.log10(self.t_max), self.points)
        if self.form == "exact" and self.dynamics == "gd":
            grid = np.unique(np.round(grid))
        return grid


def theory_curve(cfg: DoubleDescentTheoryConfig) -> dict[str, np.ndarray]:
    """The setting's curve: t, R, Q, eg (the paper's Eq. 6) and eg_clean (noiseless labels); the exact form
    averages over its draws and adds eg_draw (each draw's noiseless-label error with its own ‖w‖²/d, what a
    trained student's `teacher` probe measures) and eg_std (the standard deviation of eg over the draws)."""
    t = cfg.times()
    if cfg.form == "approx":
        curves = approx_curves(cfg.n, cfg.d, cfg.p, cfg.kappa, cfg.sigma, cfg.l2, t, cfg.features)
        return {"t": t, "R": curves.R, "Q": curves.Q, "eg": curves.eg, "eg_clean": curves.eg_clean}
    s = singular_values(cfg.d, cfg.p, cfg.kappa, cfg.groups, cfg.power)
    draws = sample_teachers(cfg.n, s, cfg.sigma, range(cfg.seed, cfg.seed + cfg.draws))
    curves = exact_curves(draws, t, cfg.l2, cfg.dynamics)
    mean = curves.mean()
    return {
        "t": t,
        "R": mean.R,
        "Q": mean.Q,
        "eg": mean.eg,
        "eg_clean": mean.eg_clean,
        "eg_draw": mean.eg_draw,
        "eg_std": curves.eg.std(0),
    }


def reported_t(form: str, t: np.ndarray) -> np.ndarray:
    """The times a curve is plotted and summarised at: t + 1 for the approximate form, as the paper plots it
    (docs/studies/double_descent.md §4.1), t itself for the exact form."""
    return t + APPROX_T_SHIFT if form == "approx" else t


def summary(cfg: DoubleDescentTheoryConfig, curve: dict[str, np.ndarray]) -> dict[str, Any]:
    """`curve_summary` of the curve's eg (the paper's Eq. 6) at its reported times: first minimum, peak, a
    second minimum inside the window or what the curve does at its end."""
    return curve_summary(reported_t(cfg.form, curve["t"]), curve["eg"])


@RUN_KINDS.register("dd_theory", DoubleDescentTheoryConfig)
def run_dd_theory(
    cfg: DoubleDescentTheoryConfig, store: str | Path = "runs", quiet: bool = True
) -> RunResult:
    """The curve of `cfg` (read back when stored), one record per time."""

    def compute():
        curve = theory_curve(cfg)
        columns = list(curve)
        for row in zip(*(curve[c] for c in columns), strict=True):
            yield {c: float(v) for c, v in zip(columns, row, strict=True)}

    return computed_run(store, cfg, compute)
