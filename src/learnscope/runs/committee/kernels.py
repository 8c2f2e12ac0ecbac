"""Compiled inner loops of the committee-machine experiments (numba): online SGD over a chunk of steps, and
forward-Euler steps of the Gaussian-equivalence ODEs.

Both are loops of thousands of steps whose arithmetic per step is tiny (a few vector operations over N <= a
few thousand numbers), so in numpy the time went to the ~100 small array calls per step, not to arithmetic.
Each kernel here is the numpy code it replaces written as loops, and is tested against it
(tests/models/test_committee.py, tests/theory/test_committee_ode.py); the numpy versions stay as the
readable definition (`model.sgd_step`, `ode.gaussian_equivalence_ode` with
backend="numpy"). Equation numbers are those of docs/studies/gaussian_equivalence.md.

numba is imported with this module, and this module only where a kernel runs (a CLI call that trains an MLP
does not pay numba's import). Kernels are compiled on first use (~4 s) and cached by numba beside this file
(`__pycache__`), for later processes.
"""

from __future__ import annotations

import hashlib
import inspect
import math

import numba
import numpy as np

from .gaussian_integrals import i2_erf, i3_erf, i4_erf

# numba's cache notices edits to this file only, not to the closed forms compiled here from
# gaussian_integrals.py (its documented limit: changes in symbols defined in another file go unseen), so a
# cached kernel could keep an edited formula's old version. This file therefore carries the digest of their
# source: while it is current, numba's own invalidation covers the formulas (an edit there means an edit of
# this constant, here); while it is not, the kernels compile in memory and no cache is read or written.
# tests/test_kernels.py fails, with the new digest, until it is updated. Nothing is deleted.
FORMULAS_SHA256 = "43e204cb9a10d34edd33f230d11d9482cfdc5e38f32c65749bc8ff602e287423"


def formulas_digest() -> str:
    """The sha256 of the source of the closed forms the kernels compile (i2_erf, i3_erf, i4_erf)."""
    source = "".join(inspect.getsource(f) for f in (i2_erf, i3_erf, i4_erf))
    return hashlib.sha256(source.encode()).hexdigest()


_CACHE = formulas_digest() == FORMULAS_SHA256

__all__ = ["ACTIVATION_CODES", "ge_euler_steps", "sgd_chunk"]

ACTIVATION_CODES = {"erf": 0, "linear": 1, "relu": 2}

_jit = numba.njit(cache=_CACHE, nogil=True, error_model="numpy")
# The two step loops let LLVM reassociate their sums over N (vector lanes, fused multiply-adds): results move
# by rounding only (~1e-15 relative per step), which the tests against the numpy definitions bound.
_fast_loop = numba.njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
_i2 = _jit(i2_erf)
_i3 = _jit(i3_erf)
_i4 = _jit(i4_erf)
_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@_jit
def _g(u: float, code: int) -> float:
    if code == 0:
        return math.erf(u / _SQRT2)
    if code == 1:
        return u
    return max(u, 0.0)


@_jit
def _dg(u: float, code: int) -> float:
    if code == 0:
        return _SQRT_2_OVER_PI * math.exp(-0.5 * u * u)
    if code == 1:
        return 1.0
    return 1.0 if u > 0 else 0.0


@_fast_loop
def sgd_chunk(w, v, xs, ys, eta, code, train_v):  # pragma: no cover - compiled
    """Online SGD steps s = 0..n-1 for every replica r, in place, exactly `models.committee.sgd_step` per step
    (Eq. (2.2)): lambda = w x/sqrt N, e = y - sum_k v_k g(lambda_k), w_k += (eta/sqrt N) v_k g'(lambda_k) e x,
    v_k += (eta/N) e g(lambda_k), both gradients at the old weights. w (R, K, N), v (R, K), xs (n, R, N),
    ys (n, R). Replicas are independent, so each runs its whole chunk in turn: its w stays in cache."""
    R, K, N = w.shape
    n = xs.shape[0]
    scale = 1.0 / math.sqrt(N)
    lam = np.empty(K)
    glam = np.empty(K)
    coef = np.empty(K)
    for r in range(R):
        for s in range(n):
            x = xs[s, r]
            yhat = 0.0
            for k in range(K):
                acc = 0.0
                for i in range(N):
                    acc += w[r, k, i] * x[i]
                lam[k] = acc * scale
                glam[k] = _g(lam[k], code)
                yhat += v[r, k] * glam[k]
            e = ys[s, r] - yhat
            for k in range(K):
                coef[k] = eta * scale * v[r, k] * _dg(lam[k], code) * e
            for k in range(K):
                c = coef[k]
                for i in range(N):
                    w[r, k, i] += c * x[i]
                if train_v:
                    v[r, k] += (eta / N) * e * glam[k]


