"""Two-layer committee machines and online SGD on a teacher, simulated for R replicas at once (numpy float64).

Setting of Goldt et al. 2020 (docs/studies/gaussian_equivalence.md §2): latent c ~ N(0, I_D), input
x = G(c) in R^N, teacher y = sum_m A_m g(b_m.c/sqrt D) acting on the latent, student
yhat = sum_k v_k g(w_k.x/sqrt N), loss 1/2 (y - yhat)^2, one fresh sample per step, learning rate eta for w
and eta/N for v, time t = steps/N.
The records match those of `ode.py`, so simulation and ODE overlay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import erf

from .ode import Moments, eg_analytic, order_parameters, order_records

Activation = Literal["erf", "linear", "relu"]
Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

__all__ = [
    "CommitteeMachine",
    "activation",
    "iid_gaussian_sampler",
    "init_teacher_student",
    "sgd_step",
    "simulate_online_sgd",
]

_SQRT2 = math.sqrt(2.0)
# Inputs drawn per chunk of the simulation (R replicas x steps x max(N, D) numbers): large enough that the
# generator's matrix products run at the machine's rate, small enough (4 MB) that the chunk is still in cache
# when the SGD loop reads it (2M numbers measured ~10 % slower at N = 1000, R = 16).
CHUNK_NUMBERS = 500_000
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _erf_g(u):
    return erf(u / _SQRT2)


def _erf_dg(u):
    return _SQRT_2_OVER_PI * np.exp(-0.5 * u * u)


def _lin_g(u):
    return u


def _lin_dg(u):
    return np.ones_like(u)


def _relu_g(u):
    return np.maximum(u, 0.0)


def _relu_dg(u):
    return (u > 0).astype(u.dtype)


_ACTIVATIONS = {"erf": (_erf_g, _erf_dg), "linear": (_lin_g, _lin_dg), "relu": (_relu_g, _relu_dg)}


def activation(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """(g, g') for "erf" (g(u) = erf(u/sqrt 2), docs/studies/gaussian_equivalence.md Eq. (2.1)), "linear" or
    "relu"."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"g={name!r}: allowed {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


@dataclass
class CommitteeMachine:
    """y = sum_k v_k g(w_k.x/sqrt(N)); w (..., K, N), v (..., K), leading dimensions are replicas.

    The teacher is the same object on the latent: CommitteeMachine(B, A, g) applied to c."""

    w: np.ndarray
    v: np.ndarray
    g: Activation = "erf"

    def fields(self, x: np.ndarray) -> np.ndarray:
        """Pre-activations w.x/sqrt(N) on inputs x (P, N): shape (..., P, K)."""
        return (x @ np.swapaxes(self.w, -1, -2)) / math.sqrt(self.w.shape[-1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs (..., P) on inputs x (P, N)."""
        gfun, _ = activation(self.g)
        return np.einsum("...pk,...k->...p", gfun(self.fields(x)), self.v)


def iid_gaussian_sampler(N: int) -> Sampler:
    """x = c ~ N(0, I_N): the Saad-Solla setting (N = D, moments Omega = Phi = I, `Moments.iid()`)."""

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.standard_normal((n, N))
        return c, c

    return sample


def init_teacher_student(
    rng: np.random.Generator,
    N: int,
    D: int,
    K: int = 2,
    M: int = 2,
    *,
    n_replicas: int | None = None,
    w_std: float = 1.0,
    v_std: float = 1.0,
) -> dict[str, np.ndarray]:
    """Initial weights as the original (docs/studies/gaussian_equivalence.md §2): w ~ N(0, w_std^2),
    v ~ N(0, v_std^2), B ~ N(0, 1), A = 1. With n_replicas the student is drawn independently per replica
    ((R, K, N), (R, K)); the teacher is shared."""
    lead = () if n_replicas is None else (n_replicas,)
    w = w_std * rng.standard_normal((*lead, K, N))
    v = v_std * rng.standard_normal((*lead, K))
    B = rng.standard_normal((M, D))
    return {"w": w, "v": v, "B": B, "A": np.ones(M)}


def sgd_step(
    w: np.ndarray,
    v: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    eta: float,
    g: Activation = "erf",
    train_second_layer: bool = True,
) -> None:
    """One online SGD step on 1/2 (y - yhat)^2 for R replicas at once, in place (Eq. (2.2) of
    docs/studies/gaussian_equivalence.md): w_k += (eta/sqrt N) v_k g'(lambda_k) e x and
    v_k += (eta/N) e g(lambda_k), e = y - yhat, both gradients at the old weights. w (R, K, N), v (R, K),
    x (R, N), y (R,)."""
    gfun, dgfun = activation(g)
    N = w.shape[-1]
    lam = np.matmul(w, x[:, :, None])[:, :, 0] / math.sqrt(N)  # (R, K)
    glam = gfun(lam)
    e = y - np.einsum("rk,rk->r", glam, v)
    w += ((eta / math.sqrt(N)) * v * dgfun(lam) * e[:, None])[:, :, None] * x[:, None, :]
    if train_second_layer:
        v += (eta / N) * e[:, None] * glam


def _steps_for(times: Sequence[float], N: int) -> np.ndarray:
    steps = np.unique(np.round(np.asarray(times, dtype=float) * N).astype(np.int64))
    if len(steps) == 0 or steps[0] < 0:
        raise ValueError("times must be a non-empty sequence of t >= 0")
    return steps


def simulate_online_sgd(
    w: np.ndarray,
    v: np.ndarray,
    B: np.ndarray,
    A: np.ndarray,
    sample: Sampler,
    *,
    eta: float,
    times: Sequence[float],
    rng: np.random.Generator,
    g: Activation = "erf",
    n_replicas: int | None = None,
    train_second_layer: bool = True,
    n_test: int = 10_000,
    moments: Moments | None = None,
    chunk: int | None = None,
    backend: Literal["numba", "numpy"] = "numba",
) -> list[dict]:
    """Online SGD of R student replicas on one teacher, one fresh sample per step per replica (Goldt et al.
    2020; docs/studies/gaussian_equivalence.md §2).

    w (K, N) or (R, K, N), v (K,) or (R, K): student initial weights (copied; a single one is shared by all
    n_replicas). B (M, D), A (M,): teacher, fixed. `sample(rng, n) -> (x (n, N), c (n, D))` draws inputs and
    their latents; the first call draws the fixed test set of n_test samples, then training samples are drawn
    `chunk` steps at a time (batched generation, as a deep generator needs; default: CHUNK_NUMBERS inputs
    a chunk).

    Logged at t = step/N for each step = round(t * N) of `times`, per replica:
      eg: 1/2 mean (yhat - y)^2 on the test set (docs/studies/gaussian_equivalence.md §2), eg_sem its
      standard error;
      eg_analytic: the closed form, Eq. (2.4) there, on the order parameters (NaN for relu);
      Q, R, T, v: with `moments` (Omega, Phi; `Moments.iid()` for x = c) the exact Q = w Omega w'/N,
      R = w Phi B'/sqrt(ND); without, estimated on the test set as the original (Q = lambda lambda'/n,
      R = lambda nu'/n); T = B B'/D.
    Returns records {"t", "step", "replica", "eg", "eg_sem", "eg_analytic", "Q_kl", "R_kn", "T_nm", "v_k"}.

    The steps between two logs run in a compiled loop (learnscope.kernels.sgd_chunk: `sgd_step` entry by
    entry, no per-step array calls) unless backend="numpy", which calls `sgd_step` per step and is the
    reference the loop is tested against.
    """
    if backend not in ("numba", "numpy"):
        raise ValueError(f"backend={backend!r}: numba or numpy")
    gfun, _ = activation(g)
    w = np.asarray(w, dtype=float)
    v = np.asarray(v, dtype=float)
    B = np.asarray(B, dtype=float)
    A = np.asarray(A, dtype=float)
    K, N = w.shape[-2:]
    M, D = B.shape
    if v.shape[-1] != K or A.shape != (M,):
        raise ValueError(f"shapes: w {w.shape}, v {v.shape}, B {B.shape}, A {A.shape}")
    R_ = n_replicas if n_replicas is not None else (w.shape[0] if w.ndim == 3 else 1)
    w = np.array(np.broadcast_to(w, (R_, K, N)))  # own copies, updated in place
    v = np.array(np.broadcast_to(v, (R_, K)))
    steps_log = _steps_for(times, N)
    chunk = chunk or max(1, min(int(steps_log[-1]) or 1, CHUNK_NUMBERS // (R_ * max(N, D))))
    sqrtN, sqrtD = math.sqrt(N), math.sqrt(D)
    T = B @ B.T / D

    x_test, c_test = sample(rng, n_test)
    x_test = np.asarray(x_test, dtype=float)
    y_test = gfun(np.asarray(c_test, dtype=float) @ B.T / sqrtD) @ A  # (P,)
    nu_test = np.asarray(c_test, dtype=float) @ B.T / sqrtD if moments is None else None

    records: list[dict] = []

    def log(step: int) -> None:
        lam = (x_test @ w.reshape(R_ * K, N).T).reshape(-1, R_, K) / sqrtN  # (P, R, K)
        yhat = np.einsum("prk,rk->rp", gfun(lam), v)
        loss = 0.5 * (yhat - y_test) ** 2
        eg, eg_sem = loss.mean(axis=1), loss.std(axis=1, ddof=1) / math.sqrt(n_test)
        if moments is None:
            Q = np.einsum("prk,prl->rkl", lam, lam) / n_test
            R = np.einsum("prk,pn->rkn", lam, nu_test) / n_test
        else:
            Q, R, _ = order_parameters(w, B, moments)
        ega = eg_analytic(Q, R, T, v, A, g) if g != "relu" else np.full(R_, np.nan)
        for r in range(R_):
            records.append(
                {
                    "t": step / N,
                    "step": step,
                    "replica": r,
                    "eg": float(eg[r]),
                    "eg_sem": float(eg_sem[r]),
                    "eg_analytic": float(ega[r]),
                    **order_records(Q[r], R[r], T, v[r]),
                }
            )

    step, i_log = 0, 0
    while True:
        while i_log < len(steps_log) and steps_log[i_log] == step:
            log(step)
            i_log += 1
        if i_log == len(steps_log):
            break
        n = min(chunk, int(steps_log[-1]) - step)
        xs, cs = sample(rng, n * R_)
        xs = np.asarray(xs, dtype=float).reshape(n, R_, N)
        # teacher labels for the whole chunk in one product: y (n, R)
        ys = gfun(np.asarray(cs, dtype=float).reshape(n, R_, D) @ B.T / sqrtD) @ A
        s = 0
        while s < n:  # run to the next log step (or the chunk's end), log, go on
            m = min(n - s, int(steps_log[i_log]) - step)
            if backend == "numba":
                from .kernels import ACTIVATION_CODES, sgd_chunk

                sgd_chunk(w, v, xs[s : s + m], ys[s : s + m], eta, ACTIVATION_CODES[g], train_second_layer)
            else:
                for i in range(s, s + m):
                    sgd_step(w, v, xs[i], ys[i], eta, g, train_second_layer)
            s, step = s + m, step + m
            while i_log < len(steps_log) and steps_log[i_log] == step:
                log(step)
                i_log += 1
    return records
