"""Generators and their moments (docs/studies/gaussian_equivalence.md §3-4): the `rand` sign generator vs
Monte Carlo; DCGAN and real NVP against the original architecture, autograd and np.cov; moments files.

Tolerances come from the Monte-Carlo standard error. For +-1 outputs the per-entry variances are exact:
Var(x_i x_j) = 1 - Omega_ij^2 and Var(x_i c_a) = E[c_a^2] - Phi_ia^2 = 1 - Phi_ia^2, Var(x_i) = 1, so
z = (analytic - MC) / SE is ~N(0, 1) per entry when the analytic value is exact. With ~2,000 entries a
5-sigma bound on max |z| fails by chance with probability ~1e-3 (and the seeds are fixed).
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from learnscope.errors import ConfigError, DataError
from learnscope.runs.committee.generators import (
    GENERATORS,
    DCGANGenerator,
    IIDGenerator,
    RandomSignGenerator,
    RealNVPGenerator,
    _sign,
    estimate_moments,
    load_moments,
    make_generator,
    save_moments,
)
from learnscope.runs.committee.ode import Moments

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
    """L = 1: the arcsine law and Stein's lemma are exact (docs/studies/gaussian_equivalence.md Eq. (4.1)):
    every entry within 5 SE."""
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


# ----------------------------------------------------------------------------------------------------------
# Deep generators (docs/studies/gaussian_equivalence.md §3): DCGAN and real NVP as torch modules, the
# registry, moments files
# ----------------------------------------------------------------------------------------------------------


def _recording(sample):
    """A sampler that passes `sample` through and keeps every (x, c) it hands out, in order."""
    seen = []

    def draw(rng, n):
        x, c = sample(rng, n)
        seen.append((x, c))
        return x, c

    return draw, seen


def test_dcgan_has_the_reference_architecture_and_parameter_count():
    before = torch.random.get_rng_state()
    gen = DCGANGenerator()  # nz = 100, nc = 3, ngf = 64, random from seed 0
    assert torch.equal(torch.random.get_rng_state(), before)  # seeded by its own generator only
    # 819,200 + 2,097,152 + 524,288 + 131,072 + 192 conv weights + 1,920 BN affine
    # (docs/studies/gaussian_equivalence.md §3)
    assert sum(p.numel() for p in gen.parameters()) == 3_573_824
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in gen.parameters())
    state = gen.state_dict()  # the original's state-dict names, so its trained files load as they are
    assert state["main.0.weight"].shape == (100, 512, 4, 4) and state["main.12.weight"].shape == (64, 3, 1, 1)
    assert not gen.training
    with torch.no_grad():
        img = gen(torch.zeros(2, 100))
    assert img.shape == (2, 3, 32, 32)
    x, c = gen.sample(np.random.default_rng(0), 8)
    assert x.shape == (8, 3072) and c.shape == (8, 100) and x.dtype == c.dtype == np.float64
    np.testing.assert_array_equal(c, np.random.default_rng(0).standard_normal((8, 100)))
    assert np.abs(x).max() <= 1.0 and x.std(axis=0).mean() > 1e-2  # tanh range, and not constant
    with torch.no_grad():  # sample is the module on the rng's latents, flattened
        direct = gen(torch.from_numpy(c).float()).reshape(8, -1).double().numpy()
    np.testing.assert_array_equal(x, direct)


def test_dcgan_is_deterministic_batched_and_loads_its_state_dict(tmp_path):
    small = {"nz": 20, "nc": 1, "ngf": 8}
    g1 = DCGANGenerator(**small, seed=3)
    g2 = DCGANGenerator(**small, seed=torch.Generator().manual_seed(3))
    for a, b in zip(g1.state_dict().values(), g2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(DCGANGenerator(**small, seed=4).main[0].weight, g1.main[0].weight)
    x1, c1 = g1.sample(np.random.default_rng(1), 50)
    g1.batch_size = 7  # several forward calls of 7 give the same samples as one of 50
    x2, c2 = g1.sample(np.random.default_rng(1), 50)
    np.testing.assert_array_equal(c1, c2)
    # float32 kernels sum in a batch-size- and thread-dependent order: outputs of size ~1 after five layers
    # differ by tens of ulps (2.7e-6 seen with 2 threads), nowhere near a real batching bug (~1e-1)
    np.testing.assert_allclose(x1, x2, rtol=0, atol=1e-5)
    # a saved state dict (running BN statistics included) reproduces the generator exactly
    path = tmp_path / "dcgan.pth"
    torch.save(g1.state_dict(), path)
    loaded = DCGANGenerator(**small, weights=path, seed=99)
    np.testing.assert_array_equal(loaded.sample(np.random.default_rng(1), 50)[0], x1)  # same batching
    # the original's weight files are legacy (non-zip) torch pickles: they load too
    torch.save(g1.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    legacy = DCGANGenerator(**small, weights=tmp_path / "legacy.pth")
    np.testing.assert_array_equal(legacy.sample(np.random.default_rng(1), 50)[0], x1)


def test_dcgan_random_inits_are_pytorchs_own_and_the_dcgan_scripts():
    """init="pytorch" draws what the layers' own reset_parameters would from the same seed; init="dcgan" is
    N(0, 0.02) convs and N(1, 0.02) BN scales. BN running statistics are calibrated in both, so each layer's
    output is normalised in eval mode, and the PyTorch init gives images that vary far more with c."""
    small = {"nz": 20, "nc": 1, "ngf": 8, "calibration": 256}
    ours = DCGANGenerator(**small, seed=torch.Generator().manual_seed(5))
    torch.manual_seed(5)  # the same draws in the same layer order from the global RNG
    convs = [m for m in ours.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    for conv in convs:
        ref = torch.nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, bias=False)
        torch.testing.assert_close(conv.weight, ref.weight, rtol=0, atol=0)
    bns = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) for bn in bns)
    dcgan = DCGANGenerator(**small, seed=5, init="dcgan")
    w = torch.cat([m.weight.flatten() for m in dcgan.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 1e-3 and abs(w.mean().item()) < 1e-3
    gamma = torch.cat([m.weight for m in dcgan.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(gamma.mean().item() - 1) < 0.01 and 0.01 < gamma.std().item() < 0.03
    # calibrated BN: the last hidden layer's pre-activations have per-channel mean 0, variance 1 in eval mode
    z = torch.randn(2000, 20, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        h = ours.main[:11](z.reshape(-1, 20, 1, 1))
    torch.testing.assert_close(h.mean((0, 2, 3)), torch.zeros(8), atol=0.1, rtol=0)
    torch.testing.assert_close(h.var((0, 2, 3)), torch.ones(8), atol=0.15, rtol=0)
    spread = {g: g.sample(np.random.default_rng(0), 2000)[0].std(axis=0).mean() for g in (ours, dcgan)}
    assert spread[ours] > 5 * spread[dcgan]
    with pytest.raises(ValueError, match="init must be"):
        DCGANGenerator(**small, init="xavier")


def test_weights_files_that_are_missing_corrupt_mismatching_or_malicious_are_data_errors(tmp_path):
    small = {"nz": 20, "nc": 1, "ngf": 8}
    torch.save(DCGANGenerator(nz=20, nc=1, ngf=4).state_dict(), tmp_path / "ngf4.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file" * 10)
    marker = tmp_path / "PWNED"
    torch.save({"main.0.weight": _Payload(marker)}, tmp_path / "payload.pth")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    cases = {
        "absent.pth": "no such file",
        "garbage.pth": "cannot be read",
        "ngf4.pth": "do not fit this architecture: shape main.0.weight",
        "payload.pth": "cannot be read",
        "list.pth": "not a state dict",
    }
    for name, culprit in cases.items():
        with pytest.raises(DataError, match=culprit) as info:
            DCGANGenerator(**small, weights=tmp_path / name)
        assert "\n" not in str(info.value)
    assert not marker.exists(), "the pickle payload ran"
    with pytest.raises(DataError, match=r"real NVP weights .* missing"):
        RealNVPGenerator(channels=1, size=4, base_dim=4, res_blocks=1, weights=tmp_path / "ngf4.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _tiny_nvp(**kw):
    return RealNVPGenerator(channels=2, size=4, base_dim=4, res_blocks=1, seed=0, **kw)  # D = N = 32


def test_realnvp_inverts_exactly_and_its_log_determinant_matches_autograd():
    nvp = _tiny_nvp().double()  # float64 to compare with autograd at 1e-10
    # 3 checkerboard, 3 channel-wise, then 4 checkerboard couplings (docs/studies/gaussian_equivalence.md §3)
    assert len(nvp.s1_ckbd) == 3 and len(nvp.s1_chan) == 3 and len(nvp.s2_ckbd) == 4
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        x, logdet = nvp.forward_and_logdet(z)
        z_back, logdet_inv = nvp.inverse_and_logdet(x)
    torch.testing.assert_close(z_back, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet_inv, -logdet, rtol=0, atol=1e-12)
    assert (x - z).abs().max() > 0.1 and logdet.abs().min() > 0.1  # a non-trivial, non-volume-preserving map
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda u: nvp(u[None])[0], z[i])
        sign, ref = torch.linalg.slogdet(J)
        assert sign.item() == 1.0  # couplings are orientation preserving
        torch.testing.assert_close(logdet[i], ref, rtol=1e-10, atol=1e-10)
        # and the Jacobian really couples all coordinates (not a triangular map in this ordering)
        assert (J.triu(1).abs() > 1e-8).any() and (J.tril(-1).abs() > 1e-8).any()


def test_realnvp_generator_in_float32_full_size():
    nvp = RealNVPGenerator(base_dim=4, res_blocks=1, seed=0)  # 3 x 32 x 32, D = N = 3072 (delta = 1)
    assert (nvp.D, nvp.N) == (3072, 3072) and next(nvp.parameters()).dtype == torch.float32
    x, c = nvp.sample(np.random.default_rng(0), 6)
    assert x.shape == c.shape == (6, 3072) and x.dtype == np.float64 and np.all(np.isfinite(x))
    with torch.no_grad():
        back = nvp.inverse(torch.from_numpy(x).float())
    np.testing.assert_allclose(back.double().numpy(), c, rtol=0, atol=1e-4)  # float32 round trip


def test_realnvp_state_dict_round_trip(tmp_path):
    nvp = _tiny_nvp(init_scale=0.3)
    torch.save(nvp.state_dict(), tmp_path / "nvp.pth")
    loaded = RealNVPGenerator(
        channels=2, size=4, base_dim=4, res_blocks=1, seed=5, weights=tmp_path / "nvp.pth"
    )
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(nvp.sample(rng_a, 20)[0], loaded.sample(rng_b, 20)[0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: DCGANGenerator(nz=20, nc=1, ngf=8, seed=1),  # N = 1024, D = 20
        lambda: RealNVPGenerator(channels=1, size=8, base_dim=8, res_blocks=1, seed=1),  # D = N = 64
    ],
    ids=["dcgan", "realnvp"],
)
def test_moment_estimates_of_deep_generators_are_exact_covariances_and_converge(make):
    gen = make()
    draw, seen = _recording(gen.sample)
    est = estimate_moments(draw, np.random.default_rng(3), 400, batch_size=150, quiet=True)
    # exactly the two-pass covariance (np.cov, ddof = 1) and means of the very samples drawn
    xs = np.concatenate([x for x, _ in seen])
    cs = np.concatenate([c for _, c in seen])
    assert xs.shape == (400, gen.N) and cs.shape == (400, gen.D)
    full = np.cov(np.hstack([xs, cs]).T)
    np.testing.assert_allclose(est.omega, full[: gen.N, : gen.N], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.phi, full[: gen.N, gen.N :], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.mean_x, xs.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.mean_c, cs.mean(axis=0), rtol=1e-12, atol=1e-15)
    # the convergence measure follows the 1/sqrt(P) law of a Monte-Carlo error: x4 samples -> x0.5
    rel = [est.rel_change]
    for n in (1600, 6400):
        rel.append(
            estimate_moments(gen.sample, np.random.default_rng(3), n, batch_size=2048, quiet=True).rel_change
        )
    for key in ("omega", "phi"):
        for a, b in itertools.pairwise(r[key] for r in rel):
            assert 0.4 < b / a < 0.62, (key, [r[key] for r in rel])


def test_estimator_progress_bar_is_silent_when_quiet_or_not_a_terminal(capsys):
    gen = RandomSignGenerator(5, 8, 1, rng=0)
    a = estimate_moments(gen, np.random.default_rng(0), 100, batch_size=30)
    b = estimate_moments(gen, np.random.default_rng(0), 100, batch_size=30, quiet=True)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # pytest's streams are not terminals
    np.testing.assert_array_equal(a.omega, b.omega)


def test_registry_builds_every_generator_and_rejects_bad_settings():
    assert GENERATORS.kinds() == ["dcgan", "iid", "rand", "realnvp"]
    rand = make_generator("rand", 20, 50, L=2, seed=3)
    ref = RandomSignGenerator(20, 50, 2, rng=3)
    np.testing.assert_array_equal(
        rand.sample(np.random.default_rng(0), 5)[0], ref.sample(np.random.default_rng(0), 5)[0]
    )
    iid = make_generator("iid", 7, 7)
    x, c = iid.sample(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(x, c)
    m = iid.analytic_moments()
    assert m.omega is None and m.phi is None and m.mean_x.shape == (7,)
    dcgan = make_generator("dcgan", 100, 1024, seed=2)  # a grey 1 x 32 x 32 DCGAN
    assert isinstance(dcgan, DCGANGenerator) and (dcgan.D, dcgan.N, dcgan.nc) == (100, 1024, 1)
    bad = {
        ("gan", 10, 10): "unknown generator 'gan'",
        ("iid", 10, 20): "D must equal N",
        ("realnvp", 100, 3072): "D must equal N",
        ("dcgan", 100, 500): "N must be channels \\* 1024",
        ("rand", 0, 10): "need D, N >= 1",
    }
    for (name, D, N), culprit in bad.items():
        with pytest.raises(ConfigError, match=culprit):
            make_generator(name, D, N)
    with pytest.raises(ConfigError, match="no weights file"):
        make_generator("rand", 10, 10, weights="w.pth")
    with pytest.raises(DataError, match="no such file"):
        make_generator("realnvp", 1024, 1024, weights="/nonexistent/w.pth")
    with pytest.raises(ConfigError, match="need L >= 1"):
        make_generator("rand", 10, 10, L=0)


TOY_GENERATOR = """
import numpy as np

