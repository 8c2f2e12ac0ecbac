"""The linear teacher–student regression of Pezeshki et al. (ICML 2022, Sec. 2; docs/studies/double_descent.md
§2), registered as the data kind `linear_teacher`.

A latent input z ~ N(0, I/d) is seen by the teacher directly, y = zᵀw + σε with w ~ N(0, I_d), and by the
student through a modulation matrix F, x = Fᵀz. F = U diag(s) Vᵀ with Haar orthogonal U, V sets how fast
each direction is learned: the paper's two groups are p "fast" directions with s = 1 and d − p "slow" ones
with s = 1/κ (κ is the condition number of F). Any number of groups, or a power law s_i = i^(−power), is an
option. Training labels are noisy, test labels are not.

`sample_teachers` draws many data sets at once for the closed forms (theory/double_descent.py); the data
kind is one of them (`seed` = the draw), so a trained run and the theory can be compared draw by draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ..registry import DATA
from ..sections import DataConfig
from .dataset import Dataset, Split

_TEACHER_STREAM = 9  # numpy SeedSequence key apart from the other data streams


class LinearTeacherConfig(DataConfig):
    """One draw of the linear teacher–student data. The spectrum of F: `p` fast directions (s = 1) and d − p
    slow ones (s = 1/kappa); or `groups` = [[size, s], ...] summing to d; or `power`: s_i = i^(−power)."""

    kind: Literal["linear_teacher"] = "linear_teacher"
    n: PositiveInt = 150  # training samples
    d: PositiveInt = 100  # input dimension
    p: NonNegativeInt = 70  # fast directions
    kappa: Annotated[float, Field(ge=1)] = 100.0  # condition number of F
    sigma: NonNegativeFloat = 0.0  # label noise of the training set (test labels are noiseless)
    n_test: PositiveInt = 1000
    groups: list[tuple[PositiveInt, PositiveFloat]] | None = None
    power: PositiveFloat | None = None
    seed: int = 0  # the draw

    @model_validator(mode="after")
    def _spectrum(self) -> LinearTeacherConfig:
        if self.groups is not None and self.power is not None:
            raise ValueError("give at most one of data.groups and data.power")
        if self.groups is not None and sum(size for size, _ in self.groups) != self.d:
            raise ValueError(f"data.groups sizes sum to {sum(s for s, _ in self.groups)}, not d = {self.d}")
        if self.groups is None and self.power is None and self.p > self.d:
            raise ValueError(f"data.p = {self.p} exceeds d = {self.d}")
        return self

    def singular_values(self) -> np.ndarray:
        return singular_values(self.d, self.p, self.kappa, self.groups, self.power)


def singular_values(
    d: int,
    p: int,
    kappa: float,
    groups: Sequence[tuple[int, float]] | None = None,
    power: float | None = None,
) -> np.ndarray:
    """The d singular values of F, largest first."""
    if power is not None:
        return np.arange(1, d + 1, dtype=np.float64) ** -power
    if groups is None:
        groups = [(p, 1.0), (d - p, 1.0 / kappa)]
    return np.concatenate([np.full(size, float(s)) for size, s in groups])


@dataclass
class TeacherDraws:
    """Draws stacked on the first axis: x (S, n, d) = z F, y (S, n) noisy, x_test (S, n_test, d), y_test
    (S, n_test) noiseless, F (S, d, d), w (S, d) the teacher, s (d,) the singular values of F."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    F: np.ndarray
    w: np.ndarray
    s: np.ndarray
    sigma: float

    def __len__(self) -> int:
        return len(self.x)


def haar_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed
    (Mezzadri 2007), else Q is biased."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diagonal(r))


def sample_teachers(
    n: int,
    s: np.ndarray,
    sigma: float = 0.0,
    seeds: Sequence[int] | int = 1,
    n_test: int = 1000,
) -> TeacherDraws:
    """Draws of the data, one per seed (an int k means seeds 0..k-1). Draw `seed` equals the data kind's
    `seed`, whatever the other draws are, so a draw can be trained on and predicted in closed form."""
    s = np.asarray(s, dtype=np.float64)
    d = len(s)
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "y", "x_test", "y_test", "F", "w")}
    for seed in seeds:
        rng = np.random.default_rng([seed, _TEACHER_STREAM])
        z = rng.standard_normal((n, d)) / np.sqrt(d)
        w = rng.standard_normal(d)
        noise = rng.standard_normal(n)
        z_test = rng.standard_normal((n_test, d)) / np.sqrt(d)
        F = (haar_orthogonal(rng, d) * s) @ haar_orthogonal(rng, d).T
        for key, value in (
            ("x", z @ F),
            ("y", z @ w + sigma * noise),
            ("x_test", z_test @ F),
            ("y_test", z_test @ w),
            ("F", F),
            ("w", w),
        ):
            parts[key].append(value)
    stacked = {k: np.stack(v) for k, v in parts.items()}
    return TeacherDraws(**stacked, s=s, sigma=float(sigma))


@DATA.register("linear_teacher", LinearTeacherConfig)
def linear_teacher(cfg: LinearTeacherConfig) -> Dataset:
    """A regression (targets (n, 1)); `extras` hold the teacher w and F for the teacher probe."""
    draw = sample_teachers(cfg.n, cfg.singular_values(), cfg.sigma, [cfg.seed], cfg.n_test)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[0])).float()

    train = Split(tensor(draw.x), tensor(draw.y)[:, None])
    test = Split(tensor(draw.x_test), tensor(draw.y_test)[:, None])
    extras = {"teacher": torch.from_numpy(draw.w[0]), "modulation": torch.from_numpy(draw.F[0])}
    return Dataset(train, {"train": train, "test": test}, num_classes=1, extras=extras)