@_jit
def _ge_coefficients(C, v, A, K, erf, G, H, V, dv):  # pragma: no cover - compiled
    """G (K, K), H (K, M) of Eq. (5.3), V_kl = v_k v_l sum_ab u_a u_b I4(k, l, a, b) and dv = I2(lambda, z) u,
    u = (-v, A), for the joint covariance C of (lambda, nu): `ode._regression_coefficients` and the
    integrals of `_blocks`, entry by entry. Pitfall (§7.7): the determinants vanish when a student unit
    aligns perfectly with a teacher unit."""
    L = C.shape[0]
    u = np.empty(L)
    for a in range(K):
        u[a] = -v[a]
    for a in range(K, L):
        u[a] = A[a - K]
    G[:] = 0.0
    H[:] = 0.0
    for k in range(K):
        ckk = C[k, k]
        # dv_k = sum_b I2(k, b) u_b
        acc = 0.0
        for b in range(L):
            acc += (_i2(ckk, C[k, b], C[b, b]) if erf else C[k, b]) * u[b]
        dv[k] = acc
        for a in range(L):
            caa, cka = C[a, a], C[k, a]
            J_kka = _i3(ckk, ckk, cka, cka, caa) if erf else cka  # I3(k, k, a)
            if a == k:  # E[g'(l_k) g(l_k) z] = I3(k, k, k) Cov(z, l_k) / Q_kk, weighted by v_k u_k = -v_k^2
                G[k, k] += -(v[k] ** 2) * J_kka / ckk
                continue
            J_kaa = _i3(ckk, cka, cka, caa, caa) if erf else caa  # I3(k, a, a)
            det = ckk * caa - cka**2
            vu = v[k] * u[a]
            G[k, k] += vu * (caa * J_kka - cka * J_kaa) / det
            other = vu * (ckk * J_kaa - cka * J_kka) / det
            if a < K:
                G[k, a] += other
            else:
                H[k, a - K] = other
    for k in range(K):
        for l in range(K):
            acc = 0.0
            for a in range(L):
                for b in range(L):
                    if erf:
                        i4 = _i4(
                            C[k, k], C[k, l], C[k, a], C[k, b], C[l, l],
                            C[l, a], C[l, b], C[a, a], C[a, b], C[b, b],
                        )  # fmt: skip
                    else:
                        i4 = C[a, b]
                    acc += u[a] * u[b] * i4
            V[k, l] = v[k] * v[l] * acc


@_fast_loop
def ge_euler_steps(S, v, A, T, rho, K, eta, inv_sqrt_delta, h, n_steps, erf, train_v):  # pragma: no cover
    """`n_steps` forward-Euler steps of length h of the Gaussian-equivalence ODEs (Eqs. (5.3)-(5.6)), in
    place.

    S (K^2 + KM + M^2, N): the densities q_tau (rows k K + l), r_tau (rows K^2 + k M + n) and the constant
    t~_tau, one column per eigenvalue rho_tau; v (K,). Each step takes Q = (1/N) sum rho q (symmetrised) and
    R = (1/(N sqrt delta)) sum r (Eq. (5.2); summed in the previous step's update pass), their coefficients,
    and moves every row from the old state:
      dq_kl = eta [rho (G q + q G')_kl + delta^{-1/2} (H r' + r H')_kl] + eta^2 rho V_kl
      dr_kn = eta [rho (G r)_kn + delta^{-1/2} (H t~)_kn]
      dv    = eta I2(lambda, z) u
    as `ode.gaussian_equivalence_ode` does with matrices (backend="numpy")."""
    M = A.shape[0]
    L = K + M
    N = rho.shape[0]
    nQ, nR = K * K, K * M
    nS = nQ + nR
    C = np.empty((L, L))
    G, H, V = np.empty((K, K)), np.empty((K, M)), np.empty((K, K))
    dv = np.empty(K)
    dS = np.empty((nS, N))
    for m in range(M):
        for n in range(M):
            C[K + m, K + n] = T[m, n]
    # Q and R from the densities (Eq. (5.2)); afterwards each step's update pass sums them for the next
    Qsum, Rsum = np.zeros((K, K)), np.zeros((K, M))
    for i in range(nQ):
        Qsum[i // K, i % K] = np.dot(rho, S[i])
    for i in range(nQ, nS):
        Rsum[(i - nQ) // M, (i - nQ) % M] = np.sum(S[i])
    for _ in range(n_steps):
        for k in range(K):
            for l in range(K):
                C[k, l] = 0.5 * (Qsum[k, l] + Qsum[l, k]) / N
            for n in range(M):
                C[k, K + n] = C[K + n, k] = Rsum[k, n] * inv_sqrt_delta / N
        _ge_coefficients(C, v, A, K, erf, G, H, V, dv)
        # the derivative of every evolving row, each a sum of rows of S: rho-weighted and plain parts
        for k in range(K):
            for l in range(K):
                row = dS[k * K + l]
                bV = eta * eta * V[k, l]
                for t in range(N):
                    row[t] = bV * rho[t]
                for j in range(K):
                    cg1, cg2 = eta * G[k, j], eta * G[l, j]  # (G q)_kl and (q G')_kl
                    q_jl, q_kj = S[j * K + l], S[k * K + j]
                    for t in range(N):
                        row[t] += rho[t] * (cg1 * q_jl[t] + cg2 * q_kj[t])
                for n in range(M):
                    ch1, ch2 = eta * inv_sqrt_delta * H[k, n], eta * inv_sqrt_delta * H[l, n]
                    r_ln, r_kn = S[nQ + l * M + n], S[nQ + k * M + n]
                    for t in range(N):
                        row[t] += ch1 * r_ln[t] + ch2 * r_kn[t]
            for n in range(M):
                row = dS[nQ + k * M + n]
                row[:] = 0.0
                for j in range(K):
                    cg = eta * G[k, j]
                    r_jn = S[nQ + j * M + n]
                    for t in range(N):
                        row[t] += rho[t] * cg * r_jn[t]
                for m in range(M):
                    ch = eta * inv_sqrt_delta * H[k, m]
                    t_mn = S[nS + m * M + n]
                    for t in range(N):
                        row[t] += ch * t_mn[t]
        for i in range(nQ):
            acc = 0.0
            for t in range(N):
                S[i, t] += h * dS[i, t]
                acc += rho[t] * S[i, t]
            Qsum[i // K, i % K] = acc
        for i in range(nQ, nS):
            acc = 0.0
            for t in range(N):
                S[i, t] += h * dS[i, t]
                acc += S[i, t]
            Rsum[(i - nQ) // M, (i - nQ) % M] = acc
        if train_v:
            for k in range(K):
                v[k] += h * eta * dv[k]
