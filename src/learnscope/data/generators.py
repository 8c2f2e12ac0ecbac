"""Generative models x = G(c) of the Gaussian-equivalence study, and their input moments (numpy float64).

Reference: reference/gaussian_equivalence.md (Goldt et al. 2020). The latent is c ~ N(0, I_D); the student
sees x = G(c) in R^N, the teacher acts on c (§2). The ODEs need the moments Omega = Cov(x) (N, N) and
Phi = Cov(x, c) (N, D) and the mean of x (§2, §10.3), returned here as `committee_ode.Moments` plus the means.

* `RandomSignGenerator`: the `rand` generator (§6), an L-layer fully connected sign network D -> N with
  Gaussian weights N(0, 1/fan_in), and its analytic moments (§3).
* `estimate_moments`: a streaming, batched Monte-Carlo estimator for any sampler (§5, improved as in §9.6:
  exact Chan/Welford merges in float64, with a convergence measure).

Samplers have the simulator's signature `sample(rng, n) -> (x (n, N), c (n, D))`
(`learnscope.models.committee.simulate_online_sgd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..theory.committee_ode import Moments

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
MomentMethod = Literal["arcsine", "linearised"]

__all__ = ["GeneratorMoments", "RandomSignGenerator", "estimate_moments"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class GeneratorMoments:
    """Moments of a generator: `moments` (Omega = Cov(x), Phi = Cov(x, c)), `mean_x` (N,), `mean_c` (D,).

    For a Monte-Carlo estimate also the number of samples and the convergence measure `rel_change`: for each
    of "omega", "phi", "mean_x", ||est(P) - est(P/2)||_F / ||est(P)||_F, the relative change over the last
    halving of the samples (None for analytic moments)."""

    moments: Moments
    mean_x: np.ndarray
    mean_c: np.ndarray
    n_samples: int | None = None
    rel_change: dict[str, float] | None = None

    @property
    def omega(self) -> np.ndarray:
        return self.moments.omega

    @property
    def phi(self) -> np.ndarray:
        return self.moments.phi


def _sign(u: np.ndarray) -> np.ndarray:
    """sign with sign(0) := +1, so outputs are exactly +-1 (u = 0 has probability 0)."""
    return np.where(u >= 0, 1.0, -1.0)


class RandomSignGenerator:
    """The `rand` generator (reference §6): x = sign(F_L sign(... sign(F_1 c))), c ~ N(0, I_D).

    Widths [D]*L + [N] (default L = 4: D -> D -> D -> D -> N), no biases, weights F_l ~ N(0, 1/fan_in) drawn
    from `rng` (an int seed or a numpy Generator). Outputs are +-1 with mean exactly 0 (x is odd in c) and
    Omega has unit diagonal. Calling the object samples: `gen(rng, n) -> (x (n, N), c (n, D))`."""

    def __init__(self, D: int, N: int, L: int = 4, rng: np.random.Generator | int = 0) -> None:
        if min(D, N, L) < 1:
            raise ValueError(f"D, N, L must be >= 1, got D={D}, N={N}, L={L}")
        rng = np.random.default_rng(rng)
        self.D, self.N, self.L = D, N, L
        widths = [D] * L + [N]
        self.weights = [
            rng.standard_normal((widths[i + 1], widths[i])) / math.sqrt(widths[i]) for i in range(L)
        ]

    def forward(self, c: np.ndarray) -> np.ndarray:
        """x = G(c) for latents c (n, D)."""
        h = np.asarray(c, dtype=float)
        for F in self.weights:
            h = _sign(h @ F.T)
        return h

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n fresh samples (x (n, N), c (n, D)), c ~ N(0, I_D) from rng."""
        c = rng.standard_normal((n, self.D))
        return self.forward(c), c

    __call__ = sample

    def analytic_moments(self, method: MomentMethod = "arcsine") -> GeneratorMoments:
        """Omega = Cov(x), Phi = Cov(x, c) and the mean (0 for both x and c), in closed form.

        "arcsine" (reference §3, "For exact single-layer moments"): the arcsine law for sign units of a
        Gaussian pre-activation u with covariance S, E[sign u_i sign u_j] = (2/pi) asin(S_ij/sqrt(S_ii S_jj)),
        and Stein's lemma E[sign(u_i) c] = sqrt(2/pi) Cov(u_i, c)/sqrt(S_ii), applied layer by layer with
        S = F Omega_{l-1} F', Cov(u, c) = F Phi_{l-1}, Omega_0 = Phi_0 = I_D. Exact for L = 1; for L >= 2 the
        pre-activations F h of the +-1 hidden units are only approximately Gaussian (a Gaussian closure, error
        shrinking with D; at D = 100, L = 4 a few per cent, see tests/data/test_generators.py).
        "linearised": the original script's recursion (§3), b = sqrt(2/pi): Omega = b^2 F_1 F_1', Phi = b F_1,
        then Omega <- b^2 F_l ((1 - b^2) I + Omega) F_l', Phi <- b F_l Phi, finally diag(Omega) := 1. It
        ignores the row norms of F and is off by 10-30 % (relative Frobenius) even for L = 1; kept to
        reproduce the original.
        """
        D = self.D
        if method == "arcsine":
            omega, phi = np.eye(D), np.eye(D)
            for F in self.weights:
                S = F @ omega @ F.T
                s = np.sqrt(np.diagonal(S))
                corr = np.clip(S / np.outer(s, s), -1.0, 1.0)
                np.fill_diagonal(corr, 1.0)
                omega = (2 / math.pi) * np.arcsin(corr)
                phi = _SQRT_2_OVER_PI * (F @ phi) / s[:, None]
        elif method == "linearised":
            b = _SQRT_2_OVER_PI
            F = self.weights[0]
            omega, phi = b * b * F @ F.T, b * F
            for F in self.weights[1:]:
                omega = b * b * F @ ((1 - b * b) * np.eye(omega.shape[0]) + omega) @ F.T
                phi = b * F @ phi
            np.fill_diagonal(omega, 1.0)
        else:
            raise ValueError(f"method={method!r}: allowed 'arcsine', 'linearised'")
        return GeneratorMoments(Moments(omega=omega, phi=phi), mean_x=np.zeros(self.N), mean_c=np.zeros(D))


