"""The `rand` sign generator and its moments (reference/gaussian_equivalence.md §3, §5, §6) vs Monte Carlo.

Tolerances come from the Monte-Carlo standard error. For +-1 outputs the per-entry variances are exact:
Var(x_i x_j) = 1 - Omega_ij^2 and Var(x_i c_a) = E[c_a^2] - Phi_ia^2 = 1 - Phi_ia^2, Var(x_i) = 1, so
z = (analytic - MC) / SE is ~N(0, 1) per entry when the analytic value is exact. With ~2,000 entries a
5-sigma bound on max |z| fails by chance with probability ~1e-3 (and the seeds are fixed).
"""

from __future__ import annotations

import numpy as np
import pytest

from learnscope.data.generators import RandomSignGenerator, estimate_moments
from learnscope.theory.committee_ode import Moments

P = 200_000  # Monte-Carlo samples; SE of one entry <= 1/sqrt(P) = 2.2e-3


def _z(gen_moments, est, n):
    """z-scores of the off-diagonal Omega entries, of Phi and of the mean, using the exact +-1 variances."""
    om, ph = gen_moments.omega, gen_moments.phi
    off = ~np.eye(len(om), dtype=bool)
    se_om = np.sqrt(np.maximum(1 - om**2, 1e-12) / n)
    se_ph = np.sqrt((1 - ph**2) / n)
    return (
        ((om - est.omega) / se_om)[off],
        ((ph - est.phi) / se_ph).ravel(),
        (gen_moments.mean_x - est.mean_x) * np.sqrt(n),
    )


def _rms(z):
    return float(np.sqrt(np.mean(z**2)))


@pytest.fixture(scope="module")
def mc():
    """MC moments of rand generators, keyed by (D, N, L); drawn once per module."""
    cache = {}

    def get(D, N, L, n=P):
        if (D, N, L) not in cache:
            gen = RandomSignGenerator(D, N, L, rng=0)
            cache[D, N, L] = gen, estimate_moments(gen, np.random.default_rng(1), n, batch_size=8192)
        return cache[D, N, L]

    return get


def test_rand_generator_outputs_and_determinism():
    g1, g2 = RandomSignGenerator(20, 50, 4, rng=3), RandomSignGenerator(20, 50, 4, rng=3)
    x1, c1 = g1(np.random.default_rng(5), 100)
    x2, c2 = g2.sample(np.random.default_rng(5), 100)
    assert x1.shape == (100, 50) and c1.shape == (100, 20) and x1.dtype == np.float64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(c1, c2)
    assert set(np.unique(x1)) == {-1.0, 1.0}
    np.testing.assert_array_equal(g1.forward(-c1), -x1)  # odd in c, hence E[x] = 0
    assert [F.shape for F in g1.weights] == [(20, 20)] * 3 + [(50, 20)]
    assert not np.array_equal(RandomSignGenerator(20, 50, 4, rng=4).weights[0], g1.weights[0])
    m = g1.analytic_moments()
    assert isinstance(m.moments, Moments) and m.omega.shape == (50, 50) and m.phi.shape == (50, 20)
    np.testing.assert_allclose(np.diagonal(m.omega), 1.0)
    assert np.linalg.eigvalsh(m.omega).min() > -1e-10
    with pytest.raises(ValueError, match="method"):
        g1.analytic_moments("exact")  # type: ignore[arg-type]


def test_arcsine_moments_exact_for_one_layer(mc):
    """L = 1: the arcsine law and Stein's lemma are exact (reference §3): every entry within 5 SE."""
    gen, est = mc(20, 50, 1)
    zo, zp, zm = _z(gen.analytic_moments("arcsine"), est, P)
    assert np.abs(zo).max() < 5 and np.abs(zp).max() < 5 and np.abs(zm).max() < 5
    assert 0.8 < _rms(zo) < 1.2 and 0.8 < _rms(zp) < 1.2  # errors are pure MC noise
    # negative control: the original's linearised recursion is far outside the noise even for L = 1
    zo_lin, zp_lin, _ = _z(gen.analytic_moments("linearised"), est, P)
    assert np.abs(zo_lin).max() > 50 and np.abs(zp_lin).max() > 50


