"""Closed forms of the double-descent study (docs/studies/double_descent.md §3-§4), each against a trusted
reference: the literal gradient-descent loop, direct linear solves (np.linalg.solve, lstsq, pinv), the
approximate formula transcribed term by term from Eqs. (4.1)-(4.7), per-value calls, and the headline numbers
of the paper's figures.

Protocol (docs/studies/double_descent.md §3.4): n = 150, d = 100, p = 70, σ = 0, κ ∈ {1, 100, 1e4}, draws of
`sample_teachers` (seeds 0, 1, ...), η = 1/λ_max(XᵀX), steps t = unique(round(10^linspace(0, 5, 26))). The
fast run checks the loop over 10³ steps on 8 draws per κ; the slow run does all 10⁵ steps on 32 draws per κ.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from learnscope.data.teachers import TeacherDraws, sample_teachers, singular_values
from learnscope.errors import ConfigError
from learnscope.theory.double_descent import (
    TheoryDomainError,
    approx_curves,
    curve_summary,
    describe_summary,
    exact_curves,
    original_grid,
    ridge_solution,
    spectrum,
)

N, D, P = 150, 100, 70
KAPPAS = (1.0, 100.0, 1e4)
STEPS = np.unique(np.round(10 ** np.linspace(0, 5, 26)))
HALF_GRID = 11 / 299 / 2  # half the spacing of original_grid() in log10 t


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Batches of 100x100 matrices: a multi-threaded BLAS only adds overhead, and on a busy 2-core machine it
    makes eigh and QR 10-30x slower. The results do not depend on it beyond rounding."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@functools.cache
def draws(kappa: float, count: int, n: int = N, sigma: float = 0.0) -> TeacherDraws:
    return sample_teachers(n, singular_values(D, P, kappa), sigma, count, n_test=1)


def subset(dr: TeacherDraws, count: int) -> TeacherDraws:
    first = {k: getattr(dr, k)[:count] for k in ("x", "y", "x_test", "y_test", "F", "w")}
    return dataclasses.replace(dr, **first)


def order_parameters(dr: TeacherDraws, W: np.ndarray):
    """R, Q, eg of students W (S, ..., d) by their definitions (docs/studies/double_descent.md Eqs.
    (2.4)-(2.5))."""
    d = W.shape[-1]
    Fw = np.einsum("sij,s...j->s...i", dr.F, W)
    w = dr.w.reshape(dr.w.shape[:1] + (1,) * (W.ndim - 2) + dr.w.shape[1:])
    R = (Fw * w).sum(-1) / d
    Q = (Fw * Fw).sum(-1) / d
    return R, Q, 0.5 * ((w * w).sum(-1) / d - 2 * R + Q)


def gd_loop(dr: TeacherDraws, steps: np.ndarray, l2=(0.0,)):
    """The literal full-batch GD of ½‖Xŵ − y‖² + (λ/2)‖ŵ‖² from ŵ = 0 at η = 1/λ_max(XᵀX), all draws and
    penalties at once; R, Q, eg (S, Λ, T) at the given steps."""
    X = dr.x
    G = np.swapaxes(X, 1, 2) @ X
    b = np.einsum("snd,sn->sd", X, dr.y)[:, :, None]
    eta = (1.0 / np.linalg.eigvalsh(G)[:, -1])[:, None, None]
    l2 = np.asarray(l2, dtype=float)[None, None, :]
    W = np.zeros((len(X), X.shape[2], l2.shape[-1]))
    wanted = set(int(s) for s in steps)
    out = []
    for step in range(1, int(steps.max()) + 1):
        W -= eta * (G @ W - b + l2 * W)
        if step in wanted:
            out.append(W.copy())
    return order_parameters(dr, np.stack(out, 1).transpose(0, 3, 1, 2))  # (S, Λ, T, d)


def approx_as_written(n, d, p, kappa, sigma, l2, t, features="both"):
    """Eqs. (4.1)-(4.7) exactly as the original writes them (a = 1 + 2λ'/(…), Q by the 2×2 solve); fast-only
    freezes a₂ at t = 1e-3, slow-only a₁ at t = 1e8, as the original's grid ends do."""

    def a_of(alpha, lam):
        return 1 + 2 * lam / (1 - alpha - lam + np.sqrt((1 - alpha - lam) ** 2 + 4 * lam))

    lam = 1 / t + l2
    H1, H2 = p / d, (d - p) / d
    al1, al2 = n / (H1 * d), n / (H2 * d)
    a1 = a_of(al1, lam / (H1 * 0.25))
    a2 = a_of(al2, lam / (H2 * (0.5 / kappa) ** 2))
    if features == "fast":
        a2 = a_of(al2, (1e3 + l2) / (H2 * (0.5 / kappa) ** 2)) + 0 * a2
    if features == "slow":
        a1 = a_of(al1, (1e-8 + l2) / (H1 * 0.25)) + 0 * a1
    R1, R2 = n / d / a1, n / d / a2
    b1, b2 = al1 / (a1**2 - al1), al2 / (a2**2 - al2)
    c1 = 1 + sigma**2 - 2 * R2 - (2 - a1) / a1 * n / d
    c2 = 1 + sigma**2 - 2 * R1 - (2 - a2) / a2 * n / d
    Q1, Q2 = np.linalg.solve(
        np.moveaxis(np.array([[np.ones_like(b1), -b1], [-b2, np.ones_like(b2)]]), (0, 1), (-2, -1)),
        np.stack([b1 * c1, b2 * c2], -1)[..., None],
    )[..., 0].T
    R, Q = R1 + R2, Q1 + Q2
    return R, Q, 0.5 * (1 + sigma**2 - 2 * R + Q)


def at_grid(value: float, t: np.ndarray) -> bool:
    """`value` (a time quoted to 3-4 digits) is the grid point t, to within half a grid spacing."""
    return abs(np.log10(value) - np.log10(t)) < HALF_GRID


# --------------------------------------------------------------------------------------------------------
# §3: exact curves against the literal loop
# --------------------------------------------------------------------------------------------------------


def _loop_vs_closed_forms(count: int, steps: np.ndarray, l2) -> dict:
    """The literal loop against the discrete and the flow closed forms, per κ: max errors."""
    found = {}
    for kappa in KAPPAS:
        dr = subset(draws(kappa, 256), count)
        R, Q, eg = gd_loop(dr, steps, l2)
        gd = exact_curves(dr, steps, np.asarray(l2), "gd")
        flow = exact_curves(dr, steps, np.asarray(l2), "flow")
        late = steps >= 10
        found[kappa] = {
            "gd": max(np.abs(gd.R - R).max(), np.abs(gd.Q - Q).max(), np.abs(gd.eg_draw - eg).max()),
            "flow": np.abs(flow.eg_draw.mean(0) - eg.mean(0))[:, late].max(),
            "loop_eg": eg[:, 0],
        }
    return found


def test_discrete_closed_form_equals_the_literal_gd_loop_with_and_without_l2():
    steps = STEPS[STEPS <= 1000]
    found = _loop_vs_closed_forms(8, steps, l2=(0.0, 0.05, 0.5))
    for kappa, f in found.items():
        assert f["gd"] < 1e-8, (kappa, f["gd"])  # observed ~1e-14
        assert f["flow"] <= 5e-3, (kappa, f["flow"])  # observed 0.0005-0.0026 (λ = 0.5: larger steps)


@pytest.mark.slow
def test_literal_gd_loop_over_1e5_steps_equals_the_closed_form_and_shows_double_descent_only_at_kappa_100():
    found = _loop_vs_closed_forms(32, STEPS, l2=(0.0,))
    for kappa, f in found.items():
        assert f["gd"] < 1e-8, (kappa, f["gd"])
        assert f["flow"] <= 5e-3, (kappa, f["flow"])
        verdict = curve_summary(STEPS, f["loop_eg"].mean(0))["double_descent"]
        assert verdict == (kappa == 100.0), (kappa, curve_summary(STEPS, f["loop_eg"].mean(0)))


def test_gd_curves_flow_and_double_descent_at_kappa_100_only():
    late = STEPS >= 10
    for kappa in KAPPAS:
        dr = subset(draws(kappa, 256), 32)
        gd = exact_curves(dr, STEPS).eg_draw.mean(0)  # gradient descent's error on these draws
        flow = exact_curves(dr, STEPS, dynamics="flow").eg_draw.mean(0)
        assert np.abs(gd - flow)[late].max() <= 5e-3, kappa  # observed ≤ 0.0026
        found = curve_summary(STEPS, gd)
        assert found["double_descent"] == (kappa == 100.0), (kappa, found)
    at100 = curve_summary(STEPS, exact_curves(subset(draws(100.0, 256), 32), STEPS).eg_draw.mean(0))
    assert at100["first_min_t"] <= 10 and 60 <= at100["peak_t"] <= 200  # GD: min ~6, peak ~100


def test_gd_against_the_approximate_formula():
    """The approximate curve at its own time t against GD after t steps (the original draws both at t + 1),
    mean of 256 draws (a standard error of ~0.003). Its second descent comes 2-3x late, so at κ = 100 the
    expected gap is 0.040 at t ≈ 1.6e4 (1024 draws: 0.0402; blocks of 256: 0.038-0.042), at κ = 1e4 it is
    0.027 at t = 40, at κ = 1 0.0015. Gradient descent's error is what a trained student measures, each draw's
    noiseless-label error with its own ‖w‖²/d (`eg_draw`), the formula's its noiseless-label error `eg_clean`
    (σ = 0: its Eq. 6)."""
    late = STEPS >= 10
    bound = {1.0: 0.005, 100.0: 0.05, 1e4: 0.04}
    for kappa in KAPPAS:
        gd = exact_curves(draws(kappa, 256), STEPS).eg_draw.mean(0)
        approx = approx_curves(N, D, P, kappa, t=STEPS).eg_clean
        assert np.abs(gd - approx)[late].max() <= bound[kappa], kappa


# --------------------------------------------------------------------------------------------------------
# §3: the t → ∞ limit against direct solves
# --------------------------------------------------------------------------------------------------------


def test_limit_is_the_ridge_solution_and_the_min_norm_solution_below_the_threshold():
    for n, l2 in ((150, 0.3), (150, 0.0), (80, 0.0), (80, 0.05), (100, 1e-3)):
        dr = draws(10.0, 6, n=n, sigma=0.3)
        X, y = dr.x, dr.y
        if l2 > 0:
            G = np.swapaxes(X, 1, 2) @ X + l2 * np.eye(D)
            ref = np.linalg.solve(G, np.einsum("snd,sn->sd", X, y)[..., None])[..., 0]
        elif n > D:
            ref = np.stack([np.linalg.lstsq(Xs, ys, rcond=None)[0] for Xs, ys in zip(X, y, strict=True)])
        else:
            ref = np.einsum("sdn,sn->sd", np.linalg.pinv(X), y)  # min-norm
        got = ridge_solution(dr, l2)
        assert np.abs(got - ref).max() <= 1e-8 * max(1.0, np.abs(ref).max()), (n, l2)
        R, Q, eg = order_parameters(dr, ref)
        for dynamics, t in (("flow", [np.inf]), ("gd", [np.inf]), ("gd", [10**7])):
            c = exact_curves(dr, t, l2, dynamics)
            for a, b in ((c.R, R), (c.Q, Q), (c.eg_draw, eg)):
                assert np.abs(a[:, -1] - b).max() <= 1e-7 * max(1.0, np.abs(b).max()), (n, l2, dynamics)


def test_below_the_threshold_without_l2_the_curves_stay_finite_in_the_row_space():
    dr = draws(100.0, 4, n=60)
    sp = spectrum(dr)
    assert (sp.L[:, : D - 60] == 0).all() and (sp.L[:, D - 60 :] > 0).all()
    c = exact_curves(dr, STEPS)
    assert np.isfinite(c.eg).all()
    R, Q, _ = order_parameters(dr, np.einsum("sdn,sn->sd", np.linalg.pinv(dr.x), dr.y))
    c = exact_curves(sp, [np.inf], dynamics="flow")
    assert np.allclose(c.R[:, 0], R, atol=1e-9) and np.allclose(c.Q[:, 0], Q, atol=1e-9)


def test_l2_axis_and_eta_equal_per_value_calls():
    dr = draws(100.0, 5)
    l2 = np.array([0.0, 1e-3, 0.1])
    for dynamics in ("gd", "flow"):
        many = exact_curves(dr, STEPS, l2, dynamics)
        assert many.eg.shape == (5, 3, len(STEPS))
        for i, lam in enumerate(l2):
            one = exact_curves(dr, STEPS, lam, dynamics)
            assert one.eg.shape == (5, len(STEPS))
            np.testing.assert_allclose(many.eg[:, i], one.eg, rtol=0, atol=1e-13)
            np.testing.assert_allclose(many.Q[:, i], one.Q, rtol=0, atol=1e-13)
    eta = 0.7 / spectrum(dr).L[:, -1]
    both = exact_curves(dr, STEPS, eta=eta)
    for s in range(2):
        np.testing.assert_allclose(exact_curves(subset(dr, s + 1), STEPS, eta=eta[: s + 1]).eg[s], both.eg[s])


def test_gd_counts_whole_steps():
    dr = draws(100.0, 2)
    with pytest.raises(ValueError, match="not an integer"):
        exact_curves(dr, [1.0, 2.5])
    with pytest.raises(ValueError):
        exact_curves(dr, [-1.0], dynamics="flow")
    with pytest.raises(ValueError):
        exact_curves(dr, [1.0], l2=-0.1)
    start = exact_curves(dr, [0, 1, 2])  # ŵ(0) = 0: R = Q = 0
    assert start.eg_draw[:, 0] == pytest.approx(0.5 * (dr.w**2).sum(1) / D)
    assert (start.eg[:, 0] == 0.5).all() and (start.eg_clean[:, 0] == 0.5).all()  # Eq. 6 at σ = 0


def test_exact_eg_is_eq6_as_written_and_eg_clean_the_noiseless_error():
    """With label noise σ = 0.3 (n = 120, p = 70, κ = 40, 6 draws, on the original's time grid, gradient
    flow): eg = ½(1 + σ² − 2R + Q) (the paper's Eq. 6 with the exact R, Q), eg_clean = ½(1 − 2R + Q), per draw
    and for the mean over draws; eg_draw = ½(‖w‖²/d − 2R + Q) with R, Q from the student by definition."""
    sigma = 0.3
    dr = draws(40.0, 6, n=120, sigma=sigma)
    assert dr.sigma == sigma
    t = original_grid()
    c = exact_curves(dr, t, dynamics="flow")
    np.testing.assert_allclose(c.eg, 0.5 * (1 + sigma**2 - 2 * c.R + c.Q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.eg_clean, 0.5 * (1 - 2 * c.R + c.Q), rtol=0, atol=1e-12)
    mean = c.mean()
    np.testing.assert_allclose(mean.eg, 0.5 * (1 + sigma**2 - 2 * mean.R + mean.Q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean.eg_clean, 0.5 * (1 - 2 * mean.R + mean.Q), rtol=0, atol=1e-12)
    assert np.abs(c.eg - c.eg_clean - sigma**2 / 2).max() < 1e-15  # not equal: the offset is σ²/2
    w_hat = ridge_solution(dr)  # t -> infinity against the definitions (Eqs. (2.4)-(2.5))
    R, Q, eg = order_parameters(dr, w_hat)
    limit = exact_curves(dr, [np.inf], dynamics="flow")
    np.testing.assert_allclose(limit.eg_draw[:, 0], eg, rtol=0, atol=1e-10)
    np.testing.assert_allclose(limit.eg[:, 0], 0.5 * (1 + sigma**2 - 2 * R + Q), rtol=0, atol=1e-10)
    # the spectrum carries σ, so a precomputed one gives the same curves
    np.testing.assert_array_equal(exact_curves(spectrum(dr), t, dynamics="flow").eg, c.eg)


# --------------------------------------------------------------------------------------------------------
# §4: the approximate formula
# --------------------------------------------------------------------------------------------------------


def test_approx_equals_the_formula_as_written():
    t = original_grid()
    for features in ("both", "fast", "slow"):
        for sigma, l2 in ((0.0, 0.0), (0.2, 1e-3)):
            c = approx_curves(N, D, P, 100.0, sigma, l2, t, features)
            R, Q, eg = approx_as_written(N, D, P, 100.0, sigma, l2, t, features)
            assert np.abs(c.R - R).max() < 1e-6 and np.abs(c.Q - Q).max() < 1e-6, features
            np.testing.assert_allclose(c.eg, eg, rtol=0, atol=1e-6)  # the paper's Eq. 6, σ² included
            np.testing.assert_allclose(c.eg_clean + sigma**2 / 2, eg, rtol=0, atol=1e-6)


def test_approx_eg_is_eq6_as_written_and_eg_clean_the_noiseless_error():
    """σ > 0 on the original's grid: eg = ½(1 + σ² − 2R + Q) of the returned R, Q (the paper's Eq. 6),
    eg_clean = ½(1 − 2R + Q), for both groups, each alone, and a ridge penalty."""
    t = original_grid()
    for features in ("both", "fast", "slow"):
        for sigma, l2 in ((0.2, 0.0), (0.5, 1e-3)):
            c = approx_curves(N, D, P, 100.0, sigma, l2, t, features)
            assert c.eg_draw is None and c.eg.shape == c.eg_clean.shape == (300,)
            np.testing.assert_allclose(c.eg, 0.5 * (1 + sigma**2 - 2 * c.R + c.Q), rtol=0, atol=1e-12)
            np.testing.assert_allclose(c.eg_clean, 0.5 * (1 - 2 * c.R + c.Q), rtol=0, atol=1e-12)
            assert np.abs(c.eg - c.eg_clean - sigma**2 / 2).max() < 1e-15, (features, sigma)
    quiet = approx_curves(N, D, P, 100.0, 0.0, 0.0, t)
    np.testing.assert_array_equal(quiet.eg, quiet.eg_clean)  # σ = 0: the two are one


def test_approx_reproduces_fig1():
    t1 = original_grid() + 1  # the original draws the formula at t + 1
    both = approx_curves(N, D, P, 100.0)
    np.testing.assert_allclose(both.reported_t, t1)
    assert both.eg[0] == pytest.approx(0.4997, abs=1e-4) and t1[0] == pytest.approx(1.001)
    found = curve_summary(both.reported_t, both.eg)
    assert found["first_min"] == pytest.approx(0.2327, abs=1e-4) and at_grid(14.19, found["first_min_t"])
    assert found["peak"] == pytest.approx(0.2677, abs=1e-4) and at_grid(330.9, found["peak_t"])
    assert found["double_descent"] and found["final"] == pytest.approx(0.0, abs=1e-4)
    fast = approx_curves(N, D, P, 100.0, features="fast")
    found = curve_summary(t1, fast.eg)
    assert found["first_min"] == pytest.approx(0.2329, abs=1e-4) and at_grid(14.19, found["first_min_t"])
    assert found["final"] == pytest.approx(0.2812, abs=1e-4) and not found["double_descent"]  # U-shape
    slow = approx_curves(N, D, P, 100.0, features="slow")
    assert slow.eg[0] == pytest.approx(0.2812, abs=1e-4) and (np.diff(slow.eg) <= 1e-12).all()  # monotone
    assert not curve_summary(t1, slow.eg)["double_descent"]


def test_summaries_of_the_fig1_curves_say_what_each_does():
    """Fig. 1's three curves on its window (t + 1 ≤ 1e5) and on the whole grid: both groups have a peak and
    are still falling at the window's end (no second minimum inside it, not the last grid point); fast
    only falls to a minimum and rises to a plateau (no peak); slow only is monotone (no peak, no minimum)."""
    t1 = original_grid() + 1
    for window in (1e5, np.inf):
        shown = t1 <= window
        both, fast, slow = (
            curve_summary(t1[shown], approx_curves(N, D, P, 100.0, features=f).eg[shown])
            for f in ("both", "fast", "slow")
        )
        assert both["shape"] == "peak" and both["double_descent"] and both["second_min"] is None
        assert both["peak"] == pytest.approx(0.2677, abs=1e-4) and both["peak_t"] != both["final_t"]
        assert both["at_window_end"] == "falling" and both["final_t"] == t1[shown][-1]
        assert fast["shape"] == "single descent" and fast["peak"] is None and fast["second_min"] is None
        assert fast["first_min"] == pytest.approx(0.2329, abs=1e-4) and fast["at_window_end"] == "rising"
        assert slow["shape"] == "monotone" and slow["first_min"] is None and slow["peak"] is None
        assert slow["second_min"] is None and slow["at_window_end"] == "falling"
    assert both["final"] == pytest.approx(0.0, abs=1e-4)  # the whole grid: → 0 at 1e8, still falling
    shown = t1 <= 1e5
    assert curve_summary(t1[shown], approx_curves(N, D, P, 100.0).eg[shown])["final"] == pytest.approx(
        0.0216, abs=1e-4
    )
    text = describe_summary(curve_summary(t1[shown], approx_curves(N, D, P, 100.0).eg[shown]), "t + 1")
    assert text == (
        "first minimum 0.2327 (t + 1 = 14.2) → peak 0.2677 (331) → still falling at the end of the window: "
        "0.0216 (9.62e+04)"
    )


def test_approx_reproduces_fig3():
    t1 = original_grid() + 1
    for kappa, first, first_t, peak, peak_t in (
        (30.0, 0.2616, 15.4, 0.3210, 199.5),
        (100.0, 0.2632, 14.2, 0.3794, 770.6),
        (1000.0, 0.2633, 14.2, 0.4089, 8250.0),
    ):
        found = curve_summary(t1, approx_curves(110, D, P, kappa).eg)
        assert found["first_min"] == pytest.approx(first, abs=1e-4) and at_grid(first_t, found["first_min_t"])
        assert found["peak"] == pytest.approx(peak, abs=1e-4) and at_grid(peak_t, found["peak_t"])
        assert found["double_descent"]
    assert curve_summary(t1, approx_curves(110, D, P, 1000.0).eg)["final"] == pytest.approx(0.0028, abs=1e-4)
    # κ = 12: a shallow local bump, found by the largest-rise rule, too small to count as double descent
    found = curve_summary(t1, approx_curves(110, D, P, 12.0).eg)
    assert (found["first_min"], found["peak"]) == (
        pytest.approx(0.2504, abs=1e-4),
        pytest.approx(0.2517, abs=1e-4),
    )
    assert (
        at_grid(22.9, found["first_min_t"]) and at_grid(44.2, found["peak_t"]) and not found["double_descent"]
    )
    big = approx_curves(110, D, P, 1e5)
    assert (big.R[-1], big.Q[-1], big.eg[-1]) == (
        pytest.approx(0.701, abs=1e-3),
        pytest.approx(1.222, abs=1e-3),
        pytest.approx(0.410, abs=1e-3),
    )
    for kappa in (1.0, 7.0):
        assert (np.diff(approx_curves(110, D, P, kappa).eg) <= 1e-12).all()  # monotone


def test_approx_reproduces_fig2_with_the_noise_convention():
    """fig2_cd (σ = 0.2): the quoted numbers are the paper's Eq. 6, σ²/2 included: `eg`; `eg_clean` is
    σ²/2 lower. At x = 8 the second minimum lies inside the window (the curve rises after it)."""
    x = np.linspace(0.1, 8, 100)
    heat = approx_curves(120, D, 80, 40.0, 0.2, 10 ** -x[:, None])
    assert heat.eg.shape == (100, 300)
    noisy = heat.eg
    np.testing.assert_allclose(heat.eg_clean, heat.eg - 0.2**2 / 2, rtol=0, atol=1e-15)
    t1 = heat.reported_t
    assert noisy[0, -1] == pytest.approx(0.3646, abs=1e-4) and (np.diff(noisy[0]) <= 1e-12).all()
    found = curve_summary(t1, noisy[-1])
    assert found["first_min"] == pytest.approx(0.2303, abs=1e-4) and at_grid(18.0, found["first_min_t"])
    assert found["peak"] == pytest.approx(0.2953, abs=1e-4) and at_grid(331.0, found["peak_t"])
    assert found["second_min"] == pytest.approx(0.1043, abs=1e-4) and at_grid(3.5e4, found["second_min_t"])
    assert found["final"] == pytest.approx(0.1200, abs=1e-4)
    # x = 2.494: a minimum, then up to a plateau (no peak)
    found = curve_summary(t1, noisy[30])
    assert found["shape"] == "single descent" and found["peak"] is None
    assert found["first_min"] == pytest.approx(0.2303, abs=1e-4) and at_grid(19.5, found["first_min_t"])
    assert found["final"] == pytest.approx(0.2953, abs=1e-4)


def test_approx_broadcasts_like_per_value_calls():
    kappa = np.array([1.0, 30.0, 1e4])[:, None]
    l2 = np.array([0.0, 1e-4])[:, None, None]
    t = original_grid(50)
    grid = approx_curves(N, D, P, kappa, 0.1, l2, t)
    assert grid.eg.shape == (2, 3, 50)
    for i, lam in enumerate(l2.ravel()):
        for j, k in enumerate(kappa.ravel()):
            one = approx_curves(N, D, P, k, 0.1, lam, t)
            for a, b in ((grid.R, one.R), (grid.Q, one.Q), (grid.eg, one.eg)):
                np.testing.assert_array_equal(a[i, j], b)
            assert approx_curves(N, D, P, k, 0.1, lam, t[7]).eg == pytest.approx(one.eg[7], abs=1e-15)


@pytest.mark.parametrize(
    ("n", "p", "t", "where"),
    [
        (150, 0, None, "p=0"),  # no fast group
        (150, 100, None, "p=100"),  # no slow group
        (80, 70, None, "n=80"),  # too few samples: 1 − b₁b₂ < 0 at late times
        (100, 70, [1.0, np.inf], "t=inf"),  # the interpolation threshold n = d at t = ∞
    ],
)
def test_domain_error_names_the_parameters(n, p, t, where):
    with pytest.raises(TheoryDomainError, match=where) as info:
        approx_curves(n, D, p, 100.0, t=t)
    assert isinstance(info.value, ConfigError) and "\n" not in str(info.value)
    assert "kappa=100" in str(info.value)


def test_domain_error_reports_the_first_offending_time():
    t = original_grid()
    with pytest.raises(TheoryDomainError) as info:
        approx_curves(80, D, P, 100.0, t=t)
    first = float(str(info.value).split("t=")[1].split(" ")[0].rstrip(","))
    ok = approx_curves(80, D, P, 100.0, t=t[t < first * (1 - 1e-6)])
    assert np.isfinite(ok.eg).all() and len(ok.eg) > 0


# --------------------------------------------------------------------------------------------------------
# §4.4: curve summaries
# --------------------------------------------------------------------------------------------------------


def test_curve_summary_on_constructed_shapes():
    t = np.arange(1.0, 11.0)
    # monotone: no peak, no minimum inside the window; still falling at the end, or flat
    mono = curve_summary(t, np.linspace(0.5, 0.1, 10))
    assert mono["shape"] == "monotone" and mono["at_window_end"] == "falling"
    assert mono["first_min"] is None and mono["peak"] is None and mono["second_min"] is None
    assert (mono["final_t"], mono["final"]) == (10.0, pytest.approx(0.1)) and not mono["double_descent"]
    assert curve_summary(t, np.r_[np.linspace(0.5, 0.1, 7), [0.1] * 3])["at_window_end"] == "flat"
    # single descent: a minimum, then up to the end (no peak: not the last point as peak and second minimum)
    u = np.array([0.5, 0.3, 0.2, 0.22, 0.25, 0.27, 0.28, 0.281, 0.2812, 0.2812])
    found = curve_summary(t, u)
    assert found["shape"] == "single descent" and (found["first_min_t"], found["first_min"]) == (3.0, 0.2)
    assert found["peak"] is None and found["second_min"] is None and found["rise"] == pytest.approx(0.0812)
    assert found["at_window_end"] == "flat" and not found["double_descent"]
    # double descent with a second minimum inside the window: the curve rises after it
    dd = np.array([0.5, 0.3, 0.2, 0.25, 0.35, 0.3, 0.2, 0.04, 0.05, 0.06])
    found = curve_summary(t, dd)
    assert (found["first_min_t"], found["peak_t"], found["second_min_t"]) == (3.0, 5.0, 8.0)
    assert found["shape"] == "peak" and found["second_min"] == 0.04 and found["at_window_end"] == "rising"
    assert found["double_descent"] and found["rise"] == pytest.approx(0.15)
    assert found["fall"] == pytest.approx(0.31)
    assert not curve_summary(t, dd, rise=0.2)["double_descent"]
    assert not curve_summary(t, dd, fall=0.4)["double_descent"]
    # double descent still falling at the end of the window: no second minimum, the last value instead
    falling = np.array([0.5, 0.3, 0.2, 0.25, 0.35, 0.3, 0.2, 0.1, 0.05, 0.04])
    found = curve_summary(t, falling)
    assert (found["first_min_t"], found["peak_t"], found["second_min"]) == (3.0, 5.0, None)
    assert found["at_window_end"] == "falling" and (found["final_t"], found["final"]) == (10.0, 0.04)
    assert found["double_descent"] and found["fall"] == pytest.approx(0.31)
    assert describe_summary(found) == (
        "first minimum 0.2000 (t = 3) → peak 0.3500 (5) → still falling at the end of the window: 0.0400 (10)"
    )
    # a second descent far below the first minimum (a long window) does not hide the first minimum
    long = np.array([0.5, 0.3, 0.2, 0.25, 0.35, 0.3, 0.1, 0.01, 0.001, 0.0])
    found = curve_summary(t, long)
    assert (found["first_min_t"], found["peak_t"], found["second_min_t"]) == (3.0, 5.0, None)
    # of two bumps, the larger rise is the peak
    two = np.array([0.5, 0.3, 0.32, 0.2, 0.1, 0.3, 0.05, 0.04, 0.03, 0.02])
    assert curve_summary(t, two)["peak_t"] == 6.0 and curve_summary(t, two)["first_min_t"] == 5.0
    # a late rise to the end of the window does not hide the peak the curve fell back from
    late = np.array([0.5, 0.2, 0.3, 0.1, 0.12, 0.2, 0.3, 0.4, 0.5, 0.6])
    found = curve_summary(t, late)
    assert (found["first_min_t"], found["peak_t"], found["second_min_t"]) == (2.0, 3.0, 4.0)
    assert isinstance(found["first_min"], float) and isinstance(found["double_descent"], bool)
    with pytest.raises(ValueError):
        curve_summary(t, np.full(10, np.nan))
