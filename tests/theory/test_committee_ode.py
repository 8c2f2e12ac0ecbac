"""Committee-machine ODEs (docs/studies/gaussian_equivalence.md §5): closed-form integrals against Monte
Carlo, the analytic eg against an empirical half-MSE, the Gaussian-equivalence ODE against the Saad-Solla ODE
in limits where they must agree exactly, and Euler against an adaptive integrator."""

import math

import numpy as np
import pytest
from scipy.special import erf

from learnscope.runs.committee.ode import (
    GEState,
    Moments,
    _blocks,
    eg_analytic,
    gaussian_equivalence_ode,
    ge_initial_state,
    i2,
    i3,
    i4,
    log_times,
    order_parameters,
    saad_solla_ode,
)

N_MC = 1_000_000


def _g(u):
    return erf(u / math.sqrt(2))


def _dg(u):
    return math.sqrt(2 / math.pi) * np.exp(-(u**2) / 2)


def _random_cov(rng, n):
    """A random valid covariance with O(1) variances and sizeable correlations."""
    X = rng.standard_normal((n, n + 2))
    C = X @ X.T / (n + 2)
    return C + 0.1 * np.eye(n)


def _mc_check(value, samples, n_sigma=5.0):
    """|closed form - MC mean| <= n_sigma standard errors (SE = sample std / sqrt(n), ~3e-4 to 1e-3 here)."""
    se = samples.std() / math.sqrt(len(samples))
    assert abs(value - samples.mean()) <= n_sigma * se, (value, samples.mean(), se)


@pytest.mark.parametrize("seed", [0, 1])
def test_erf_integrals_match_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    C = _random_cov(rng, 4)
    u = rng.standard_normal((N_MC, 4)) @ np.linalg.cholesky(C).T
    _mc_check(float(i2(C[:2, :2])), _g(u[:, 0]) * _g(u[:, 1]))
    _mc_check(float(i3(C[:3, :3])), _dg(u[:, 0]) * u[:, 1] * _g(u[:, 2]))
    _mc_check(float(i4(C)), _dg(u[:, 0]) * _dg(u[:, 1]) * _g(u[:, 2]) * _g(u[:, 3]))
    # repeated indices, as the ODEs use them: I3(k, k, j), I4(k, k, a, a)
    idx = [0, 0, 2]
    _mc_check(float(i3(C[np.ix_(idx, idx)])), _dg(u[:, 0]) * u[:, 0] * _g(u[:, 2]))
    idx = [1, 1, 3, 3]
    _mc_check(float(i4(C[np.ix_(idx, idx)])), _dg(u[:, 1]) ** 2 * _g(u[:, 3]) ** 2)


def test_linear_integrals_are_covariances():
    C = _random_cov(np.random.default_rng(2), 4)
    assert float(i2(C[:2, :2], "linear")) == C[0, 1]
    assert float(i3(C[:3, :3], "linear")) == C[1, 2]
    assert float(i4(C, "linear")) == C[2, 3]


def test_integrals_vectorise_over_stacks_and_blocks():
    rng = np.random.default_rng(3)
    stack = np.stack([_random_cov(rng, 4) for _ in range(5)])
    np.testing.assert_allclose(i4(stack), [float(i4(C)) for C in stack], rtol=0, atol=1e-15)
    np.testing.assert_allclose(i3(stack[:, :3, :3]), [float(i3(C[:3, :3])) for C in stack], atol=1e-15)
    C, K, L = stack[0], 2, 4
    I2t, I3t, I4t = _blocks(C, K, "erf")
    for k in range(K):
        for a in range(L):
            assert I2t[k, a] == pytest.approx(float(i2(C[np.ix_([k, a], [k, a])])), abs=1e-15)
            for b in range(L):
                assert I3t[k, a, b] == pytest.approx(float(i3(C[np.ix_([k, a, b], [k, a, b])])), abs=1e-15)
                for l in range(K):
                    ix = [k, l, a, b]
                    assert I4t[k, l, a, b] == pytest.approx(float(i4(C[np.ix_(ix, ix)])), abs=1e-15)