from learnscope.registry import GENERATORS


class Negated:
    \"\"\"x = -c: a toy generator (D = N) whose moments are Omega = I, Phi = -I.\"\"\"

    def __init__(self, D, N):
        self.D, self.N = D, N

    def sample(self, rng, n):
        c = rng.standard_normal((n, self.D))
        return -c, c


@GENERATORS.register("negated", Negated)
def negated(D, N, L, seed, weights):
    return Negated(D, N)
"""


def test_a_generator_registered_by_a_plugin_feeds_a_simulation_and_its_ode(tmp_path, plugin, capsys):
    """x = -c has Omega = I and Phi = -I: the estimated moments say so, and the simulation and the ODE
    started from its replicas run through `learnscope run` like the built-in generators."""
    import json

    from tests.conftest import REPO, cli

    plugin("toy_generator", TOY_GENERATOR)
    settings = ("generator=negated", "D=10", "N=10", "moments=estimate", "moment_samples=20000", "t_max=1.0")
    settings += ("points=4", "replicas=1", "n_test=500")
    store = tmp_path / "runs"
    for method in ("simulation", "ode"):
        code, _, err = cli(
            "run", REPO / "configs" / "committee_rand.toml", *settings, f"method={method}",
            "--plugin", "toy_generator", "--quiet", "--store", store, capsys=capsys,
        )  # fmt: skip
        assert code == 0, err
    (cached,) = (store / "moments").glob("*.npz")
    moments = load_moments(cached)
    np.testing.assert_allclose(moments.omega, np.eye(10), atol=0.05)
    np.testing.assert_allclose(moments.phi, -np.eye(10), atol=0.05)
    states = [json.loads(p.read_text())["state"] for p in store.glob("*/status.json")]
    assert states == ["done", "done"]


def test_moments_file_round_trip(tmp_path):
    gen = RandomSignGenerator(6, 9, 2, rng=0)
    est = estimate_moments(gen, np.random.default_rng(0), 500, batch_size=128, quiet=True)
    path = save_moments(tmp_path / "m.npz", est, {"generator": "rand", "D": 6, "N": 9, "seed": 0})
    back = load_moments(path)
    for a, b in (
        (est.omega, back.omega),
        (est.phi, back.phi),
        (est.mean_x, back.mean_x),
        (est.mean_c, back.mean_c),
    ):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.float64
    assert back.n_samples == 500 and back.rel_change == est.rel_change
    assert back.meta == {"generator": "rand", "D": 6, "N": 9, "seed": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary file left behind
    # closed-form moments: no sample count, no convergence measure; identity (x = c) written out as I
    exact = load_moments(save_moments(tmp_path / "a.npz", gen.analytic_moments()))
    assert exact.n_samples is None and exact.rel_change is None and exact.meta == {}
    np.testing.assert_array_equal(exact.omega, gen.analytic_moments().omega)
    iid = load_moments(save_moments(tmp_path / "i.npz", IIDGenerator(4, 4).analytic_moments()))
    np.testing.assert_array_equal(iid.omega, np.eye(4))
    np.testing.assert_array_equal(iid.phi, np.eye(4))


def test_bad_moments_files_are_one_line_data_errors(tmp_path):
    good = RandomSignGenerator(3, 5, 1, rng=0).analytic_moments()
    ok = save_moments(tmp_path / "ok.npz", good)
    arrays = dict(np.load(ok, allow_pickle=False))
    (tmp_path / "truncated.npz").write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    (tmp_path / "garbage.npz").write_bytes(b"\x00" * 100)

    def variant(name, **changes):
        body = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
        np.savez(tmp_path / name, **body)
        return name

    marker = tmp_path / "PWNED"
    cases = {
        "absent.npz": "no such file",
        "garbage.npz": "cannot be read",
        "truncated.npz": "cannot be read",
        variant("no_phi.npz", phi=None): "missing key 'phi'",
        variant("phi_rows.npz", phi=np.zeros((4, 3))): "phi has shape \\(4, 3\\), expected \\(5, D\\)",
        variant("omega_rect.npz", omega=np.zeros((5, 4))): "omega has shape \\(5, 4\\), expected \\(N, N\\)",
        variant("mean_c.npz", mean_c=np.zeros(4)): "mean_c has shape \\(4,\\), expected \\(3,\\)",
        variant("nan.npz", omega=np.full((5, 5), np.nan)): "omega has non-finite values",
        variant("asym.npz", omega=np.triu(np.ones((5, 5)))): "omega is not symmetric",
        variant("pickle.npz", phi=np.array([_Payload(marker)], dtype=object)): "cannot be read",
        variant("meta.npz", meta=np.array("{not json")): "bad meta data",
    }
    for name, culprit in cases.items():
        with pytest.raises(DataError, match=culprit) as info:
            load_moments(tmp_path / name)
        assert "\n" not in str(info.value), name
    assert not marker.exists()


def test_omega_symmetry_tolerance_follows_the_stored_precision(tmp_path):
    """A float32 Omega, as the original programme saves it, is symmetric only to float32 rounding (~2.4e-7
    relative): accepted. The same asymmetry in float64, or a real one in float32, is refused."""
    good = RandomSignGenerator(3, 5, 1, rng=0).analytic_moments()
    arrays = dict(np.load(save_moments(tmp_path / "ok.npz", good), allow_pickle=False))
    omega = arrays["omega"]
    scale = np.abs(omega).max()

    def skewed(name, dtype, relative):
        skew = omega.copy()
        skew[0, 1] += relative * scale
        np.savez(tmp_path / name, **{**arrays, "omega": skew.astype(dtype)})
        return tmp_path / name

    rounded = skewed("f32.npz", np.float32, 2.4e-7)
    stored = np.load(rounded)["omega"]
    assert stored.dtype == np.float32 and (stored != stored.T).any()  # the asymmetry survives float32
    back = load_moments(rounded)
    np.testing.assert_allclose(back.omega, omega, rtol=1e-6, atol=1e-6)
    for name, dtype, relative in (("f64.npz", np.float64, 2.4e-7), ("f32_asym.npz", np.float32, 1e-3)):
        with pytest.raises(DataError, match=rf"omega is not symmetric .*{np.dtype(dtype).name} precision"):
            load_moments(skewed(name, dtype, relative))


def test_sign_is_plus_or_minus_one_with_sign_of_zero_plus_one():
    """The in-place sign of the rand generator against its definition np.where(u >= 0, 1, -1), signed zeros
    included, and it writes over its argument (the fresh product it is given)."""
    u = np.array([[-2.5, -0.0, 0.0, 1e-300, -1e-300, 3.0]])
    expected = np.where(u >= 0, 1.0, -1.0)
    out = _sign(u)
    assert out is u and np.array_equal(out, expected) and np.all(np.signbit(out) == (expected < 0))
