"""Committee-machine speed claims, each a ratio against a reference measured in the same run.

(a) `gaussian_equivalence_ode` (N = 3072, K = M = 2, dt = 0.01, t to 100, Omega, Phi from the `rand`
    generator's analytic moments at D = 100, L = 4), whose Euler steps run in a compiled loop
    (learnscope.runs.committee.kernels), against two references on the same state:
    - the previous implementation, the matrix form of the same equations in numpy (backend="numpy"): one
      matrix product per step over all N eigenvalues, ~100 small numpy calls per step for the coefficients;
      run to t = 100 as well, and every record must agree (|delta eg| < 1e-10);
    - a straightforward integrator of docs/studies/gaussian_equivalence.md Eqs. (5.3)-(5.6) with a Python
      loop over the N eigenvalues, as the original C++ loops; timed on a few steps and extrapolated.
    The original compiled C++ integrator took 7.3 s for t = 100 at N = 3072
    (docs/studies/gaussian_equivalence.md §8; a quoted figure, not measured here).
(b) `simulate_online_sgd` with R = 16 replicas at N = 1000 (K = M = 2, erf, eta = 0.2, rand inputs D = 100,
    L = 4), in replica-steps per second, against:
    - the previous implementation: numpy `sgd_step` per step (backend="numpy") on inputs from the sign
      network with its previous sign function np.where(u >= 0, 1, -1); same random stream, so the records
      must agree (to 1e-9);
    - a one-sample-per-step PyTorch float64 loop like the original (one replica, autograd).
    Then where the time goes: the generator's share, and its matrix products' rate against the machine's
    measured float64 GEMM rate on a product of the same shape.

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
from claims import claim

from learnscope.runs.committee.generators import RandomSignGenerator
from learnscope.runs.committee.model import CHUNK_NUMBERS, init_teacher_student, simulate_online_sgd
from learnscope.runs.committee.ode import GEState, gaussian_equivalence_ode, ge_initial_state, i2, i3, i4


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


def _eg(records) -> np.ndarray:
    return np.array([r["eg"] for r in records])


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
    times = np.concatenate([[0.0], np.geomspace(0.1, t_end, 21)])
    for backend in ("numba", "numpy"):  # warm-up (and compile)
        gaussian_equivalence_ode(state, eta=eta, times=[dt * 3], dt=dt, backend=backend)
    t0 = time.perf_counter()
    recs = gaussian_equivalence_ode(state, eta=eta, times=times, dt=dt)
    fast_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    previous = gaussian_equivalence_ode(state, eta=eta, times=times, dt=dt, backend="numpy")
    prev_total = time.perf_counter() - t0
    n_fast = round(t_end / dt)
    fast_step = fast_total / n_fast
    deg = np.abs(_eg(recs) - _eg(previous)).max()

    rec = gaussian_equivalence_ode(state, eta=eta, times=[n_ref * dt], dt=dt)[-1]
    t0 = time.perf_counter()
    Qr, Rr, vr = reference_euler(state, eta, dt, n_ref)
    ref_step = (time.perf_counter() - t0) / n_ref
    Qf = np.array([[rec[f"Q_{min(k, l)}{max(k, l)}"] for l in range(K)] for k in range(K)])
    Rf = np.array([[rec[f"R_{k}{n}"] for n in range(M)] for k in range(K)])
    vf = np.array([rec[f"v_{k}"] for k in range(K)])
    diff = max(np.abs(Qf - Qr).max(), np.abs(Rf - Rr).max(), np.abs(vf - vr).max())
    print(
        f"    learnscope (compiled Euler loop): {n_fast} steps (t to {t_end:g}) in {fast_total:.2f} s = "
        f"{1e3 * fast_step:.3f} ms/step; eg(t={t_end:g}) = {recs[-1]['eg']:.6f}"
    )
    print(
        f"    previous (numpy matrix form): {prev_total:.2f} s = {1e3 * prev_total / n_fast:.3f} ms/step; "
        f"max |delta eg| over {len(recs)} records = {deg:.1e} (must be < 1e-10)"
    )
    print(f"    ratio previous/learnscope = {prev_total / fast_total:.1f}x (target >= 5x)")
    print(
        f"    per-eigenvalue loop, same numbers after {n_ref} steps: max |difference| of Q, R, v = {diff:.2e}"
    )
    print(
        f"    per-eigenvalue loop (timed on {n_ref} steps): {1e3 * ref_step:.1f} ms/step, "
        f"ratio loop/learnscope per step = {ref_step / fast_step:.0f}x (target >= 20x)"
    )
    print(
        f"    learnscope t to 100: {fast_step * 1e4:.2f} s; original compiled C++ (Armadillo/OpenMP, "
        "2 cores), docs/studies/gaussian_equivalence.md §8, not measured here: 7.3 s"
    )
    if deg >= 1e-10 or diff >= 1e-10:
        raise SystemExit(f"the integrators disagree: |delta eg| {deg:.1e}, loop difference {diff:.1e}")
    tag = f"N=3072, K=M=2, dt=0.01, t to {t_end:g}"
    claim(
        f"GE ODE ({tag})",
        f"compiled Euler loop, {fast_total:.2f} s",
        f"previous numpy matrix form, {prev_total:.2f} s; |Δeg| {deg:.0e}",
        prev_total / fast_total,
        5,
    )
    claim(
        f"GE ODE per step ({tag})",
        f"{1e3 * fast_step:.3f} ms/step",
        f"Python loop over the N eigenvalues (the C++'s algorithm), {1e3 * ref_step:.0f} ms/step",
        ref_step / fast_step,
        20,
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


def where_sign_sampler(gen: RandomSignGenerator):
    """The sign network as it sampled before: np.where(u >= 0, 1.0, -1.0) on a fresh array per layer, from
    the same random stream as `gen.sample`."""

    def sample(rng: np.random.Generator, n: int):
        c = rng.standard_normal((n, gen.D))
        h = c
        for F in gen.weights:
            h = np.where(h @ F.T >= 0, 1.0, -1.0)
        return h, c

    return sample


def gemm_rate(n: int, k: int, m: int) -> float:
    """The machine's float64 matrix-product rate (GFLOP/s) on (n, k) @ (k, m), best of 5."""
    a, b = np.random.default_rng(0).standard_normal((n, k)), np.random.default_rng(1).standard_normal((k, m))
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n * k * m / best / 1e9