@pytest.mark.parametrize("g", ["erf", "linear"])
def test_eg_formula_matches_empirical_half_mse(g):
    """Correlated Gaussian inputs x = P c + noise (Omega = P P' + s^2 I, Phi = P), K=3 students, M=2 teachers:
    eg_analytic(order_parameters(w, B, moments)) within 4 standard errors of 1/2 mean (y - yhat)^2 on 2e5
    samples."""
    rng = np.random.default_rng(4)
    K, M, N, D, s, P_samples = 3, 2, 60, 30, 0.7, 200_000
    P = rng.standard_normal((N, D)) / math.sqrt(D)
    moments = Moments(omega=P @ P.T + s**2 * np.eye(N), phi=P)
    w, v = rng.standard_normal((K, N)), rng.standard_normal(K)
    B, A = rng.standard_normal((M, D)), np.array([1.0, -0.6])
    gf = _g if g == "erf" else (lambda u: u)
    c = rng.standard_normal((P_samples, D))
    x = c @ P.T + s * rng.standard_normal((P_samples, N))
    loss = 0.5 * (gf(x @ w.T / math.sqrt(N)) @ v - gf(c @ B.T / math.sqrt(D)) @ A) ** 2
    eg = float(eg_analytic(*order_parameters(w, B, moments), v, A, g))
    _mc_check(eg, loss, n_sigma=4.0)
    # batch dimensions broadcast (replicas)
    Q, R, T = order_parameters(np.stack([w, 2 * w]), B, moments)
    batch = eg_analytic(Q, R, T, np.stack([v, v]), A, g)
    assert batch.shape == (2,) and batch[0] == pytest.approx(eg, abs=1e-14)


def _weights(rng, K, M, N, D):
    return rng.standard_normal((K, N)), rng.standard_normal(K), rng.standard_normal((M, D)), np.ones(M)


def _max_diff(recs_a, recs_b):
    assert [r.keys() for r in recs_a] == [r.keys() for r in recs_b]
    return max(abs(a[k] - b[k]) for a, b in zip(recs_a, recs_b, strict=True) for k in a)


@pytest.mark.parametrize(
    ("g", "train_v", "K", "M"), [("erf", True, 2, 2), ("erf", False, 3, 2), ("linear", True, 2, 3)]
)
def test_gaussian_equivalence_with_identity_moments_is_saad_solla(g, train_v, K, M):
    """Omega = I, Phi = I (x = c, delta = 1): the GE ODE (Gaussian-regression G/H form over N eigenvalues) and
    the Saad-Solla ODE (direct I3/I4 sums) agree to 1e-10 along a trajectory to t = 20
    (docs/studies/gaussian_equivalence.md §5.3)."""
    rng = np.random.default_rng(5)
    N = 40
    w, v, B, A = _weights(rng, K, M, N, N)
    times = log_times(20, 8)
    ss = saad_solla_ode(*order_parameters(w, B), v, A, eta=0.2, times=times, g=g, train_second_layer=train_v)
    explicit = Moments(omega=np.eye(N), phi=np.eye(N))
    for moments in (Moments.iid(), explicit):
        state = ge_initial_state(w, v, B, A, moments)
        assert state.delta == 1.0
        ge = gaussian_equivalence_ode(state, eta=0.2, times=times, g=g, train_second_layer=train_v)
        assert _max_diff(ss, ge) < 1e-10
    assert abs(ss[-1]["eg"] - ss[0]["eg"]) > 0.05  # the trajectory moves
    assert (ss[-1]["v_0"] != ss[0]["v_0"]) == train_v


