"""Clones: fitted statistics against numpy, scipy, scikit-learn and closed forms; samples against the fit
within sampling error; file validation; the registered `clone` kind end to end, with its cache."""

import math

import numpy as np
import pytest
import torch

from learnscope import run
from learnscope.config import Config
from learnscope.data import build_data, clones
from learnscope.data.clones import (
    clone_generator,
    clone_report,
    fit_clone,
    load_clone_file,
    make_clone,
    sample_clone,
)
from learnscope.data.dataset import Split
from learnscope.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNSCOPE_CACHE", str(tmp_path / "cache"))


def correlated(n, classes=2, seed=0):
    """(n, 3, 4, 4) images: one spatially correlated field shared by the three channels (weights 1, 0.8, -0.6)
    plus a little independent noise, so same-pixel cross-channel correlations are about 0.9; unequal pixel
    variances; class means far apart."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % classes
    spatial = g.normal(size=(16, 16)) * np.linspace(0.3, 1.5, 16)[:, None] / 4
    shared = g.normal(size=(n, 16)) @ spatial.T
    x = shared[:, None, :] * np.array([1.0, 0.8, -0.6])[:, None] + 0.1 * g.normal(size=(n, 3, 16))
    x += 2 * g.normal(size=(classes, 3, 16))[y]
    return torch.tensor(x.reshape(n, 3, 4, 4), dtype=torch.float32), torch.from_numpy(y)


def class_moments(x):
    """Mean and unbiased covariance in float64 (torch: numpy's threads fight torch's on two cores)."""
    x = x.reshape(len(x), -1).double()
    centred = x - x.mean(0)
    return x.mean(0).numpy(), (centred.T @ centred / (len(x) - 1)).numpy()


def expected_cov_error(S, n):
    """E ||C_n - S||_F / ||S||_F for the unbiased sample covariance of n Gaussian vectors (to first order)."""
    return math.sqrt((np.trace(S) ** 2 + np.sum(S * S)) / (n - 1)) / np.linalg.norm(S)


# --- fits against numpy, samples against fits ---------------------------------------------------------------


def test_gaussian_fit_is_numpy_mean_and_cov_and_samples_match_within_sampling_error():
    x, y = correlated(2000)
    fit = fit_clone(x, y, 2, "gaussian", per_channel=False, ridge=1e-3)
    for k in range(2):
        xk = x[y == k].reshape(-1, 48).double().numpy()
        mean, cov = xk.mean(0), np.cov(xk, rowvar=False)
        assert np.allclose(fit.class_mean(k).numpy(), mean, rtol=0, atol=1e-12)
        assert np.allclose(fit.class_cov(k).numpy(), cov + 1e-3 * np.eye(48), rtol=1e-10, atol=1e-12)

    n_k = 10_000  # per class; D = 48
    xs, ys = sample_clone(fit, 2 * n_k, clone_generator(0), clamp=False)
    assert torch.bincount(ys).tolist() == [n_k, n_k]  # the source's class proportions, exactly
    report = clone_report(Split(x, y), Split(xs, ys), 2, fit)
    for k in range(2):
        mu, S = fit.class_mean(k).numpy(), fit.class_cov(k).numpy()
        m, C = class_moments(xs[ys == k])
        z = np.abs(m - mu) / np.sqrt(np.diag(S) / n_k)
        assert z.max() < 4.5  # 48 standard normals: max above 4.5 has probability < 4e-4
        err, expected = np.linalg.norm(C - S) / np.linalg.norm(S), expected_cov_error(S, n_k)
        assert 0.6 * expected < err < 1.4 * expected  # ~0.08: the Frobenius error concentrates
        assert report.model_cov_error[k] == pytest.approx(err, rel=1e-3)  # float32 sample, float64 stats
        # against the source (2,000 samples) both sampling errors add up
        assert report.cov_error[k] < 1.4 * math.hypot(expected, expected_cov_error(S, 1000))


def test_per_channel_drops_cross_channel_covariance_and_joint_keeps_it():
    x, y = correlated(2000)
    n_k = 10_000
    _, src_cov = class_moments(x[y == 0])
    src_corr = src_cov / np.sqrt(np.outer(np.diag(src_cov), np.diag(src_cov)))
    same_pixel = src_corr[np.arange(16), 16 + np.arange(16)]  # channel 0 vs channel 1, same pixel
    assert same_pixel.min() > 0.8
    cross = np.ones((48, 48), bool)
    for c in range(3):
        cross[16 * c : 16 * c + 16, 16 * c : 16 * c + 16] = False

    for per_channel in (True, False):
        fit = fit_clone(x, y, 2, "gaussian", per_channel=per_channel)
        assert fit.means.shape[2] == (3 if per_channel else 1)
        xs, ys = sample_clone(fit, 2 * n_k, clone_generator(1), clamp=False)
        _, C = class_moments(xs[ys == 0])
        corr = C / np.sqrt(np.outer(np.diag(C), np.diag(C)))
        if per_channel:  # independent channels: each cross correlation ~ N(0, 1/n_k), 768 of them
            assert np.abs(corr[cross]).max() < 5 / math.sqrt(n_k)
        else:
            assert np.abs(corr[cross] - src_corr[cross]).max() < 0.05
        # within each channel both keep the spatial covariance
        within = ~cross
        S = src_cov * within
        assert np.linalg.norm((C - src_cov) * within) / np.linalg.norm(S) < 2 * expected_cov_error(S, 1000)


def test_isotropic_variance_is_the_average_pixel_variance_and_diagonal_the_pixel_variances():
    x, y = correlated(2000)
    n_k = 20_000
    iso = fit_clone(x, y, 2, "isotropic")
    diag = fit_clone(x, y, 2, "diagonal")
    mean = fit_clone(x, y, 2, "mean")
    for k in range(2):
        xk = x[y == k].double().numpy().reshape(-1, 3, 16)
        var = xk.var(0, ddof=1)  # (3, 16) per-pixel variances, unequal by construction
        assert var.max(1).min() > 3 * var.min(1).max()
        assert np.allclose(iso.scale[k, 0, :, 0].numpy() ** 2, var.mean(1), rtol=1e-12)
        assert np.allclose(diag.scale[k, 0].numpy() ** 2, var, rtol=1e-12)
        assert np.allclose(iso.class_mean(k).numpy(), xk.mean(0).ravel(), atol=1e-12)

    gen = clone_generator(2)
    for fit, target in ((iso, "iso"), (diag, "diag")):
        xs, ys = sample_clone(fit, 2 * n_k, gen, clamp=False)
        for k in range(2):
            _, C = class_moments(xs[ys == k])
            want = np.diag(fit.class_cov(k).numpy())
            # every pixel variance within 5 standard errors (relative sd sqrt(2 / n_k) = 0.01)
            assert np.abs(np.diag(C) / want - 1).max() < 5 * math.sqrt(2 / n_k)
            off = C / np.sqrt(np.outer(np.diag(C), np.diag(C))) - np.eye(48)
            assert np.abs(off).max() < 5 / math.sqrt(n_k)
            if target == "iso":  # per channel one variance: the average of the source's pixel variances
                xk = x[y == k].double().numpy().reshape(-1, 3, 16)
                assert np.allclose(want.reshape(3, 16), xk.var(0, ddof=1).mean(1, keepdims=True), rtol=1e-12)
    xs, ys = sample_clone(mean, 100, gen)
    assert torch.equal(xs, mean.means[ys, 0].reshape(100, 3, 4, 4).float())


def test_gmm_em_matches_scikit_learn_and_the_closed_form_and_samples_its_weights():
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal
    from sklearn.mixture import GaussianMixture

    g = np.random.default_rng(3)
    n, w_true = 3000, 0.3
    comp = g.random(n) < w_true
    centres = np.array([[4.0, 0.0, 1.0], [-2.0, 1.0, 0.0]])
    x = np.where(comp[:, None], centres[0], centres[1]) + g.normal(size=(n, 3)) @ np.diag([1.0, 0.5, 0.8])
    xt, yt = torch.tensor(x), torch.zeros(n, dtype=torch.long)

    fit = fit_clone(xt, yt, 1, "gmm", components=2, ridge=1e-6, seed=0, tol=1e-12, em_iters=500)
    w, mu = fit.weights[0].numpy(), fit.means[0, :, 0].numpy()
    covs = [(L @ L.mT).numpy() for L in fit.scale[0, :, 0]]
    # the reported log-likelihood is the mixture's, evaluated independently with scipy
    logp = [np.log(w[j]) + multivariate_normal(mu[j], covs[j]).logpdf(x) for j in range(2)]
    assert fit.log_likelihood[0].item() == pytest.approx(logsumexp(logp, axis=0).mean(), abs=1e-9)
    # and it is the maximum scikit-learn's EM finds (same model, same ridge)
    ref = GaussianMixture(2, reg_covar=1e-6, tol=1e-10, max_iter=500, random_state=0).fit(x)
    assert fit.log_likelihood[0].item() == pytest.approx(ref.score(x), abs=1e-6)
    order = np.argsort(-mu[:, 0])
    assert np.allclose(mu[order], centres, atol=0.1) and w[order][0] == pytest.approx(w_true, abs=0.02)

    xs, _ = sample_clone(fit, 20_000, clone_generator(0))
    near_first = ((xs.numpy() - centres[0]) ** 2).sum(1) < ((xs.numpy() - centres[1]) ** 2).sum(1)
    assert near_first.mean() == pytest.approx(w[order][0], abs=4 * math.sqrt(0.21 / 20_000) + 1e-3)

    # one component is the Gaussian MLE: mean log-likelihood -(D log 2 pi + log det S + tr(S^-1 S_mle)) / 2
    one = fit_clone(xt, yt, 1, "gmm", components=1, ridge=1e-6)
    s_mle = np.cov(x, rowvar=False, ddof=0)
    S = s_mle + 1e-6 * np.eye(3)
    closed = -0.5 * (3 * np.log(2 * np.pi) + np.linalg.slogdet(S)[1] + np.trace(np.linalg.solve(S, s_mle)))
    assert one.log_likelihood[0].item() == pytest.approx(closed, abs=1e-10)


def test_same_seed_same_bytes_different_seed_different_sample():
    x, y = correlated(400)
    fit = fit_clone(x, y, 2, "gaussian")
    a, ya = sample_clone(fit, 500, clone_generator(7))
    b, yb = sample_clone(fit, 500, clone_generator(7))
    c, yc = sample_clone(fit, 500, clone_generator(8))
    assert a.numpy().tobytes() == b.numpy().tobytes() and torch.equal(ya, yb)
    assert not torch.equal(a, c) and not torch.equal(ya, yc)
    _, yu = sample_clone(fit, 500, clone_generator(7), labels="uniform")  # the original's i.i.d. labels
    assert torch.bincount(ya).tolist() == [250, 250] and torch.bincount(yu).sum() == 500
    # clamped to the source's per-channel range (raw draws exceed it)
    lo = x.transpose(0, 1).flatten(1).amin(1).view(1, 3, 1, 1)
    hi = x.transpose(0, 1).flatten(1).amax(1).view(1, 3, 1, 1)
    raw, _ = sample_clone(fit, 5000, clone_generator(0), clamp=False)
    clamped, _ = sample_clone(fit, 5000, clone_generator(0))
    assert (raw < lo).any() and (raw > hi).any()
    assert torch.equal(clamped, torch.minimum(torch.maximum(raw, lo), hi))


def test_blocked_triangular_product_equals_the_dense_one():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(2, 601, 601, generator=g).tril()  # 601 > 256: two levels of blocking, uneven halves
    z, out = torch.randn(2, 50, 601, generator=g), torch.randn(2, 50, 601, generator=g)
    want = out + z @ L.mT
    clones._add_lower_product(out, z, L)
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-3)


# --- samples from files -------------------------------------------------------------------------------------


def test_file_clones_are_validated(tmp_path):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(10, 4, 4, 3), dtype=np.uint8)  # HWC, like the original's files
    y = np.arange(10) % 3
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    xs, ys = load_clone_file(tmp_path / "ok.npz", (3, 4, 4), 3)
    assert (
        torch.equal(xs, torch.from_numpy(x.transpose(0, 3, 1, 2)).float() / 255) and ys.tolist() == y.tolist()
    )
    np.save(tmp_path / "wgan_train_xs.npy", x)
    np.save(tmp_path / "wgan_train_ys.npy", y)
    assert torch.equal(load_clone_file(tmp_path / "wgan_train_xs.npy", (3, 4, 4), 3)[0], xs)

    bad = {
        "shape": dict(x=x[:, :3], y=y),
        "uint8 pixels or floats": dict(x=x.astype(np.int64), y=y),
        r"labels must lie in \[0, 3\)": dict(x=x, y=y + 1),
        "labels must be integers": dict(x=x, y=y.astype(np.float32)),
        "missing array 'y'": dict(x=x),
    }
    for message, arrays in bad.items():
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DataError, match=message) as info:
            load_clone_file(tmp_path / "bad.npz", (3, 4, 4), 3)
        assert "\n" not in str(info.value)


# --- the registered kind ------------------------------------------------------------------------------------


def clone_config(**data):
    return Config.from_dict(
        {
            "device": "cpu",
            "data": {"kind": "clone", **data},
            "model": {"kind": "mlp", "width": 32},
            "train": {"steps": 20, "checkpoint_every": 0},
            "probes": {"schedule": ["every"], "every": 10},
        }
    )


def test_clone_kind_builds_from_a_config_and_trains():
    cfg = clone_config(method="gaussian", source={"kind": "digits", "flip": True})
    assert Config.from_dict(cfg.to_dict()) == cfg
    real = build_data(cfg.data.source)
    data = build_data(cfg.data)
    assert set(data.evals) == {"train", "test", "real_train"} and data.evals["train"] is data.train
    assert torch.equal(data.evals["test"].x, real.evals["test"].x)  # the real test set, prepared the same way
    assert torch.equal(data.evals["test"].y, real.evals["test"].y)
    assert torch.equal(data.evals["real_train"].x, real.train.x)
    assert data.train.x.shape == real.train.x.shape and not torch.equal(data.train.x, real.train.x)
    assert torch.equal(torch.bincount(data.train.y), torch.bincount(real.train.y))
    assert data.augment.flip and torch.equal(data.augment.fill, real.augment.fill)
    assert data.train.x.mean().abs() < 0.05  # normalised with the real train statistics

    result = run(cfg, store=None, quiet=True)
    assert result.status == "done" and [r["step"] for r in result.records] == [0, 10, 20]
    assert {"train/acc", "test/acc", "real_train/acc"} <= set(result.records[-1])

    with pytest.raises(ConfigError, match=r"data\.source\.kind: unknown 'nope'"):
        clone_config(source={"kind": "nope"})
    with pytest.raises(ConfigError, match=r"data\.path: required for method 'file'"):
        clone_config(method="file")
    assert Config().override("data.kind=clone", "data.n=50").data.source.kind == "digits"


def test_coarse_clone_has_more_gaussians_than_labels(tmp_path):
    g = np.random.default_rng(0)
    centres = 10 * np.eye(4)
    y_train, y_test = np.arange(800) % 4, np.arange(200) % 4
    x_train = (centres[y_train] + g.normal(size=(800, 4))).astype(np.float32)
    x_test = (centres[y_test] + g.normal(size=(200, 4))).astype(np.float32)
    np.savez(tmp_path / "four.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    source = {"kind": "npz", "path": str(tmp_path / "four.npz"), "normalize": False}
    result = make_clone(clone_config(method="coarse", coarse_map=[0, 0, 1, 1], source=source).data)
    data, coarse = result.dataset, np.array([0, 0, 1, 1])
    assert data.num_classes == 2
    assert data.evals["test"].y.tolist() == coarse[y_test].tolist()
    assert data.evals["real_train"].y.tolist() == coarse[y_train].tolist()
    nearest = ((data.train.x.numpy()[:, None] - centres) ** 2).sum(-1).argmin(1)
    assert (coarse[nearest] == data.train.y.numpy()).all()  # each sample from a fine class of its label
    assert np.bincount(nearest).tolist() == [200] * 4  # both fine Gaussians of each label, in source counts
    with pytest.raises(DataError, match="coarse_map has 3 entries"):
        make_clone(clone_config(method="coarse", coarse_map=[0, 0, 1], source=source).data)


def test_file_kind_and_the_cache(tmp_path, monkeypatch):
    real = build_data(Config().data.model_copy(update={"normalize": False}))
    np.savez(tmp_path / "clone.npz", x=real.train.x.numpy()[:100][:, :, ::-1], y=real.train.y.numpy()[:100])
    data = build_data(clone_config(method="file", path=str(tmp_path / "clone.npz")).data)
    assert len(data.train) == 100 and torch.equal(
        data.evals["real_train"].x, build_data(Config().data).train.x
    )

    cfg = clone_config(method="gmm", components=2, em_iters=10, seed=3).data
    first = make_clone(cfg)
    assert first.cache_path.is_file() and first.cache_path.parent == tmp_path / "cache" / "clones"

    calls = []
    fit = clones._fit
    monkeypatch.setattr(clones, "_fit", lambda *args: calls.append(args[-1]) or fit(*args))
    again = make_clone(cfg)
    assert calls == [] and torch.equal(again.dataset.train.x, first.dataset.train.x)
    assert torch.equal(again.fit.log_likelihood, first.fit.log_likelihood)
    first.cache_path.write_bytes(b"torn")  # an unreadable entry is refitted and rewritten
    assert torch.equal(make_clone(cfg).dataset.train.x, first.dataset.train.x) and len(calls) == 1
    make_clone(cfg.model_copy(update={"seed": 4}))  # EM's initialisation depends on the seed: a new entry
    assert len(calls) == 2 and len(list(first.cache_path.parent.glob("*.pt"))) == 2
    gaussian = [make_clone(clone_config(method="gaussian", seed=s).data) for s in (0, 1)]
    assert len(calls) == 3 and gaussian[0].cache_path == gaussian[1].cache_path  # sampling seeds share a fit
    assert not torch.equal(gaussian[0].dataset.train.x, gaussian[1].dataset.train.x)