def bench_sim(small: bool) -> None:
    N, D, L, K, M, eta, R = 1000, 100, 4, 2, 2, 0.2, 16
    steps = 2000 if small else 10000
    steps_torch = 1000 if small else 4000
    gen = RandomSignGenerator(D, N, L, rng=0)
    wts = init_teacher_student(np.random.default_rng(1), N, D, K, M, n_replicas=R)
    print(f"(b) online SGD  N={N} D={D} L={L} K=M={K} erf eta={eta}, R={R} replicas, rand inputs")
    sim = dict(eta=eta, times=[0.0, steps / N], n_replicas=R, n_test=500)
    w0 = (wts["w"], wts["v"], wts["B"], wts["A"])
    simulate_online_sgd(*w0, gen, rng=np.random.default_rng(9), **{**sim, "times": [0.0, 0.05]})  # compile
    t0 = time.perf_counter()
    ours = simulate_online_sgd(*w0, gen, rng=np.random.default_rng(2), **sim)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = simulate_online_sgd(
        *w0, where_sign_sampler(gen), rng=np.random.default_rng(2), backend="numpy", **sim
    )
    t_prev = time.perf_counter() - t0
    same = max(abs(a[k] - b[k]) for a, b in zip(ours, before, strict=True) for k in a)
    fast, prev = R * steps / t_fast, R * steps / t_prev
    torch_loop(gen, wts["w"][0], wts["v"][0], wts["B"], wts["A"], eta, 100, seed=0)  # warm-up
    t_torch = torch_loop(gen, wts["w"][0], wts["v"][0], wts["B"], wts["A"], eta, steps_torch, seed=0)
    slow = steps_torch / t_torch
    # where the time goes: the generator on the same number of samples, in the simulator's chunks
    rng = np.random.default_rng(3)
    chunk = CHUNK_NUMBERS // (R * N)
    t0 = time.perf_counter()
    for _ in range(steps // chunk):
        gen.sample(rng, chunk * R)
    t_gen = (time.perf_counter() - t0) * steps / (chunk * (steps // chunk))
    flops = 2 * steps * R * (D * D * (L - 1) + D * N)
    peak = gemm_rate(chunk * R, D, N)
    print(
        f"    learnscope (compiled SGD loop, in-place sign): {t_fast:.2f} s = {fast:,.0f} replica-steps/s "
        f"(incl. sampling and 2 logs on 500 test samples)"
    )
    print(
        f"    previous (numpy sgd_step per step, np.where sign): {t_prev:.2f} s = {prev:,.0f} "
        f"replica-steps/s; max |difference| of the records {same:.1e}"
    )
    print(f"    ratio previous/learnscope = {t_prev / t_fast:.2f}x (target >= 2x)")
    print(
        f"    where learnscope's time goes: the generator {t_gen:.2f} s ({100 * t_gen / t_fast:.0f} %), at "
        f"{flops / t_gen / 1e9:.0f} GFLOP/s counting its matrix products only; this machine's float64 GEMM "
        f"on ({chunk * R}, {D}) @ ({D}, {N}): {peak:.0f} GFLOP/s"
    )
    print(f"    PyTorch one-sample loop (autograd, float64), {steps_torch} steps: {slow:,.0f} steps/s")
    print(
        f"    ratio = {fast / slow:.1f}x (target >= 10x); "
        "original script: ~1,300 steps/s at N=500 (docs/studies/gaussian_equivalence.md §8)"
    )
    if same > 1e-9:
        raise SystemExit(f"the simulators disagree by {same:.1e}")
    tag = f"N={N}, R={R}, K=M=2, rand inputs"
    claim(
        f"online SGD ({tag})",
        f"{fast:,.0f} replica-steps/s; generator {100 * t_gen / t_fast:.0f} % of it",
        f"previous numpy step loop + np.where sign, {prev:,.0f} replica-steps/s",
        t_prev / t_fast,
        2,
    )
    claim(
        f"online SGD ({tag})",
        f"{fast:,.0f} replica-steps/s",
        f"PyTorch one-sample autograd loop like the original, {slow:,.0f} steps/s",
        fast / slow,
        10,
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
