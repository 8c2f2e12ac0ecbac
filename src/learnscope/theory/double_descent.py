"""Closed forms of the linear teacher–student of Pezeshki, Mitra, Bengio, Lajoie, "Multi-scale Feature
Learning Dynamics: Insights for Double Descent" (ICML 2022), as docs/studies/double_descent.md writes them
(equation and section numbers in this module are that page's unless they say "paper").

* `exact_curves`: the exact generalisation curve of each finite data draw, gradient descent or gradient flow,
  from one eigendecomposition of XᵀX per draw (§3, Eqs. (3.1)-(3.6); the paper's Eq. 9 into its Eq. 6).
* `ridge_solution`: its t → ∞ limit, the ridge (or min-norm) solution (Eq. (3.2)).
* `approx_curves`: the paper's approximate fast–slow formula (its Eqs. 12 and 14 into Eq. 6; §4, Eqs.
  (4.1)-(4.7)), broadcast over any of its inputs.
* `curve_summary`: first minimum, peak, second minimum (only where one lies inside the window of time) and
  whether the curve shows double descent (§4.4); `describe_summary` says it in one line.

Every form returns `eg`, the paper's Eq. 6 as written, ½(1 + σ² − 2R + Q) (the error against labels with the
training set's noise σ, ‖w‖²/d taken as 1), and `eg_clean`, ½(1 − 2R + Q), the error on noiseless labels;
the exact form also `eg_draw`, ½(‖w‖²/d − 2R + Q), the noiseless-label error of each draw with its own teacher
norm (what the `teacher` probe measures of a trained student). See §2.

Pure numpy float64: all draws share one batched `np.linalg.eigh`, and times, ridge penalties and draws are
array axes, never Python loops (only memory-bounded chunks are looped over).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from ..errors import ConfigError

__all__ = [
    "APPROX_T_SHIFT",
    "SUMMARY_KEYS",
    "Curves",
    "Spectrum",
    "TheoryDomainError",
    "TheoryInputError",
    "approx_curves",
    "curve_summary",
    "describe_summary",
    "exact_curves",
    "original_grid",
    "ridge_solution",
    "spectrum",
]

Dynamics = Literal["gd", "flow"]
Features = Literal["both", "fast", "slow"]

# Working arrays of exact_curves (growth factors times coordinates, F ŵ) stay under this many bytes: small
# enough for the cache, so the passes over them do not stream memory.
_CHUNK_BYTES = 1 << 23
# Up to this d, the batched linear algebra runs on one BLAS thread (see _one_blas_thread).
_SMALL_D = 256
# The approximate formula's time unit: the singular values of the two groups are 0.5 and 0.5/κ (§4.1).
_S_FAST = 0.5
# The original plots the approximate form at t + 1 (§4.1): its curves are reported at t + APPROX_T_SHIFT.
APPROX_T_SHIFT = 1.0
# A negative eg or Q down to this is rounding at t → ∞, not a failure of the formula (§4.3).
_ROUNDING = 1e-9


class TheoryDomainError(ConfigError):
    """The approximate formula left its domain for these parameters (§4.3): the CLI prints one line."""


class TheoryInputError(ConfigError, ValueError):
    """A malformed argument (non-integer GD steps, negative penalty, unknown option)."""


class Draws(Protocol):
    """What the closed forms need of `learnscope.data.teachers.TeacherDraws`: x (S, n, d), y (S, n), the
    modulation F (S, d, d) and the teacher w (S, d)."""

    x: np.ndarray
    y: np.ndarray
    F: np.ndarray
    w: np.ndarray
    sigma: float  # the label noise of the training set


def _eq6(R, Q, sigma=0.0):
    """The paper's Eq. 6 as written, E_G = ½(1 + σ² − 2R + Q) (Eq. (2.6)): the error against labels with
    noise σ, the teacher norm ‖w‖²/d taken as its expectation 1. σ = 0 gives the noiseless-label error."""
    return 0.5 * (1.0 + np.square(sigma) - 2.0 * R + Q)


@dataclass(frozen=True)
class Curves:
    """R (overlap), Q (modulated norm) and the generalisation error, time on the last axis (§2):

    * `eg`, the paper's Eq. 6 as written, ½(1 + σ² − 2R + Q): the error against labels with the training
      set's noise σ;
    * `eg_clean`, ½(1 − 2R + Q): the same error on noiseless labels (eg − σ²/2);
    * `eg_draw` (exact curves only, else None), ½(‖w‖²/d − 2R + Q): the noiseless-label error of each draw
      with its own teacher norm instead of 1, a deliberate departure from Eq. 6 that the `teacher` probe of
      a trained student measures (compare a trained run with the exact curve of its draw on this one).

    Exact curves have shape (S, T) or (S, Λ, T) (draw, ridge penalty, time); approximate ones the broadcast
    shape of their inputs. `reported_t` is the time to plot and summarise: t itself for the exact form,
    t + 1 for the approximate one, which the original plots at t + 1 (§4.1)."""

    t: np.ndarray
    R: np.ndarray
    Q: np.ndarray
    eg: np.ndarray
    eg_clean: np.ndarray
    eg_draw: np.ndarray | None = None
    t_shift: float = 0.0

    @property
    def reported_t(self) -> np.ndarray:
        return self.t + self.t_shift

    def mean(self) -> Curves:
        """The average over draws (axis 0) of exact curves: what a figure of many draws shows."""
        draw = None if self.eg_draw is None else self.eg_draw.mean(0)
        return Curves(
            self.t, self.R.mean(0), self.Q.mean(0), self.eg.mean(0), self.eg_clean.mean(0), draw, self.t_shift
        )


def original_grid(points: int = 300) -> np.ndarray:
    """The original's time grid for the approximate formula, t = 10^linspace(−3, 8, points)."""
    return 10.0 ** np.linspace(-3.0, 8.0, points)


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread(d: int) -> Iterator[None]:
    """One BLAS thread for batches of small (d ≤ 256) matrices: a BLAS call on a 100×100 matrix gains
    nothing from threads, and on a busy 2-core machine its threads make eigh and matmul 10-40× slower
    (docs/studies/double_descent.md §3.5). The parallelism that pays is over draws, which is numpy's loop."""
    ctl = _blas_controller() if d <= _SMALL_D else None
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------------------------------------
# §3: exact curves of a finite draw
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spectrum:
    """One eigendecomposition per draw, XᵀX = V diag(L) Vᵀ (Eq. (3.1)), and what the curves need of it:
    L (S, d) ascending with the null space set to exactly 0, V (S, d, d), beta = VᵀXᵀy (S, d) (0 on the null
    space), B = F V (S, d, d) (so F ŵ = B (Vᵀŵ)), the teacher w (S, d) and the label noise σ of the draws
    (for Eq. 6)."""

    L: np.ndarray
    V: np.ndarray
    beta: np.ndarray
    B: np.ndarray
    w: np.ndarray
    sigma: float = 0.0

    @property
    def d(self) -> int:
        return self.L.shape[1]