def test_delta_is_d_over_n_and_wrong_delta_fails():
    """x = (c, independent noise) in R^N, D < N: Omega = I_N, Phi = [I_D; 0]. This is Saad-Solla with a
    teacher padded by zeros, so the GE ODE must reproduce it exactly with delta = D/N = 0.4 derived from the
    shapes. Negative control: the original's default delta = 0.5 (docs/studies/gaussian_equivalence.md §7.1)
    misses by far more."""
    rng = np.random.default_rng(6)
    K, M, N, D = 3, 2, 50, 20
    w, v, B, A = _weights(rng, K, M, N, D)
    phi = np.zeros((N, D))
    phi[:D] = np.eye(D)
    moments = Moments(omega=np.eye(N), phi=phi)
    times = np.linspace(0, 10, 6)
    ss = saad_solla_ode(*order_parameters(w, B, moments), v, A, eta=0.5, times=times)
    state = ge_initial_state(w, v, B, A, moments)
    assert state.delta == pytest.approx(D / N)
    assert _max_diff(ss, gaussian_equivalence_ode(state, eta=0.5, times=times)) < 1e-10
    wrong = gaussian_equivalence_ode(
        ge_initial_state(w, v, B, A, moments, force_delta=0.5), eta=0.5, times=times
    )
    assert max(abs(a["eg"] - b["eg"]) for a, b in zip(ss, wrong, strict=True)) > 0.02


