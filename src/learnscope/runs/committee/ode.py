"""Order-parameter ODEs of online SGD in two-layer committee machines (soft committee, erf or linear units).

Two systems, both in the conventions of Goldt et al. 2020 as docs/studies/gaussian_equivalence.md writes them
(equation and section numbers in this module are that page's):

* `saad_solla_ode`: i.i.d. Gaussian inputs x = c (N = D); state Q, R, v (Saad & Solla 1995; Eq. (5.7)).
* `gaussian_equivalence_ode`: inputs x = G(c) with covariances Omega = Cov(x), Phi = Cov(x, c); state the
  per-eigenvalue densities q_tau, r_tau, t~_tau of Omega's eigenbasis plus v (Eqs. (5.1)-(5.6)).

Conventions (§2, Eqs. (2.1)-(2.3)): student yhat = sum_k v_k g(w_k.x/sqrt N), teacher
y = sum_n A_n g(b_n.c/sqrt D), loss 1/2 (y - yhat)^2, learning rate eta for w and eta/N for v, time
t = steps/N, g(u) = erf(u/sqrt 2).
Both integrators return flat records {"t", "eg", "Q_kl", "R_kn", "T_nm", "v_k"} that overlay the simulator's
(`learnscope.models.committee`). Pure numpy float64; the sum over the N eigenvalues is one matrix product.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.integrate import solve_ivp

from ...errors import DataError
from .gaussian_integrals import i2_erf, i3_erf, i4_erf

Activation = Literal["erf", "linear"]
_ACTIVATIONS = ("erf", "linear")

__all__ = [
    "GEState",
    "Moments",
    "eg_analytic",
    "gaussian_equivalence_ode",
    "ge_initial_state",
    "i2",
    "i3",
    "i4",
    "load_initial_weights",
    "log_times",
    "order_parameters",
    "order_records",
    "saad_solla_ode",
    "save_initial_weights",
]


def _check_g(g: str) -> None:
    if g not in _ACTIVATIONS:
        raise ValueError(
            f"g={g!r}: the ODEs have closed-form integrals only for {', '.join(_ACTIVATIONS)} "
            "(docs/studies/gaussian_equivalence.md §5.4); simulate other activations with "
            "learnscope.models.committee"
        )


# ----------------------------------------------------------------------------------------------------------
# Closed-form Gaussian integrals (Eqs. (5.8)-(5.10)). The entry-wise kernels take arrays of covariance entries
# that broadcast against each other, so a whole block (e.g. all (k, a, b) index triples) is one call.
# ----------------------------------------------------------------------------------------------------------


# The erf forms (learnscope/gaussian_integrals.py) are plain arithmetic on scalars or arrays: numpy evaluates
# them on whole blocks here, and learnscope.kernels compiles the same functions for its loops. For g linear
# the integrals are a covariance entry.


def _i2(c00, c01, c11, g: str):
    """E[g(u0) g(u1)]."""
    if g == "linear":
        return np.asarray(c01, dtype=float)
    return i2_erf(c00, c01, c11)


def _i3(c00, c01, c02, c12, c22, g: str):
    """E[g'(u0) u1 g(u2)]."""
    if g == "linear":
        return np.broadcast_to(np.asarray(c12, dtype=float), np.broadcast_shapes(*map(np.shape, (c00, c12))))
    return i3_erf(c00, c01, c02, c12, c22)


def _i4(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33, g: str):
    """E[g'(u0) g'(u1) g(u2) g(u3)]."""
    if g == "linear":
        shape = np.broadcast_shapes(*map(np.shape, (c00, c01, c02, c03, c11, c12, c13, c22, c23, c33)))
        return np.broadcast_to(np.asarray(c23, dtype=float), shape)
    return i4_erf(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33)


def i2(C: np.ndarray, g: Activation = "erf") -> np.ndarray:
    """I2 = E[g(u0) g(u1)] for u ~ N(0, C); C has shape (..., 2, 2) (Eq. (5.8))."""
    _check_g(g)
    C = np.asarray(C, dtype=float)
    return _i2(C[..., 0, 0], C[..., 0, 1], C[..., 1, 1], g)


def i3(C: np.ndarray, g: Activation = "erf") -> np.ndarray:
    """I3 = E[g'(u0) u1 g(u2)] for u ~ N(0, C); C has shape (..., 3, 3) (Eq. (5.9))."""
    _check_g(g)
    C = np.asarray(C, dtype=float)
    return np.asarray(_i3(C[..., 0, 0], C[..., 0, 1], C[..., 0, 2], C[..., 1, 2], C[..., 2, 2], g))


def i4(C: np.ndarray, g: Activation = "erf") -> np.ndarray:
    """I4 = E[g'(u0) g'(u1) g(u2) g(u3)] for u ~ N(0, C); C has shape (..., 4, 4) (Eq. (5.10))."""
    _check_g(g)
    C = np.asarray(C, dtype=float)
    e = {f"c{i}{j}": C[..., i, j] for i in range(4) for j in range(i, 4)}
    return np.asarray(_i4(g=g, **e))


@functools.lru_cache(maxsize=64)
def _gather_plan(K: int, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices into C.ravel() of the covariance entries of every index tuple the ODEs need:
    (k, b) for I2, (k, a, b) for I3, (k, l, a, b) for I4, with k, l < K students and a, b < L all fields."""
    k2, b2 = np.meshgrid(np.arange(K), np.arange(L), indexing="ij")
    p2 = [(k2, k2), (k2, b2), (b2, b2)]
    k3, a3, b3 = np.meshgrid(np.arange(K), np.arange(L), np.arange(L), indexing="ij")
    p3 = [(k3, k3), (k3, a3), (k3, b3), (a3, b3), (b3, b3)]
    k4, l4, a4, b4 = np.meshgrid(np.arange(K), np.arange(K), np.arange(L), np.arange(L), indexing="ij")
    f = (k4, l4, a4, b4)
    p4 = [
        (f[i], f[j]) for i in range(4) for j in range(i, 4)
    ]  # c00, c01, c02, c03, c11, c12, c13, c22, c23, c33

    def flat(pairs):
        return np.stack([(i * L + j).ravel() for i, j in pairs])

    return flat(p2), flat(p3), flat(p4)


def _blocks(C: np.ndarray, K: int, g: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All integrals the ODEs need, for the joint covariance C of (lambda_1..K, nu_1..M), L = K + M:
    I2t[k, b] = I2(k, b) (K, L); I3t[k, a, b] = I3(k, a, b) (K, L, L); I4t[k, l, a, b] = I4(k, l, a, b)
    (K, K, L, L). Each block is one gather of covariance entries and flat arithmetic: no Python loop over
    index tuples."""
    L = C.shape[0]
    p2, p3, p4 = _gather_plan(K, L)
    c = C.ravel()
    I2t = _i2(*c[p2], g=g).reshape(K, L)
    I3t = np.asarray(_i3(*c[p3], g=g)).reshape(K, L, L)
    I4t = np.asarray(_i4(*c[p4], g=g)).reshape(K, K, L, L)
    return I2t, I3t, I4t


def _joint_cov(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Covariance of (lambda, nu): [[Q, R], [R', T]]."""
    K, M = R.shape
    C = np.empty((K + M, K + M))
    C[:K, :K], C[:K, K:], C[K:, :K], C[K:, K:] = Q, R, R.T, T
    return C


# ----------------------------------------------------------------------------------------------------------
# Generalisation error and order parameters
# ----------------------------------------------------------------------------------------------------------


def eg_analytic(Q, R, T, v, A, g: Activation = "erf") -> np.ndarray:
    """Generalisation error 1/2 E[(y - yhat)^2] from the order parameters (Eq. (2.4), half-MSE convention).

    erf: eg = (1/pi)[sum v v asin(Q_kl/sqrt((1+Q_kk)(1+Q_ll))) + sum A A asin(T..) - 2 sum v A asin(R..)];
    linear: eg = 1/2 (v'Qv + A'TA - 2 v'RA). Leading batch dimensions (e.g. replicas) broadcast:
    Q (..., K, K), R (..., K, M), T (..., M, M), v (..., K), A (..., M).
    """
    _check_g(g)
    Q, R, T, v, A = (np.asarray(a, dtype=float) for a in (Q, R, T, v, A))
    if g == "linear":
        fQ, fR, fT = Q, R, T
    else:
        dQ = 1 + np.diagonal(Q, axis1=-2, axis2=-1)
        dT = 1 + np.diagonal(T, axis1=-2, axis2=-1)
        fQ = np.arcsin(Q / np.sqrt(dQ[..., :, None] * dQ[..., None, :])) * (2 / np.pi)
        fT = np.arcsin(T / np.sqrt(dT[..., :, None] * dT[..., None, :])) * (2 / np.pi)
        fR = np.arcsin(R / np.sqrt(dQ[..., :, None] * dT[..., None, :])) * (2 / np.pi)
    quad = np.einsum("...k,...kl,...l->...", v, fQ, v) + np.einsum("...n,...nm,...m->...", A, fT, A)
    return 0.5 * (quad - 2 * np.einsum("...k,...kn,...n->...", v, fR, A))


@dataclass(frozen=True)
class Moments:
    """Second moments of the inputs: omega = Cov(x) (N, N), phi = Cov(x, c) (N, D).

    None stands for the identity (i.i.d. Gaussian inputs x = c: omega = I_N, phi = I with N = D), which the
    code then never materialises. Centre x with the same mean used to estimate them (§7.3)."""

    omega: np.ndarray | None = None
    phi: np.ndarray | None = None

    @classmethod
    def iid(cls) -> Moments:
        """x = c ~ N(0, I)."""
        return cls()


def order_parameters(
    w: np.ndarray, B: np.ndarray, moments: Moments | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q = w Omega w'/N, R = w Phi B'/sqrt(N D), T = B B'/D (Eq. (2.3)); w (..., K, N), B (..., M, D)."""
    w, B = np.asarray(w, dtype=float), np.asarray(B, dtype=float)
    m = moments or Moments()
    N, D = w.shape[-1], B.shape[-1]
    wt = np.swapaxes(w, -1, -2)
    Q = (w @ (wt if m.omega is None else m.omega @ wt)) / N
    if m.phi is None:
        if N != D:
            raise ValueError(f"phi=None means x = c, which needs N == D; got N={N}, D={D}")
        wphi = w
    else:
        wphi = w @ m.phi
    R = (wphi @ np.swapaxes(B, -1, -2)) / math.sqrt(N * D)
    T = (B @ np.swapaxes(B, -1, -2)) / D
    return Q, R, T


def order_records(Q, R, T, v) -> dict[str, float]:
    """Flat record of one set of order parameters: Q and T upper triangles, all of R, v."""
    K, M = R.shape
    rec: dict[str, float] = {}
    rec.update({f"Q_{k}{l}": float(Q[k, l]) for k in range(K) for l in range(k, K)})
    rec.update({f"R_{k}{n}": float(R[k, n]) for k in range(K) for n in range(M)})
    rec.update({f"T_{n}{m}": float(T[n, m]) for n in range(M) for m in range(n, M)})
    rec.update({f"v_{k}": float(v[k]) for k in range(K)})
    return rec


def log_times(
    t_max: float, num: int = 41, *, t_min: float = 0.1, include_zero: bool = True, N: int | None = None
) -> np.ndarray:
    """`num` log-spaced times in [t_min, t_max] (plus 0). With N (the input dimension) they are snapped to the
    SGD step grid as step/N, de-duplicated, computed exactly as the simulator computes its t, so the ODE and
    simulation records carry identical t values."""
    t = np.geomspace(t_min, t_max, num)
    if include_zero:
        t = np.concatenate([[0.0], t])
    if N is not None:
        t = np.unique(np.round(t * N).astype(np.int64)) / N
    return t


# ----------------------------------------------------------------------------------------------------------
# Right-hand sides
# ----------------------------------------------------------------------------------------------------------


def _saad_solla_rhs(Q, R, T, v, A, eta: float, g: str, train_v: bool):
    """Saad-Solla ODEs in their direct form (Eq. (5.7), §5.3): with e = sum_b u_b g(z_b),
    u = (-v, A), z = (lambda, nu),
      dQ_kl/dt = eta [v_k E g'(l_k) l_l e + (k<->l)] + eta^2 v_k v_l E g'(l_k) g'(l_l) e^2,
      dR_kn/dt = eta v_k E g'(l_k) nu_n e,   dv_k/dt = eta E g(l_k) e   (eta/N per step, N steps per unit t).
    Expectations are I3(k, a, b) and I4(k, l, a, b) sums; no Gaussian-regression (det) denominators appear."""
    K = Q.shape[0]
    u = np.concatenate([-v, A])
    I2t, I3t, I4t = _blocks(_joint_cov(Q, R, T), K, g)
    s = v[:, None] * (I3t @ u)  # s[k, a] = v_k E[g'(lambda_k) z_a e]
    dQ = eta * (s[:, :K] + s[:, :K].T) + eta**2 * np.outer(v, v) * (I4t @ u @ u)
    dR = eta * s[:, K:]
    dv = eta * (I2t @ u) if train_v else np.zeros_like(v)
    return dQ, dR, dv


def _regression_coefficients(C: np.ndarray, v: np.ndarray, A: np.ndarray, I3t: np.ndarray):
    """The tau-independent matrices G (K, K) and H (K, M) of the compact GE equations (Eq. (5.3)):
    v_k E[g'(lambda_k) e z] = sum_j G_kj Cov(z, lambda_j) + sum_n H_kn Cov(z, nu_n) for any z jointly Gaussian
    with the fields, from the Gaussian regression of z on each pair (lambda_k, z_a)."""
    K = v.shape[0]
    u = np.concatenate([-v, A])
    d = np.diagonal(C)
    dk, Ck = d[:K], C[:K]
    kk = np.arange(K)
    J_kka = I3t[kk, kk, :]  # I3(k, k, a)   (K, L)
    J_kaa = np.diagonal(I3t, axis1=1, axis2=2)  # I3(k, a, a)   (K, L)
    self_pair = np.zeros(Ck.shape, dtype=bool)
    self_pair[kk, kk] = True
    # det of the (lambda_k, z_a) covariance. Pitfall (§7.7): it must stay positive; it vanishes
    # when a student unit aligns perfectly with a teacher unit, where these equations become 0/0 (the original
    # stops at eg < 1e-14). The Saad-Solla form above has no such denominator.
    det = np.where(self_pair, 1.0, dk[:, None] * d[None, :] - Ck**2)
    vu = v[:, None] * u[None, :]
    coef_own = vu * (d[None, :] * J_kka - Ck * J_kaa) / det  # multiplies Cov(z, lambda_k)
    coef_other = vu * (dk[:, None] * J_kaa - Ck * J_kka) / det  # multiplies Cov(z, z_a)
    # a = k: E[g'(l_k) g(l_k) z] = I3(k, k, k) Cov(z, l_k) / Q_kk, weighted by v_k u_k = -v_k^2
    coef_own[kk, kk] = -(v**2) * I3t[kk, kk, kk] / dk
    coef_other[kk, kk] = 0.0
    G = np.diag(coef_own.sum(axis=1)) + coef_other[:, :K]
    H = coef_other[:, K:]
    return G, H


# ----------------------------------------------------------------------------------------------------------
# Integration driver
# ----------------------------------------------------------------------------------------------------------


def _integrate(
    rhs: Callable[[np.ndarray], np.ndarray],
    observe: Callable[[float, np.ndarray], dict],
    nan_record: Callable[[float], dict],
    y0: np.ndarray,
    times,
    dt: float,
    method: str,
    rtol: float,
    atol: float,
    advance: Callable[[np.ndarray, float, int], None] | None = None,
) -> list[dict]:
    """Integrate dy/dt = rhs(y) from t = 0 and observe y at `times`.

    method="euler": forward Euler as the original (§5.5); each interval between requested times is
    cut into ceil(interval/dt) equal steps (<= dt), so records sit exactly at the requested t (the original
    printed the accumulated Euler time, overshooting by up to dt). `advance(y, h, n)`, where given, takes
    those n steps of length h in place (a compiled loop over the same equations); else y += h rhs(y), n times.
    Any other method name (RK45, LSODA, ...) goes to scipy's solve_ivp.
    Once the state stops being finite (divergence, a vanishing det), the remaining records are NaN."""
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or len(times) == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, non-decreasing sequence of t >= 0")
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    records: list[dict] = []
    with np.errstate(all="ignore"):
        if method == "euler":
            y, t_now = np.array(y0, dtype=float), 0.0
            for i, t in enumerate(times):
                n = math.ceil((t - t_now) / dt - 1e-9)
                if n > 0 and advance is not None:
                    advance(y, (t - t_now) / n, n)
                elif n > 0:
                    h = (t - t_now) / n
                    for _ in range(n):
                        dy = rhs(y)  # all of q, r, v advance from the same old state (§5.5)
                        dy *= h
                        y += dy
                t_now = float(t)
                if not np.all(np.isfinite(y)):
                    records.extend(nan_record(float(s)) for s in times[i:])
                    break
                records.append(observe(float(t), y))
        else:
            sol = solve_ivp(
                lambda _t, y: rhs(y),
                (0.0, float(times[-1])),
                y0,
                method=method,
                t_eval=times,
                rtol=rtol,
                atol=atol,
            )
            for i, t in enumerate(times):
                if i < sol.y.shape[1] and np.all(np.isfinite(sol.y[:, i])):
                    records.append(observe(float(t), sol.y[:, i]))
                else:
                    records.append(nan_record(float(t)))
    return records


def _nan_record_factory(K: int, M: int) -> Callable[[float], dict]:
    nan = np.full((K, K), np.nan), np.full((K, M), np.nan), np.full((M, M), np.nan), np.full(K, np.nan)

    def nan_record(t: float) -> dict:
        return {"t": t, "eg": math.nan, **order_records(*nan)}

    return nan_record


def saad_solla_ode(
    Q: np.ndarray,
    R: np.ndarray,
    T: np.ndarray,
    v: np.ndarray,
    A: np.ndarray,
    *,
    eta: float,
    times,
    g: Activation = "erf",
    train_second_layer: bool = True,
    dt: float = 0.01,
    method: str = "euler",
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> list[dict]:
    """Saad-Solla ODEs for i.i.d. Gaussian inputs: the Omega = I, Phi = I, delta = 1 limit of Eqs. (5.4)-(5.6)
    (§5.3).

    Initial overlaps Q (K, K), R (K, M), T (M, M) (fixed), v (K,), A (M,) (fixed); from weights use
    `order_parameters(w, B)`. Returns one record per requested time: t, eg (half-MSE, Eq. (2.4)), Q, R, T,
    v.
    """
    _check_g(g)
    Q, R, T, v, A = (np.array(a, dtype=float) for a in (Q, R, T, v, A))
    K, M = R.shape
    nQ, nR = K * K, K * M

    def unpack(y):
        return y[:nQ].reshape(K, K), y[nQ : nQ + nR].reshape(K, M), y[nQ + nR :]

    def rhs(y):
        Qy, Ry, vy = unpack(y)
        dQ, dR, dv = _saad_solla_rhs(Qy, Ry, T, vy, A, eta, g, train_second_layer)
        return np.concatenate([dQ.ravel(), dR.ravel(), dv])

    def observe(t, y):
        Qy, Ry, vy = unpack(y)
        Qy = 0.5 * (Qy + Qy.T)
        return {"t": t, "eg": float(eg_analytic(Qy, Ry, T, vy, A, g)), **order_records(Qy, Ry, T, vy)}

    y0 = np.concatenate([Q.ravel(), R.ravel(), v])
    return _integrate(rhs, observe, _nan_record_factory(K, M), y0, times, dt, method, rtol, atol)


# ----------------------------------------------------------------------------------------------------------
# Gaussian equivalence
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GEState:
    """State of the Gaussian-equivalence ODEs (Eq. (5.1)): eigenvalues rho (N,) of Omega and per-eigenvalue
    densities q (N, K, K), r (N, K, M), t~ (N, M, M) (constant), plus v (K,), A (M,) and T = B B'/D (M, M).

    D is the latent dimension; delta = D/N is derived from it and the number of eigenvalues. Pitfall (§7.1,
    §6): the original ODE takes `--delta` with default 0.5, wrong unless D/N = 0.5, and then visibly disagrees
    with simulation. Here delta is never defaulted; `force_delta` overrides it only so
    that a negative control can reproduce that mistake."""

    rho: np.ndarray
    q: np.ndarray
    r: np.ndarray
    tt: np.ndarray
    v: np.ndarray
    A: np.ndarray
    T: np.ndarray
    D: int
    force_delta: float | None = None

    def __post_init__(self) -> None:
        N, K, M = self.r.shape
        if self.rho.shape != (N,) or self.q.shape != (N, K, K) or self.tt.shape != (N, M, M):
            raise ValueError(
                f"inconsistent shapes: rho {self.rho.shape}, q {self.q.shape}, r {self.r.shape}, "
                f"tt {self.tt.shape}"
            )
        if self.v.shape != (K,) or self.A.shape != (M,) or self.T.shape != (M, M):
            raise ValueError(f"inconsistent shapes: v {self.v.shape}, A {self.A.shape}, T {self.T.shape}")
        if self.D <= 0:
            raise ValueError(f"D must be positive, got {self.D}")

    @property
    def N(self) -> int:
        return self.rho.shape[0]

    @property
    def delta(self) -> float:
        """D/N (§7.1), unless forced for a negative control."""
        return float(self.force_delta) if self.force_delta is not None else self.D / self.N

    def overlaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Q = (1/N) sum rho q_tau, R = (1/(N sqrt delta)) sum r_tau (Eq. (5.2)), and T."""
        Q = np.einsum("t,tkl->kl", self.rho, self.q) / self.N
        R = self.r.sum(axis=0) / (self.N * math.sqrt(self.delta))
        return Q, R, self.T


def ge_initial_state(
    w: np.ndarray,
    v: np.ndarray,
    B: np.ndarray,
    A: np.ndarray,
    moments: Moments | None = None,
    *,
    force_delta: float | None = None,
) -> GEState:
    """The GE state of student (w (K, N), v (K,)) and teacher (B (M, D), A (M,)) on inputs with `moments`.

    With U the unit-norm eigenvectors of Omega (columns, numpy.linalg.eigh; the original's torch.symeig is
    gone), Gw = w U and GB = B Phi' U, and q_tau = Gw_tau Gw_tau', r_tau = Gw_tau GB_tau',
    t~_tau = GB_tau GB_tau' (Eq. (5.1)). The original wrote these to files only with `--store` (§7.2); here
    they are computed in memory from the same weights the simulation starts from.
    """
    w, v, B, A = (np.asarray(a, dtype=float) for a in (w, v, B, A))
    m = moments or Moments()
    N, D = w.shape[1], B.shape[1]
    if m.phi is None and N != D:
        raise ValueError(f"phi=None means x = c, which needs N == D; got N={N}, D={D}")
    BPhiT = B if m.phi is None else B @ np.asarray(m.phi, dtype=float).T  # B Phi' (M, N)
    if m.omega is None:  # Omega = I: rho = 1 and any orthonormal basis, take U = I
        rho, Gw, GB = np.ones(N), w, BPhiT
    else:
        omega = np.asarray(m.omega, dtype=float)
        rho, U = np.linalg.eigh(0.5 * (omega + omega.T))
        Gw, GB = w @ U, BPhiT @ U
    q = np.einsum("kt,lt->tkl", Gw, Gw)
    r = np.einsum("kt,nt->tkn", Gw, GB)
    tt = np.einsum("nt,mt->tnm", GB, GB)
    return GEState(
        rho=rho, q=q, r=r, tt=tt, v=v.copy(), A=A.copy(), T=B @ B.T / D, D=D, force_delta=force_delta
    )


def save_initial_weights(
    path: str | Path, w: np.ndarray, v: np.ndarray, B: np.ndarray, A: np.ndarray
) -> Path:
    """Write the initial weights of a simulation to an .npz (temporary file, then renamed), so that an ODE can
    start from the same w, v, B (§5.1, §7.2: the original's `--store` files): w (K, N) or (R, K, N) for R
    replicas, v (K,) or (R, K), teacher B (M, D), A (M,), all float64. Read back with `load_initial_weights`.
    """
    path = Path(path)
    arrays = {k: np.asarray(a, dtype=float) for k, a in (("w", w), ("v", v), ("B", B), ("A", A))}
    _check_initial_weights(arrays, str(path), ValueError)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, format=np.array("learnscope.committee_weights/1"), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_initial_weights(a: dict[str, np.ndarray], where: str, error: type[Exception]) -> None:
    w, v, B, A = a["w"], a["v"], a["B"], a["A"]
    if w.ndim not in (2, 3) or B.ndim != 2 or A.shape != B.shape[:1] or v.shape != w.shape[:-1]:
        raise error(
            f"{where}: inconsistent weights w {w.shape}, v {v.shape}, B {B.shape}, A {A.shape}; expected "
            "w (K, N) or (R, K, N), v (K,) or (R, K), B (M, D), A (M,)"
        )
    for key, x in a.items():
        if not np.all(np.isfinite(x)):
            raise error(f"{where}: {key} has non-finite values")


def load_initial_weights(path: str | Path) -> dict[str, np.ndarray]:
    """{"w", "v", "B", "A"} from a `save_initial_weights` file (np.load, allow_pickle=False). A missing or
    unreadable file, a missing key or inconsistent shapes are a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("w", "v", "B", "A") if k not in f.files]
            if missing:
                raise DataError(f"weights file {path}: missing key {missing[0]!r} (has {', '.join(f.files)})")
            arrays = {k: f[k] for k in ("w", "v", "B", "A")}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"weights file {path} cannot be read as .npz ({type(exc).__name__}: {exc})") from None
    for key, x in arrays.items():
        if x.dtype.kind not in "fiu":
            raise DataError(f"weights file {path}: {key} has dtype {x.dtype}, expected floats")
    arrays = {k: x.astype(float) for k, x in arrays.items()}
    _check_initial_weights(arrays, f"weights file {path}", DataError)
    return arrays


def gaussian_equivalence_ode(
    state: GEState,
    *,
    eta: float,
    times,
    g: Activation = "erf",
    train_second_layer: bool = True,
    dt: float = 0.01,
    method: str = "euler",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    backend: Literal["numba", "numpy"] = "numba",
) -> list[dict]:
    """Gaussian-equivalence ODEs in Omega's eigenbasis, compact form (Eqs. (5.3)-(5.6)):

      dq_tau/dt = eta [rho_tau (G q_tau + q_tau G') + delta^{-1/2} (H r_tau' + r_tau H')] + eta^2 rho_tau V
      dr_tau/dt = eta [rho_tau G r_tau + delta^{-1/2} H t~_tau]
      dv/dt     = eta [I2(lambda, nu) A - I2(lambda, lambda) v]

    with Q = (1/N) sum rho q, R = (1/(N sqrt delta)) sum r rebuilt from the state at every step (Eq. (5.2))
    and V_kl = v_k v_l sum_ab u_a u_b I4(k, l, a, b), u = (-v, A). The q equation carries both the k- and the
    l-part (pitfall §7.6). The densities are stored as one (K^2 + KM, N) array and the tau-independent
    coefficients act on it as Kronecker-structured (K^2 + KM)-square matrices: one matrix product per step
    covers all N eigenvalues. Returns the same records as `saad_solla_ode`.

    With method="euler" the steps run in a compiled loop (learnscope.kernels.ge_euler_steps, the same
    equations entry by entry: ~10x faster at N = 3072) unless backend="numpy", which steps with the matrix
    form below and is the reference the loop is tested against.
    """
    if backend not in ("numba", "numpy"):
        raise ValueError(f"backend={backend!r}: numba or numpy")
    _check_g(g)
    s = state
    N, K, M = s.r.shape
    nQ, nR = K * K, K * M
    rho, T, A = s.rho, s.T, s.A
    inv_sqrt_delta = 1 / math.sqrt(s.delta)
    I_K, I_M = np.eye(K), np.eye(M)
    nS, nT = nQ + nR, M * M  # evolving rows (q, r) and constant rows (t~) of the (nS + nT, N) state

    def unpack(y):
        S = y[: (nS + nT) * N].reshape(nS + nT, N)
        return S, S[:nQ], S[nQ:nS], y[(nS + nT) * N :]

    def overlaps(Sq, Sr):
        Q = (Sq @ rho).reshape(K, K) / N
        return 0.5 * (Q + Q.T), Sr.sum(axis=1).reshape(K, M) * (inv_sqrt_delta / N)

    def rhs(y):
        S, Sq, Sr, v = unpack(y)
        Q, R = overlaps(Sq, Sr)
        C = _joint_cov(Q, R, T)
        I2t, I3t, I4t = _blocks(C, K, g)
        G, H = _regression_coefficients(C, v, A, I3t)
        u = np.concatenate([-v, A])
        V = np.outer(v, v) * (I4t @ u @ u)
        # Given G, H, V the densities evolve linearly: dS = (L_rho S + b) * rho + L_1 S, row-major vec, with
        # L_rho = eta [vec(G q + q G'); vec(G r)], b = eta^2 vec V,
        # L_1 = eta delta^{-1/2} [vec(H r' + r H'); vec(H t~)] (the t~ rows of S are constant).
        L_rho = np.zeros((nS, nS + nT))
        L_rho[:nQ, :nQ] = (
            G[:, None, :, None] * I_K[None, :, None, :] + I_K[:, None, :, None] * G[None, :, None, :]
        ).reshape(nQ, nQ)
        L_rho[nQ:, nQ:nS] = (G[:, None, :, None] * I_M[None, :, None, :]).reshape(nR, nR)
        L_1 = np.zeros((nS, nS + nT))
        L_1[:nQ, nQ:nS] = (
            H[:, None, None, :] * I_K[None, :, :, None] + I_K[:, None, :, None] * H[None, :, None, :]
        ).reshape(nQ, nR)
        L_1[nQ:, nS:] = (H[:, None, :, None] * I_M[None, :, None, :]).reshape(nR, nT)
        b = np.zeros((nS, 1))
        b[:nQ, 0] = eta**2 * V.ravel()
        dy = np.zeros_like(y)
        dS = dy[: nS * N].reshape(nS, N)  # the t~ rows of dy stay 0
        np.matmul(eta * L_rho, S, out=dS)
        dS += b
        dS *= rho
        dS += (eta * inv_sqrt_delta * L_1) @ S
        if train_second_layer:
            dy[(nS + nT) * N :] = eta * (I2t @ u)
        return dy

    def observe(t, y):
        _, Sq, Sr, v = unpack(y)
        Q, R = overlaps(Sq, Sr)
        return {"t": t, "eg": float(eg_analytic(Q, R, T, v, A, g)), **order_records(Q, R, T, v)}

    def advance(y, h, n):
        from .kernels import ge_euler_steps

        S, _, _, v = unpack(y)  # views: the kernel moves y in place
        ge_euler_steps(S, v, A, T, rho, K, eta, inv_sqrt_delta, h, n, g == "erf", train_second_layer)

    y0 = np.concatenate(
        [s.q.reshape(N, nQ).T.ravel(), s.r.reshape(N, nR).T.ravel(), s.tt.reshape(N, nT).T.ravel(), s.v]
    )
    compiled = advance if backend == "numba" else None
    return _integrate(rhs, observe, _nan_record_factory(K, M), y0, times, dt, method, rtol, atol, compiled)
