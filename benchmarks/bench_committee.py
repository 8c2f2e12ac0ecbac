"""Committee-machine speed claims, each a ratio against a reference measured in the same run.

(a) `gaussian_equivalence_ode` (N = 3072, K = M = 2, dt = 0.01, Omega, Phi from the `rand` generator's
    analytic moments at D = 100, L = 4) against a straightforward integrator of the same equations
    (docs/studies/gaussian_equivalence.md Eqs. (5.3)-(5.6)) with a Python loop over the N eigenvalues. The
    loop is timed on a few steps and extrapolated per step; both are checked to give the same Q, R, v after
    those steps.
    The original compiled C++ integrator took 7.3 s for t = 100 at N = 3072
    (docs/studies/gaussian_equivalence.md §8; a quoted figure, not measured here).
(b) `simulate_online_sgd` with R = 16 replicas at N = 1000 (K = M = 2, erf, eta = 0.2, rand inputs D = 100,
    L = 4) against a one-sample-per-step PyTorch float64 loop like the original (one replica, autograd), in
    replica-steps per second. Both draw inputs from the same sign network (batched generation in both).

    .venv/bin/python benchmarks/bench_committee.py [--small]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch

from learnscope.data.generators import RandomSignGenerator
from learnscope.models.committee import init_teacher_student, simulate_online_sgd
from learnscope.theory.committee_ode import GEState, gaussian_equivalence_ode, ge_initial_state, i2, i3, i4


def header() -> None:
    print(
        f"# {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
        f"torch_threads={torch.get_num_threads()} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')} "
        f"python={platform.python_version()} numpy={np.__version__} torch={torch.__version__}"
    )


# ---------------------------------------------------------------------------------------------------------
# (a) reference integrator: component form of Eq. (5.3) of docs/studies/gaussian_equivalence.md for the
# tau-independent coefficients, then a loop over tau
# ---------------------------------------------------------------------------------------------------------


def _coefficients(Q, R, T, v, A):
    """G (K, K), H (K, M), V (K, K) and dv of Eqs. (5.3), (5.6), written out entry by entry with scalar
    i2/i3/i4 calls."""
    K, M = R.shape
    C = np.block([[Q, R], [R.T, T]])
    u = np.concatenate([-v, A])
    Lf = K + M

    def I3(a, b, c):
        idx = [a, b, c]
        return float(i3(C[np.ix_(idx, idx)]))

    def I4(a, b, c, d):
        idx = [a, b, c, d]
        return float(i4(C[np.ix_(idx, idx)]))

    G, H, V = np.zeros((K, K)), np.zeros((K, M)), np.zeros((K, K))
    for k in range(K):
        G[k, k] = -(v[k] ** 2) * I3(k, k, k) / Q[k, k]
        for j in range(K):
            if j != k:
                det = Q[k, k] * Q[j, j] - Q[k, j] ** 2
                G[k, k] -= v[k] * v[j] * (Q[j, j] * I3(k, k, j) - Q[k, j] * I3(k, j, j)) / det
                G[k, j] = -v[k] * v[j] * (Q[k, k] * I3(k, j, j) - Q[k, j] * I3(k, k, j)) / det
        for n in range(M):
            a = K + n
            det = Q[k, k] * T[n, n] - R[k, n] ** 2
            G[k, k] += v[k] * A[n] * (T[n, n] * I3(k, k, a) - R[k, n] * I3(k, a, a)) / det
            H[k, n] = v[k] * A[n] * (Q[k, k] * I3(k, a, a) - R[k, n] * I3(k, k, a)) / det
        for l in range(K):
            V[k, l] = v[k] * v[l] * sum(u[a] * u[b] * I4(k, l, a, b) for a in range(Lf) for b in range(Lf))
    dv = np.array([sum(u[b] * float(i2(C[np.ix_([k, b], [k, b])])) for b in range(Lf)) for k in range(K)])
    return G, H, V, dv


def reference_euler(s: GEState, eta: float, dt: float, n_steps: int):
    """Forward Euler of Eqs. (5.4)-(5.6) with a Python loop over the N eigenvalues (as the C++ loops,
    unparallelised)."""
    N = s.N
    q, r, v = s.q.copy(), s.r.copy(), s.v.copy()
    isd = 1 / math.sqrt(s.delta)
    for _ in range(n_steps):
        Q = np.einsum("t,tkl->kl", s.rho, q) / N
        Q = 0.5 * (Q + Q.T)
        R = r.sum(axis=0) / (N * math.sqrt(s.delta))
        G, H, V, dv = _coefficients(Q, R, s.T, v, s.A)
        q_new, r_new = np.empty_like(q), np.empty_like(r)
        for t in range(N):
            rho, qt, rt = s.rho[t], q[t], r[t]
            dq = eta * (rho * (G @ qt + qt @ G.T) + isd * (H @ rt.T + rt @ H.T)) + eta**2 * rho * V
            dr = eta * (rho * G @ rt + isd * H @ s.tt[t])
            q_new[t] = qt + dt * dq
            r_new[t] = rt + dt * dr
        q, r, v = q_new, r_new, v + dt * eta * dv
    Q = np.einsum("t,tkl->kl", s.rho, q) / N
    return 0.5 * (Q + Q.T), r.sum(axis=0) / (N * math.sqrt(s.delta)), v


def bench_ode(small: bool) -> None:
    N, D, L, K, M, eta, dt = 3072, 100, 4, 2, 2, 0.2, 0.01
    t_end = 10.0 if small else 100.0
    n_ref = 5 if small else 30
    t0 = time.perf_counter()
    gen = RandomSignGenerator(D, N, L, rng=0)
    mom = gen.analytic_moments().moments
    wts = init_teacher_student(np.random.default_rng(1), N, D, K, M)
    state = ge_initial_state(wts["w"], wts["v"], wts["B"], wts["A"], mom)
    print(
        f"(a) GE ODE  N={N} D={D} L={L} K=M={K} dt={dt}: "
        f"setup (moments + eigh) {time.perf_counter() - t0:.1f} s"
    )

    gaussian_equivalence_ode(state, eta=eta, times=[dt * 3], dt=dt)  # warm-up
    rec = gaussian_equivalence_ode(state, eta=eta, times=[n_ref * dt], dt=dt)[-1]
    t0 = time.perf_counter()
    recs = gaussian_equivalence_ode(state, eta=eta, times=[t_end], dt=dt)
    fast_total = time.perf_counter() - t0
    n_fast = round(t_end / dt)
    fast_step = fast_total / n_fast

    t0 = time.perf_counter()
    Qr, Rr, vr = reference_euler(state, eta, dt, n_ref)
    ref_step = (time.perf_counter() - t0) / n_ref
    Qf = np.array([[rec[f"Q_{min(k, l)}{max(k, l)}"] for l in range(K)] for k in range(K)])
    Rf = np.array([[rec[f"R_{k}{n}"] for n in range(M)] for k in range(K)])
    vf = np.array([rec[f"v_{k}"] for k in range(K)])
    diff = max(np.abs(Qf - Qr).max(), np.abs(Rf - Rr).max(), np.abs(vf - vr).max())
    print(f"    same numbers after {n_ref} steps: max |difference| of Q, R, v = {diff:.2e}")
    print(
        f"    learnscope: {n_fast} steps (t to {t_end:g}) in {fast_total:.2f} s = "
        f"{1e3 * fast_step:.3f} ms/step; "
        f"eg(t={t_end:g}) = {recs[-1]['eg']:.4f}"
    )
    print(
        f"    Python loop over N (timed on {n_ref} steps): {1e3 * ref_step:.1f} ms/step, "
        f"extrapolated {ref_step * 1e4:.0f} s for t to 100"
    )
    print(
        f"    ratio loop/learnscope per step = {ref_step / fast_step:.0f}x (target >= 20x); "
        f"learnscope t to 100: {fast_step * 1e4:.2f} s (extrapolated from t to {t_end:g})"
        if small
        else f"    ratio loop/learnscope per step = {ref_step / fast_step:.0f}x (target >= 20x); "
        f"learnscope t to 100: {fast_total:.2f} s"
    )
    print(
        "    original compiled C++ (Armadillo/OpenMP, 2 cores), docs/studies/gaussian_equivalence.md §8, "
        "not measured here: 7.3 s"
    )


# ---------------------------------------------------------------------------------------------------------
# (b) online SGD: R replicas vectorised vs one sample per step in PyTorch
# ---------------------------------------------------------------------------------------------------------


def torch_loop(gen: RandomSignGenerator, w0, v0, B, A, eta: float, n_steps: int, seed: int) -> float:
    """The original's loop: float64 TwoLayer student, autograd on 1/2 (y - yhat)^2, SGD with lr eta (w) and
    eta/N (v), one sample per step; inputs generated in batches of 1000 by the same sign network in torch."""
    N = w0.shape[-1]
    Fs = [torch.from_numpy(F) for F in gen.weights]
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    v = torch.tensor(v0, dtype=torch.float64, requires_grad=True)
    Bt, At = torch.from_numpy(B), torch.from_numpy(A)
    opt = torch.optim.SGD([{"params": [w], "lr": eta}, {"params": [v], "lr": eta / N}])
    tg = torch.Generator().manual_seed(seed)
    sqrt2 = math.sqrt(2.0)
    t0 = time.perf_counter()
    done = 0
    while done < n_steps:
        bs = min(1000, n_steps - done)
        c = torch.randn(bs, gen.D, generator=tg, dtype=torch.float64)
        h = c
        for F in Fs:
            h = torch.where(h @ F.T >= 0, 1.0, -1.0).to(torch.float64)
        ys = torch.erf((c @ Bt.T) / math.sqrt(gen.D) / sqrt2) @ At
        for i in range(bs):
            yhat = torch.erf((w @ h[i]) / math.sqrt(N) / sqrt2) @ v
            loss = 0.5 * (yhat - ys[i]) ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        done += bs
    return time.perf_counter() - t0


def bench_sim(small: bool) -> None:
    N, D, L, K, M, eta, R = 1000, 100, 4, 2, 2, 0.2, 16
    steps = 2000 if small else 10000
    steps_torch = 1000 if small else 4000
    gen = RandomSignGenerator(D, N, L, rng=0)
    wts = init_teacher_student(np.random.default_rng(1), N, D, K, M, n_replicas=R)
    print(f"(b) online SGD  N={N} D={D} L={L} K=M={K} erf eta={eta}, rand inputs")
    sim = dict(eta=eta, times=[0.0, steps / N], n_replicas=R, n_test=500)
    simulate_online_sgd(
        wts["w"],
        wts["v"],
        wts["B"],
        wts["A"],
        gen,
        rng=np.random.default_rng(9),
        **{**sim, "times": [0.0, 0.05]},
    )
    t0 = time.perf_counter()
    simulate_online_sgd(wts["w"], wts["v"], wts["B"], wts["A"], gen, rng=np.random.default_rng(2), **sim)
    t_fast = time.perf_counter() - t0
    fast = R * steps / t_fast
    torch_loop(gen, wts["w"][0], wts["v"][0], wts["B"], wts["A"], eta, 100, seed=0)  # warm-up
    t_torch = torch_loop(gen, wts["w"][0], wts["v"][0], wts["B"], wts["A"], eta, steps_torch, seed=0)
    slow = steps_torch / t_torch
    print(
        f"    learnscope simulate_online_sgd, R={R} replicas x {steps} steps (incl. sampling and 2 logs on "
        f"500 test samples): {t_fast:.2f} s = {fast:,.0f} replica-steps/s"
    )
    print(f"    PyTorch one-sample loop (autograd, float64), {steps_torch} steps: {slow:,.0f} steps/s")
    print(
        f"    ratio = {fast / slow:.1f}x (target >= 10x); "
        "original script: ~1,300 steps/s at N=500 (docs/studies/gaussian_equivalence.md §8)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="quick run: t to 10 for the ODE, fewer SGD steps")
    args = p.parse_args()
    header()
    bench_ode(args.small)
    bench_sim(args.small)


if __name__ == "__main__":
    main()