@pytest.mark.parametrize("L", [2, 4])
def test_arcsine_closure_for_deep_generators(mc, L):
    """L >= 2: the layer-wise arcsine recursion is a Gaussian closure (the +-1 hidden units make the
    pre-activations only approximately Gaussian), not exact. At D = 20 it misses MC by several SE
    (measured rms z ~ 9 (L=2), ~ 17 (L=4) for Omega) but is a clear improvement on the original's
    linearisation (rms z ~ 29, 33), and the mean is still exact (odd generator)."""
    gen, est = mc(20, 50, L)
    zo, zp, zm = _z(gen.analytic_moments("arcsine"), est, P)
    zo_lin, zp_lin, _ = _z(gen.analytic_moments("linearised"), est, P)
    assert np.abs(zm).max() < 5
    assert _rms(zo) < 0.75 * _rms(zo_lin) and _rms(zp) < 0.75 * _rms(zp_lin)
    rel_om = np.linalg.norm(gen.analytic_moments().omega - est.omega) / np.linalg.norm(est.omega)
    assert rel_om < 0.2


def test_arcsine_closure_improves_with_latent_width(mc):
    """At D = 100 (the paper's latent size), L = 4, the closure error is at the level of 1e5-sample MC noise
    (measured rms z ~ 1.5 for Omega, ~ 1.15 for Phi; exact would be 1), against ~ 17 at D = 20."""
    n = 100_000
    gen, est = mc(100, 50, 4, n)
    zo, zp, zm = _z(gen.analytic_moments(), est, n)
    assert _rms(zo) < 2.0 and _rms(zp) < 1.5 and np.abs(zm).max() < 5


def test_estimator_on_gaussian_with_known_moments():
    """x = F c + mu, c ~ N(0, I_D): Omega = F F', Phi = F, E[x] = mu. Var(x_i x_j) = Omega_ii Omega_jj +
    Omega_ij^2 and Var(x_i c_a) = Omega_ii + Phi_ia^2 give the SE; a large mean (1e3) checks that the
    float64 merge does not cancel."""
    rng = np.random.default_rng(0)
    N, D, n = 30, 10, 100_000
    F = rng.standard_normal((N, D)) / np.sqrt(D)
    mu = 1e3 * rng.standard_normal(N)

    def sample(r, m):
        c = r.standard_normal((m, D))
        return c @ F.T + mu, c

    est = estimate_moments(sample, np.random.default_rng(1), n, batch_size=3000)
    om = F @ F.T
    d = np.diagonal(om)
    z_om = (est.omega - om) / np.sqrt((np.outer(d, d) + om**2) / n)
    z_ph = (est.phi - F) / np.sqrt((d[:, None] + F**2) / n)
    z_mu = (est.mean_x - mu) / np.sqrt(d / n)
    assert np.abs(z_om).max() < 5 and np.abs(z_ph).max() < 5 and np.abs(z_mu).max() < 5
    assert np.abs(est.mean_c).max() < 5 / np.sqrt(n)
    assert est.n_samples == n
    # the convergence measure is about the relative standard error of the estimate
    rel_err = np.linalg.norm(est.omega - om) / np.linalg.norm(om)
    assert 0.2 * rel_err < est.rel_change["omega"] < 5 * rel_err

    # exact merge: streaming over uneven batches equals the two-pass covariance of the same data
    data_rng = np.random.default_rng(2)
    xs, cs = sample(data_rng, 1001)
    pos = [0]

    def replay(_r, m):
        i = pos[0]
        pos[0] += m
        return xs[i : i + m], cs[i : i + m]

    e2 = estimate_moments(replay, np.random.default_rng(0), 1001, batch_size=97)
    full = np.cov(np.hstack([xs, cs]).T)
    np.testing.assert_allclose(e2.omega, full[:N, :N], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(e2.phi, full[:N, N:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(e2.mean_x, xs.mean(axis=0), rtol=1e-12)

    # deterministic with a seed, and batch-size independent (same random stream)
    e3 = estimate_moments(sample, np.random.default_rng(1), n, batch_size=3000)
    np.testing.assert_array_equal(e3.omega, est.omega)
    e4 = estimate_moments(sample, np.random.default_rng(1), n, batch_size=7000)
    np.testing.assert_allclose(e4.omega, est.omega, rtol=1e-8, atol=1e-8)


def test_estimator_tolerance_doubles_samples():
    gen = RandomSignGenerator(10, 20, 1, rng=0)
    est = estimate_moments(gen, np.random.default_rng(0), 1000, batch_size=512, tol=0.02, max_samples=64_000)
    assert est.rel_change["omega"] < 0.02 and est.n_samples in {2**k * 1000 for k in range(7)}
    assert est.n_samples > 1000
    capped = estimate_moments(gen, np.random.default_rng(0), 1000, batch_size=512, tol=1e-9, max_samples=4000)
    assert capped.n_samples == 4000
    with pytest.raises(ValueError):
        estimate_moments(gen, np.random.default_rng(0), 1)