def spectrum(draws: Draws) -> Spectrum:
    """The batched eigendecomposition of Eq. (3.1) for all draws at once.

    With n < d, XᵀX has d − n zero eigenvalues that eigh returns as rounding noise (~1e-15); they, and any
    eigenvalue below max(n, d)·eps·L_max (the rank rule of `np.linalg.matrix_rank`), are set to 0 and their
    component of Xᵀy (zero in exact arithmetic) to 0, so ŵ never leaves the row space of X (the min-norm
    solution, Eq. (3.3))."""
    x = np.asarray(draws.x, dtype=np.float64)
    y = np.asarray(draws.y, dtype=np.float64)
    F = np.asarray(draws.F, dtype=np.float64)
    w = np.asarray(draws.w, dtype=np.float64)
    if x.ndim != 3 or y.shape != x.shape[:2] or F.shape != (x.shape[0], x.shape[2], x.shape[2]):
        raise TheoryInputError(
            f"draws: x {x.shape}, y {y.shape}, F {F.shape} are not (S, n, d), (S, n), (S, d, d)"
        )
    _, n, d = x.shape
    with _one_blas_thread(d):
        L, V = np.linalg.eigh(np.einsum("snd,sne->sde", x, x, optimize=True))
        beta = np.einsum("sdi,sd->si", V, np.einsum("snd,sn->sd", x, y))
        B = F @ V
    tol = max(n, d) * np.finfo(np.float64).eps * L[:, -1:]
    null = (tol >= L) | (np.arange(d) < d - min(n, d))
    L = np.where(null, 0.0, L)
    beta = np.where(null, 0.0, beta)
    sigma = float(getattr(draws, "sigma", 0.0))
    return Spectrum(L=L, V=V, beta=beta, B=B, w=w, sigma=sigma)