class _Accumulator:
    """Exact streaming means and (cross-)covariances in float64: each batch's centred sums are merged with
    Chan et al.'s pairwise update, so no catastrophic cancellation (the original accumulated an approximate
    Welford update in float32, reference §5)."""

    def __init__(self, N: int, D: int) -> None:
        self.n = 0
        self.mx, self.mc = np.zeros(N), np.zeros(D)
        self.Sxx, self.Sxc = np.zeros((N, N)), np.zeros((N, D))

    def add(self, x: np.ndarray, c: np.ndarray) -> None:
        nb = x.shape[0]
        bx, bc = x.mean(axis=0), c.mean(axis=0)
        xc = x - bx
        n = self.n + nb
        dx, dc = bx - self.mx, bc - self.mc
        f = self.n * nb / n
        self.Sxx += xc.T @ xc + f * np.outer(dx, dx)
        self.Sxc += xc.T @ (c - bc) + f * np.outer(dx, dc)
        self.mx += dx * (nb / n)
        self.mc += dc * (nb / n)
        self.n = n

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(omega, phi, mean_x, mean_c), covariances normalised by n - 1."""
        d = max(self.n - 1, 1)
        omega = self.Sxx / d
        return 0.5 * (omega + omega.T), self.Sxc / d, self.mx.copy(), self.mc.copy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    na = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / na) if na > 0 else float(np.linalg.norm(a - b))


def estimate_moments(
    sample: Sampler,
    rng: np.random.Generator,
    n_samples: int,
    *,
    batch_size: int = 4096,
    tol: float | None = None,
    max_samples: int | None = None,
) -> GeneratorMoments:
    """Monte-Carlo Omega = Cov(x), Phi = Cov(x, c), E[x], E[c] of any sampler (reference §5), streaming.

    Draws `sample(rng, batch)` in batches (the last one trimmed so exactly n_samples are used) and merges
    them exactly in float64. The estimate at half the samples is kept, and `rel_change` reports
    ||est(P) - est(P/2)||_F / ||est(P)||_F for omega, phi and mean_x: for an unbiased estimator this is about
    the relative standard error of est(P) (the difference of two halves-correlated estimates has variance
    ~ Var est(P)). With `tol`, the sample count keeps doubling (up to max_samples) until the change of both
    omega and phi is below tol. Same rng and arguments give the same result."""
    if n_samples < 2 or batch_size < 1:
        raise ValueError(f"need n_samples >= 2 and batch_size >= 1, got {n_samples}, {batch_size}")
    x0, c0 = sample(rng, min(batch_size, n_samples // 2))
    x0, c0 = np.asarray(x0, dtype=float), np.asarray(c0, dtype=float)
    acc = _Accumulator(x0.shape[1], c0.shape[1])
    acc.add(x0, c0)

    def fill_to(target: int) -> None:
        while acc.n < target:
            x, c = sample(rng, min(batch_size, target - acc.n))
            acc.add(np.asarray(x, dtype=float), np.asarray(c, dtype=float))

    target = n_samples
    fill_to(target // 2)
    half = acc.result()  # exactly target // 2 samples: the first batch has at most that many
    while True:
        fill_to(target)
        full = acc.result()
        rel = {
            "omega": _rel(full[0], half[0]),
            "phi": _rel(full[1], half[1]),
            "mean_x": _rel(full[2], half[2]),
        }
        if tol is None or max(rel["omega"], rel["phi"]) < tol:
            break
        if max_samples is not None and 2 * target > max_samples:
            break
        half, target = full, 2 * target
    omega, phi, mean_x, mean_c = full
    return GeneratorMoments(Moments(omega=omega, phi=phi), mean_x, mean_c, n_samples=acc.n, rel_change=rel)