def test_ge_state_reproduces_order_parameters_from_weights():
    """Q = (1/N) sum rho q, R = (1/(N sqrt delta)) sum r equal w Omega w'/N and w Phi B'/sqrt(ND)
    (Eq. (5.2) of docs/studies/gaussian_equivalence.md)."""
    rng = np.random.default_rng(7)
    K, M, N, D = 2, 3, 30, 12
    w, v, B, A = _weights(rng, K, M, N, D)
    F = rng.standard_normal((N, N))
    moments = Moments(omega=F @ F.T / N, phi=rng.standard_normal((N, D)) / 3)
    state = ge_initial_state(w, v, B, A, moments)
    for got, want in zip(state.overlaps(), order_parameters(w, B, moments), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert state.N == N and state.D == D and state.delta == D / N


def test_shape_checks():
    rng = np.random.default_rng(8)
    w, v, B, A = _weights(rng, 2, 2, 10, 5)
    with pytest.raises(ValueError, match="N == D"):
        order_parameters(w, B)
    with pytest.raises(ValueError, match="N == D"):
        ge_initial_state(w, v, B, A)
    s = ge_initial_state(w, v, B, A, Moments(phi=np.ones((10, 5))))
    with pytest.raises(ValueError, match="inconsistent"):
        GEState(rho=s.rho[:-1], q=s.q, r=s.r, tt=s.tt, v=s.v, A=s.A, T=s.T, D=5)
    with pytest.raises(ValueError, match="relu"):
        saad_solla_ode(np.eye(2), np.zeros((2, 2)), np.eye(2), v, A, eta=0.1, times=[0, 1], g="relu")


def test_euler_agrees_with_adaptive_solver():
    """Forward Euler at dt = 0.01 vs solve_ivp (RK45, rtol 1e-9): eg within 2e-3 to t = 30 (dt = 0.001
    changes eg by < 1%: docs/studies/gaussian_equivalence.md §5.5); halving dt moves Euler towards the
    adaptive solution."""
    rng = np.random.default_rng(9)
    w, v, B, A = _weights(rng, 2, 2, 100, 100)
    args = (*order_parameters(w, B), v, A)
    times = log_times(30, 10)
    euler = saad_solla_ode(*args, eta=0.5, times=times)
    fine = saad_solla_ode(*args, eta=0.5, times=times, dt=0.005)
    rk = saad_solla_ode(*args, eta=0.5, times=times, method="RK45", rtol=1e-9, atol=1e-12)
    err = [abs(a["eg"] - b["eg"]) for a, b in zip(euler, rk, strict=True)]
    err_fine = [abs(a["eg"] - b["eg"]) for a, b in zip(fine, rk, strict=True)]
    assert max(err) < 2e-3 and max(err_fine) < 0.6 * max(err)
    state = ge_initial_state(w, v, B, A)
    ge_rk = gaussian_equivalence_ode(state, eta=0.5, times=times, method="RK45", rtol=1e-9, atol=1e-12)
    assert max(abs(a["eg"] - b["eg"]) for a, b in zip(ge_rk, rk, strict=True)) < 1e-6


def test_records_sit_at_requested_times_and_nan_after_divergence():
    Q, R, T = np.eye(2), np.full((2, 2), 0.1), np.eye(2)
    v, A = np.array([0.5, -0.2]), np.ones(2)
    times = [0.0, 0.003, 0.5, 2.0]
    recs = saad_solla_ode(Q, R, T, v, A, eta=0.3, times=times)
    assert [r["t"] for r in recs] == times
    assert set(recs[0]) == {"t", "eg", "Q_00", "Q_01", "Q_11", "R_00", "R_01", "R_10", "R_11", "T_00", "T_01",
                            "T_11", "v_0", "v_1"}  # fmt: skip
    assert recs[0]["eg"] == pytest.approx(float(eg_analytic(Q, R, T, v, A)))
    blown = saad_solla_ode(Q, R, T, v, A, eta=50.0, times=[0.0, 1.0, 100.0], g="linear")
    assert math.isfinite(blown[0]["eg"]) and math.isnan(blown[-1]["eg"])
    with pytest.raises(ValueError, match="non-decreasing"):
        saad_solla_ode(Q, R, T, v, A, eta=0.3, times=[1.0, 0.5])


def test_log_times_snap_to_the_step_grid():
    t = log_times(10, 20, N=100)
    assert t[0] == 0 and t[-1] == 10 and np.all(np.diff(t) > 0)
    steps = np.round(t * 100).astype(int)
    assert list(t) == list(steps / 100)


@pytest.mark.parametrize(
    ("g", "train_v", "K", "M"), [("erf", True, 2, 2), ("erf", False, 3, 2), ("linear", True, 2, 3)]
)
def test_compiled_euler_steps_are_the_numpy_equations(g, train_v, K, M):
    """kernels.ge_euler_steps against the matrix form it replaces (backend="numpy"), on a generic
    Omega and Phi (random covariance, D < N, so delta != 1 and every coefficient block is non-trivial): the
    records agree to 1e-12 along a trajectory to t = 20 (reassociated sums move them by rounding only)."""
    rng = np.random.default_rng(11)
    N, D = 60, 25
    F = rng.standard_normal((N, D)) / math.sqrt(D)
    omega = F @ F.T + 0.5 * np.eye(N)
    moments = Moments(omega=omega, phi=F)
    w, v, B, A = _weights(rng, K, M, N, D)
    state = ge_initial_state(w, v, B, A, moments)
    times = log_times(20, 8)
    kw = dict(eta=0.3, times=times, g=g, train_second_layer=train_v, dt=0.01)
    compiled, reference = (gaussian_equivalence_ode(state, backend=b, **kw) for b in ("numba", "numpy"))
    assert _max_diff(compiled, reference) < 1e-12
    assert abs(reference[-1]["eg"] - reference[0]["eg"]) > 0.02  # the trajectory moves
    assert (reference[-1]["v_0"] != reference[0]["v_0"]) == train_v


def test_compiled_euler_steps_stop_at_divergence_as_numpy_does():
    """A learning rate and Euler step far beyond stability (eta = 50, dt = 0.1; eta = 10 still converges):
    both backends turn the state non-finite (the compiled loop divides by zero as numpy does, no exception)
    and write NaN records from the same time on."""
    rng = np.random.default_rng(12)
    w, v, B, A = _weights(rng, 2, 2, 30, 30)
    state = ge_initial_state(w, v, B, A, Moments.iid())
    times = np.linspace(0, 30, 7)
    a, b = (
        gaussian_equivalence_ode(state, eta=50.0, times=times, dt=0.1, backend=k) for k in ("numba", "numpy")
    )
    stable = gaussian_equivalence_ode(state, eta=10.0, times=times, dt=0.1)
    assert all(math.isfinite(r["eg"]) for r in stable)
    nan_a, nan_b = ([math.isnan(r["eg"]) for r in recs] for recs in (a, b))
    assert nan_a == nan_b and any(nan_a) and not nan_a[0]