def _l2_axis(l2) -> tuple[np.ndarray, bool]:
    """The ridge penalties as a 1-D array, and whether the caller gave a scalar (no λ axis in the output)."""
    lam = np.asarray(l2, dtype=np.float64)
    if lam.ndim > 1:
        raise TheoryInputError(f"l2 must be a scalar or a 1-D array, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise TheoryInputError(f"l2 must be finite and >= 0, got {l2!r}")
    return np.atleast_1d(lam), lam.ndim == 0


def _times(t, dynamics: str) -> np.ndarray:
    if dynamics not in ("gd", "flow"):
        raise TheoryInputError(f"dynamics={dynamics!r}: choose 'gd' (discrete steps) or 'flow'")
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if t.ndim != 1 or np.any(np.isnan(t)) or np.any(t < 0):
        raise TheoryInputError("t must be a 1-D array of times >= 0 (np.inf is the t -> infinity limit)")
    if dynamics == "gd" and np.any(np.isfinite(t) & (t != np.round(t))):
        bad = t[np.isfinite(t) & (t != np.round(t))][0]
        raise TheoryInputError(f"dynamics='gd' counts whole steps: t = {bad:g} is not an integer")
    return t


def _learning_rates(eta, L: np.ndarray) -> np.ndarray:
    """η per draw: 1/L_max (the original's "optimal" rate, Eq. (2.3)) unless given, a scalar or one per
    draw."""
    S = L.shape[0]
    if eta is None:
        return 1.0 / L[:, -1]
    eta = np.broadcast_to(np.asarray(eta, dtype=np.float64), (S,))
    if not np.all(np.isfinite(eta)) or np.any(eta <= 0):
        raise TheoryInputError(f"eta must be > 0, got {eta!r}")
    return eta


def _growth(rate: np.ndarray, t: np.ndarray, dynamics: str) -> np.ndarray:
    """The factor of Eq. (3.4) between ŵ(t) and the ridge solution, per eigen-direction: rate (s, l, d) =
    η(L_i + λ), t (T,) → (s, l, T, d). Flow: 1 − exp(−rate·t). Discrete: 1 − (1 − rate)^t, computed as
    1 − exp(t·log1p(−rate)) where 0 ≤ rate < 1 (log1p keeps the digits of 1 − rate for slow directions,
    rate ~ 1e-10) and as an integer power where 1 − rate ≤ 0 (the top directions only). Absolute error
    ~1e-16, all R and Q need. A zero rate (a null direction with λ = 0) gives 0 at every t, t = ∞ included."""
    x = rate[..., None, :]
    tt = t[:, None]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_r = -x if dynamics == "flow" else np.log1p(-np.minimum(x, 0.5))  # log(1 − rate) for GD
        f = np.multiply(tt, log_r)
        np.exp(f, out=f)
        np.subtract(1.0, f, out=f)
        if dynamics == "gd":
            s, l, i = np.nonzero(rate >= 0.5)  # 1 − η(L + λ) ≤ 0.5, possibly ≤ 0: a plain integer power
            if len(s):
                f[s, l, :, i] = 1.0 - np.power(1.0 - rate[s, l, i][:, None], t)
        if np.isinf(t).any():
            f = np.where(x == 0.0, 0.0, f)  # 0·∞
    return f


def _blocks(S: int, Lam: int, T: int, d: int) -> Iterator[tuple[slice, slice, slice]]:
    """Chunks of (draws, penalties, times) whose working arrays stay under _CHUNK_BYTES."""
    per_t = 3 * 8 * d  # growth factors times coordinates, F ŵ, and slack
    ct = max(1, min(T, _CHUNK_BYTES // per_t))
    cl = max(1, min(Lam, _CHUNK_BYTES // (per_t * ct)))
    cs = max(1, min(S, _CHUNK_BYTES // (per_t * ct * cl)))
    for s in range(0, S, cs):
        for lo in range(0, Lam, cl):
            for t0 in range(0, T, ct):
                yield slice(s, s + cs), slice(lo, lo + cl), slice(t0, t0 + ct)


def _coordinates(sp: Spectrum, lam: np.ndarray) -> np.ndarray:
    """The ridge solution in the eigenbasis, Vᵀw* = beta / (L + λ) (Eq. (3.2)), 0 where L + λ = 0 (the
    min-norm solution, Eq. (3.3)): shape (S, Λ, d)."""
    denom = sp.L[:, None, :] + lam[None, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, sp.beta[:, None, :] / denom, 0.0)


def exact_curves(
    draws: Draws | Spectrum,
    t,
    l2=0.0,
    dynamics: Dynamics = "gd",
    eta=None,
) -> Curves:
    """R, Q and the errors of every draw at times t (Eqs. (3.4)-(3.6)), from one eigendecomposition per draw.

    Student at 0, GD on ½‖Xŵ − y‖² + (λ/2)‖ŵ‖² with rate η (1/L_max per draw unless `eta`, a scalar or one
    per draw). dynamics="gd": t counts whole steps (integers ≥ 0) and the curve equals the GD iteration
    exactly; "flow": gradient flow in units of η. `l2` a scalar gives arrays (S, T); a 1-D array (Λ,) gives
    (S, Λ, T). t may hold np.inf: the limit, the ridge (min-norm) solution when GD converges. GD diverges when
    η(L_max + λ) > 2, and the curve then says so (non-finite values). `eg` is the paper's Eq. 6 with these
    R and Q (its Eq. 9 into Eq. 6), ½(1 + σ² − 2R + Q) with σ the draws' label noise; `eg_clean` is
    ½(1 − 2R + Q) and `eg_draw` the draw's own noiseless-label error ½(‖w‖²/d − 2R + Q) (Eq. (3.6)), which a
    trained student measures. `draws` may be a precomputed `spectrum(draws)`, to reuse one
    eigendecomposition for several calls."""
    t = _times(t, dynamics)
    sp = draws if isinstance(draws, Spectrum) else spectrum(draws)
    lam, scalar = _l2_axis(l2)
    eta = _learning_rates(eta, sp.L)
    S, d = sp.L.shape
    T, Lam = len(t), len(lam)
    coef = _coordinates(sp, lam)  # (S, Λ, d)
    rate = eta[:, None, None] * (sp.L[:, None, :] + lam[None, :, None])  # (S, Λ, d)
    R = np.empty((S, Lam, T))
    Q = np.empty((S, Lam, T))
    with _one_blas_thread(d):
        for bs, bl, bt in _blocks(S, Lam, T, d):
            u = _growth(rate[bs, bl], t[bt], dynamics)
            u *= coef[bs, bl, None, :]  # Vᵀŵ(t): (s, l, τ, d)
            s, l, tau = u.shape[:3]
            Bt = np.ascontiguousarray(np.swapaxes(sp.B[bs], 1, 2))  # contiguous: matmul goes to BLAS
            Fw = np.matmul(u.reshape(s, l * tau, d), Bt).reshape(s, l, tau, d)  # F ŵ(t), Eq. (3.5)
            R[bs, bl, bt] = np.einsum("sltd,sd->slt", Fw, sp.w[bs]) / d
            Q[bs, bl, bt] = np.einsum("sltd,sltd->slt", Fw, Fw) / d
    w2 = (np.einsum("sd,sd->s", sp.w, sp.w) / d)[:, None, None]
    eg_draw = 0.5 * (w2 - 2.0 * R + Q)  # Eq. (3.6)
    if scalar:
        R, Q, eg_draw = R[:, 0], Q[:, 0], eg_draw[:, 0]
    return Curves(t=t, R=R, Q=Q, eg=_eq6(R, Q, sp.sigma), eg_clean=_eq6(R, Q), eg_draw=eg_draw)


def ridge_solution(draws: Draws | Spectrum, l2=0.0) -> np.ndarray:
    """ŵ(t → ∞) = (XᵀX + λI)⁻¹Xᵀy, or the min-norm solution X⁺y where XᵀX is singular and λ = 0
    (Eqs. (3.2)-(3.3)): shape (S, d), or (S, Λ, d) for a 1-D `l2`."""
    sp = draws if isinstance(draws, Spectrum) else spectrum(draws)
    lam, scalar = _l2_axis(l2)
    w_hat = np.einsum("sij,slj->sli", sp.V, _coordinates(sp, lam))
    return w_hat[:, 0] if scalar else w_hat


# ----------------------------------------------------------------------------------------------------------
# §4: the approximate fast–slow formula
# ----------------------------------------------------------------------------------------------------------


def _inverse_a(alpha: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """g = 1/a of Eq. (4.2), a = 1 + 2λ'/(1 − α − λ' + √((1 − α − λ')² + 4λ')), rationalised where 1 − α − λ'
    ≤ 0 (a = 1 + (√(…) − (1 − α − λ'))/2, the same number without the cancellation that costs the original
    digits at small λ'). λ' = ∞ (t = 0) gives g = 0, λ' = 0 gives g = 1/max(α, 1)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u = 1.0 - alpha - lam
        root = np.sqrt(u * u + 4.0 * lam)
        a = 1.0 + np.where(u <= 0, 0.5 * (root - u), 2.0 * lam / (root + u))
        return np.where(np.isinf(lam), 0.0, 1.0 / a)


def approx_curves(n, d, p, kappa, sigma=0.0, l2=0.0, t=None, features: Features = "both") -> Curves:
    """The paper's approximate R(t), Q(t) and E_G(t) for p fast and d − p slow features (its Eqs. 12 and 14
    into Eq. 6; §4, Eqs. (4.1)-(4.7)), time mapped to the ridge penalty λ(t) = 1/t + l2.

    Every argument broadcasts with the others (e.g. kappa of shape (K, 1) and t of shape (T,) give (K, T));
    t defaults to `original_grid()`. `eg` is the paper's Eq. 6 as written, ½(1 + σ² − 2R + Q) (the error
    against labels with noise σ, what the original computes and plots), `eg_clean` = ½(1 − 2R + Q) the error
    on noiseless labels (Eq. (4.7)); σ also enters Q, through c_i (Eq. (4.5)).
    features="fast": the slow group never learns (a₂ at its t → 0 value, a₂ = ∞); "slow": the fast group is
    learned already (a₁ at its t → ∞ value, λ = l2). Raises TheoryDomainError where the formula leaves its
    domain (§4.3) instead of returning a number."""
    if features not in ("both", "fast", "slow"):
        raise TheoryInputError(f"features={features!r}: choose 'both', 'fast' or 'slow'")
    t = original_grid() if t is None else np.asarray(t, dtype=np.float64)
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise TheoryInputError("t must be >= 0 (np.inf is the t -> infinity limit)")
    n, d, p, kappa, sigma, l2 = (np.asarray(v, dtype=np.float64) for v in (n, d, p, kappa, sigma, l2))
    if np.any(l2 < 0) or np.any(sigma < 0):
        raise TheoryInputError("l2 and sigma must be >= 0")
    for name, value in (("n", n), ("d", d), ("kappa", kappa)):
        if not np.all(value > 0):
            raise TheoryDomainError(f"the approximate formula needs {name} > 0, got {name}={value.min():g}")
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = 1.0 / t + l2  # Eq. (4.1)
        H1, H2 = p / d, (d - p) / d
        nd = n / d
        alpha1, alpha2 = n / (H1 * d), n / (H2 * d)
        s1, s2 = _S_FAST, _S_FAST / kappa
        g1 = _inverse_a(alpha1, lam / (H1 * s1**2))
        g2 = _inverse_a(alpha2, lam / (H2 * s2**2))
        if features == "fast":
            g2 = np.zeros_like(g2)
        elif features == "slow":
            g1 = np.broadcast_to(_inverse_a(alpha1, l2 / (H1 * s1**2)), g1.shape)
        R1, R2 = nd * g1, nd * g2  # Eq. (4.3)
        b1 = alpha1 * g1**2 / (1.0 - alpha1 * g1**2)  # Eq. (4.4)
        b2 = alpha2 * g2**2 / (1.0 - alpha2 * g2**2)
        c1 = 1.0 + sigma**2 - 2.0 * R2 - (2.0 * g1 - 1.0) * nd  # Eq. (4.5)
        c2 = 1.0 + sigma**2 - 2.0 * R1 - (2.0 * g2 - 1.0) * nd
        det = 1.0 - b1 * b2
        Q1 = b1 * (b2 * c2 + c1) / det  # Eq. (4.6)
        Q2 = b2 * (b1 * c1 + c2) / det
        R = R1 + R2
        Q = Q1 + Q2
        eg = _eq6(R, Q, sigma)  # Eq. (4.7)
        clean = _eq6(R, Q)
    _check_domain(det, Q, clean, n=n, d=d, p=p, kappa=kappa, sigma=sigma, l2=l2, t=t)
    shape = np.broadcast_shapes(R.shape, Q.shape, eg.shape)
    return Curves(
        t=t,
        R=np.broadcast_to(R, shape).copy(),
        Q=np.broadcast_to(Q, shape).copy(),
        eg=np.broadcast_to(eg, shape).copy(),
        eg_clean=np.broadcast_to(clean, shape).copy(),
        t_shift=APPROX_T_SHIFT,
    )


def _check_domain(det, Q, eg, **params: np.ndarray) -> None:
    """Raise TheoryDomainError at the first point (in C order of the broadcast shape) where 1 − b₁b₂ ≤ 0 or Q,
    the noiseless-label error `eg` (eg_clean) are negative or not finite (§4.3), naming the parameters
    there."""
    shape = np.broadcast_shapes(det.shape, Q.shape, eg.shape, *(v.shape for v in params.values()))
    bad = (
        ~(np.isfinite(det) & np.isfinite(Q) & np.isfinite(eg))
        | ~(det > 0)
        | (Q < -_ROUNDING)
        | (eg < -_ROUNDING)
    )
    bad = np.broadcast_to(bad, shape)
    if not bad.any():
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    at = {k: float(np.broadcast_to(v, shape)[idx]) for k, v in params.items()}
    values = (("1-b1*b2", det), ("Q", Q), ("eg_clean", eg))
    where = {k: float(np.broadcast_to(v, shape)[idx]) for k, v in values}
    raise TheoryDomainError(
        "the approximate fast-slow formula (docs/studies/double_descent.md §4.3) leaves its domain at "
        + ", ".join(f"{k}={v:g}" for k, v in at.items())
        + " (first offending t; "
        + ", ".join(f"{k}={v:.4g}" for k, v in where.items())
        + "); it needs 0 < p < d, and n > d as t -> infinity without l2"
    )


# ----------------------------------------------------------------------------------------------------------
# §4.4: what a curve shows
# ----------------------------------------------------------------------------------------------------------


def curve_summary(t, eg, *, rise: float = 0.03, fall: float = 0.1) -> dict:
    """What one curve does over its window of time (§4.4), as plain floats, strings and None (JSON-ready):

    * shape: "monotone" (it never rises), "single descent" (it falls to a minimum, then rises to the end of
      the window without falling again) or "peak" (it rises to a peak and falls after it);
    * first_min, first_min_t: the lowest point before the rise (None for a monotone curve);
    * peak, peak_t: of the rises that the curve falls back from, the largest above the lowest earlier value
      (so a later, lower second descent does not hide the first minimum); None unless shape is "peak";
    * second_min, second_min_t: the lowest point after the peak, only where it lies strictly inside the
      window and the curve rises after it; else None: the curve is still falling (or flat) at the end;
    * at_window_end: "falling", "rising" or "flat", the curve's last step; final, final_t: its last point;
    * rise (peak − first minimum; for a single descent, its highest point − the minimum), fall (peak − the
      lowest point after it, inside the window or at its end) and double_descent: rise ≥ `rise` and fall ≥
      `fall`.

    Changes below 1e-9 of the curve's scale are rounding, not a rise or a fall. For approximate curves pass
    `curves.reported_t`."""
    t = np.asarray(t, dtype=np.float64)
    eg = np.asarray(eg, dtype=np.float64)
    if eg.ndim != 1 or t.shape != eg.shape or len(eg) < 2:
        raise TheoryInputError(f"curve_summary needs one curve: t {t.shape} and eg {eg.shape} (T >= 2)")
    if not np.all(np.isfinite(eg)):
        raise TheoryInputError("curve_summary: eg holds non-finite values")
    flat = _ROUNDING * max(1.0, float(np.abs(eg).max()))
    above = eg - np.minimum.accumulate(eg)  # the rise of each point above the lowest earlier value
    lowest_later = np.append(np.minimum.accumulate(eg[::-1])[::-1][1:], np.inf)  # lowest value after it
    peaks = (above > flat) & (eg - lowest_later > flat)  # the curve rose to it and falls after it
    step = float(eg[-1] - eg[-2])
    out = {
        "shape": "monotone",
        "first_min_t": None,
        "first_min": None,
        "peak_t": None,
        "peak": None,
        "second_min_t": None,
        "second_min": None,
        "at_window_end": "falling" if step < -flat else "rising" if step > flat else "flat",
        "final_t": float(t[-1]),
        "final": float(eg[-1]),
        "rise": 0.0,
        "fall": 0.0,
        "double_descent": False,
    }
    if peaks.any():
        j = int(np.argmax(np.where(peaks, above, -np.inf)))
        i = int(np.argmin(eg[: j + 1]))
        k = j + int(np.argmin(eg[j:]))
        up, down = float(eg[j] - eg[i]), float(eg[j] - eg[k])
        out.update(
            shape="peak",
            first_min_t=float(t[i]),
            first_min=float(eg[i]),
            peak_t=float(t[j]),
            peak=float(eg[j]),
            rise=up,
            fall=down,
            double_descent=bool(up >= rise and down >= fall),
        )
        if k < len(eg) - 1 and float(eg[k + 1 :].max() - eg[k]) > flat:  # a minimum inside the window
            out.update(second_min_t=float(t[k]), second_min=float(eg[k]))
    elif (above > flat).any():  # it rises and never falls back: a single descent, unless it rises from t[0]
        j = int(np.argmax(above))
        i = int(np.argmin(eg[: j + 1]))
        if eg[0] - eg[i] > flat:
            out.update(
                shape="single descent",
                first_min_t=float(t[i]),
                first_min=float(eg[i]),
                rise=float(eg[j] - eg[i]),
            )
    return out


# The keys of a `curve_summary`, in its order.
SUMMARY_KEYS = (
    "shape",
    "first_min_t",
    "first_min",
    "peak_t",
    "peak",
    "second_min_t",
    "second_min",
    "at_window_end",
    "final_t",
    "final",
    "rise",
    "fall",
    "double_descent",
)

_AT_WINDOW_END = {
    "falling": "still falling at the end of the window",
    "rising": "rising at the end of the window",
    "flat": "flat at the end of the window",
}


def describe_summary(found: dict, time: str = "t", digits: int = 4) -> str:
    """A `curve_summary` in one line: first minimum → peak → second minimum with their times, or, where the
    curve has no second minimum (or no peak) inside the window, what it does at the window's end."""

    def at(key: str, first: bool = False) -> str:
        when = f"{time} = {found[key + '_t']:.3g}" if first else f"{found[key + '_t']:.3g}"
        return f"{found[key]:.{digits}f} ({when})"

    end = f"{_AT_WINDOW_END[found['at_window_end']]}: {at('final')}"
    if found["shape"] == "peak":
        after = f"second minimum {at('second_min')}" if found["second_min"] is not None else end
        return f"first minimum {at('first_min', True)} → peak {at('peak')} → {after}"
    if found["shape"] == "single descent":
        return f"no peak: minimum {at('first_min', True)}, then {end}"
    return f"no peak (monotone), {_AT_WINDOW_END[found['at_window_end']]}: {at('final', True)}"
