"""The collapse probe against a direct two-pass float64 computation; effective depth on hand-made lists and
against a per-resample loop."""

import numpy as np
import pytest
import torch
from torch import nn

from learnscope import Config, from_tensors
from learnscope.data import build_data
from learnscope.optim import loss_function
from learnscope.probes import ProbeContext
from learnscope.probes.collapse import (
    ClassMoments,
    CollapseConfig,
    NearestCentre,
    cdnv,
    collapse,
    effective_depth,
    effective_depth_interval,
    effective_depths,
)


def two_pass(h: torch.Tensor, y: torch.Tensor, C: int):
    """Reference: means, then E||h - mu_c||^2 from the centred data, CDNV by an explicit loop over pairs."""
    h = h.double()
    means = torch.stack([h[y == c].mean(0) for c in range(C)])
    var = torch.stack([(h[y == c] - means[c]).pow(2).sum(1).mean() for c in range(C)])
    pairs = [
        (var[a] + var[b]) / (2 * (means[a] - means[b]).pow(2).sum())
        for a in range(C)
        for b in range(a + 1, C)
    ]
    return means, var, torch.stack(pairs).mean()


def accumulate(h, y, C, batch):
    moments = ClassMoments(C, h.shape[1], h.device)
    for start in range(0, len(y), batch):
        moments.update(h[start : start + batch], y[start : start + batch])
    return moments


@pytest.mark.parametrize("C", [3, 10])
def test_one_pass_moments_equal_the_two_pass_reference(C):
    gen = torch.Generator().manual_seed(C)
    y = torch.randint(0, C, (500,), generator=gen)
    h = torch.randn(C, 40, generator=gen)[y] * 3 + torch.randn(500, 40, generator=gen)
    moments = accumulate(h, y, C, batch=37)  # batches that split classes unevenly
    means, var, ref = two_pass(h, y, C)
    assert torch.allclose(moments.mean, means, atol=1e-6)
    assert torch.allclose(moments.variance, var, rtol=1e-6)
    assert cdnv(moments.mean, moments.variance).item() == pytest.approx(ref.item(), rel=1e-6)


def test_nearly_collapsed_features_stay_exact_where_naive_float32_fails():
    """Large mean, tiny spread (the collapsed regime): ||mu||^2 ~ 2.6e5, Var ~ 2.6e-3."""
    gen = torch.Generator().manual_seed(0)
    C, d, n = 4, 2560, 400
    y = torch.arange(n) % C
    centres = torch.randn(C, d, generator=gen) * 10
    h = (centres[y] + 1e-3 * torch.randn(n, d, generator=gen)).float()
    _means, var, ref = two_pass(h, y, C)
    moments = accumulate(h, y, C, batch=128)
    assert torch.allclose(moments.variance, var, rtol=1e-4)
    assert cdnv(moments.mean, moments.variance).item() == pytest.approx(ref.item(), rel=1e-4)
    # The raw-moment formula in float32 (the original's) is far off, even negative before its abs().
    naive = torch.stack([h[y == c].pow(2).sum(1).mean() - h[y == c].mean(0).pow(2).sum() for c in range(C)])
    assert ((naive - var.float()).abs() / var.float()).max() > 1.0


def test_cdnv_is_invariant_to_a_global_scale():
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (300,), generator=gen)
    h = torch.randn(5, 16, generator=gen)[y] + torch.randn(300, 16, generator=gen)
    base = accumulate(h, y, 5, 64)
    expected = cdnv(base.mean, base.variance).item()
    exact = accumulate(h * 32, y, 5, 64)  # a power of two scales every float exactly
    assert cdnv(exact.mean, exact.variance).item() == pytest.approx(expected, rel=1e-12)
    scaled = accumulate(h * 37.5, y, 5, 64)  # otherwise up to float32 rounding of the scaled inputs
    assert cdnv(scaled.mean, scaled.variance).item() == pytest.approx(expected, rel=1e-6)


def test_nearest_centre_matches_cdist():
    gen = torch.Generator().manual_seed(2)
    centres = torch.randn(7, 30, generator=gen).double() * 50 + 1000
    h = (
        centres[torch.randint(0, 7, (200,), generator=gen)]
        + torch.randn(200, 30, generator=gen).double() * 20
    )
    present = torch.ones(7, dtype=torch.bool)
    assert torch.equal(NearestCentre(centres, present).predict(h.float()), torch.cdist(h, centres).argmin(1))
    present[3] = False
    assert not (NearestCentre(centres, present).predict(h.float()) == 3).any()


def test_effective_depth_on_hand_made_lists():
    assert effective_depth([0.5, 0.9, 0.995, 1.0], 0.01) == 3
    assert effective_depth([0.5, 0.999, 0.95, 1.0], 0.01) == 4  # monotone: a dip above resets it
    assert effective_depth([1.0, 1.0, 1.0], 0.01) == 1
    assert effective_depth([0.9, 0.95, 0.98], 0.01) is None
    assert effective_depth([0.9, 0.95, 0.98], 0.06) == 2
    correct = np.ones((1000, 4), dtype=bool)
    correct[:, 0] = np.arange(1000) % 2 == 0  # layer 1 at 50%
    correct[:5, 1] = False  # layer 2 at 99.5%: depth 2 or 3 across resamples
    lo, hi = effective_depth_interval(correct, 0.01, 200)
    assert lo == 2 and hi <= 3


def bootstrap_loop(correct, eps, resamples, seed=0, level=0.9):
    """Reference: the percentile bootstrap written out, one resample at a time, with the same draws."""
    rng = np.random.default_rng(seed)
    n, layers = correct.shape
    idx = rng.integers(0, n, size=(resamples, n))
    depths = [effective_depth(correct[i].mean(0), eps) or layers + 1 for i in idx]
    lo, hi = np.quantile(depths, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def test_vectorised_effective_depths_equal_the_one_list_version():
    rng = np.random.default_rng(0)
    accs = 1 - rng.choice([0.0, 0.005, 0.01, 0.02, 0.3], size=(500, 6))  # errors at, below and above eps
    accs[:5] = 1.0  # every layer within eps: depth 1
    accs[5:10, -1] = 0.9  # top layer misses eps: L + 1
    for eps in (0.0, 0.01, 0.05):
        expected = [effective_depth(a, eps) or 7 for a in accs]
        assert effective_depths(accs, eps).tolist() == expected


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_interval_equals_the_per_resample_loop(seed):
    rng = np.random.default_rng(seed)
    n, layers = 700, 5
    error_rate = np.array([0.5, 0.05, 0.012, 0.004, 0.0])  # layer 3 straddles eps = 0.01 across resamples
    correct = rng.random((n, layers)) >= error_rate
    for eps, level in ((0.01, 0.9), (0.02, 0.5)):
        got = effective_depth_interval(correct, eps, 300, seed=seed, level=level)
        assert got == bootstrap_loop(correct, eps, 300, seed=seed, level=level)
    assert effective_depth_interval(correct, 0.01, 300, seed=seed) != (
        3.0,
        3.0,
    )  # the interval is not a point


class Probed(nn.Module):
    """A user model without probe_layers()."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.body(x))


def test_probe_numbers_equal_a_direct_computation_on_named_layers():
    torch.manual_seed(0)
    data = build_data(Config().override("data.label_noise=0.2").data)
    model = Probed().eval()
    ctx = ProbeContext(model, data, loss_function("ce", "sum"), 0, batch_size=100)
    record = collapse(CollapseConfig(layers=["body.1", "body.3"], bootstrap=0))(ctx)
    with torch.no_grad():
        feats = [model.body[:2](data.train.x), model.body[:4](data.train.x)]
        test_feats = [model.body[:2](data.evals["test"].x), model.body[:4](data.evals["test"].x)]
    y, yt = data.train.y, data.evals["test"].y
    for i, (h, ht) in enumerate(zip(feats, test_feats, strict=True), start=1):
        means, _, ref = two_pass(h, y, 10)
        assert record[f"train/cdnv/{i}"] == pytest.approx(ref.item(), rel=1e-6)
        assert record[f"test/cdnv/{i}"] == pytest.approx(two_pass(ht, yt, 10)[2].item(), rel=1e-6)
        ncc = torch.cdist(h.double(), means).argmin(1)
        assert record[f"train/ncc/{i}"] == pytest.approx((ncc == y).double().mean().item())
        assert record[f"test/ncc/{i}"] == pytest.approx(
            (torch.cdist(ht.double(), means).argmin(1) == yt).double().mean().item()
        )
        clean = ~data.noisy
        assert record[f"train_clean/ncc/{i}"] == pytest.approx(
            (ncc[clean] == y[clean]).double().mean().item()
        )
        true = data.true_train_labels
        assert record[f"train_noisy_true/ncc/{i}"] == pytest.approx(
            (ncc[data.noisy] == true[data.noisy]).double().mean().item()
        )
        assert record[f"train_noisy/cdnv/{i}"] == pytest.approx(
            two_pass_subset(h, y, data.noisy, 10).item(), rel=1e-6
        )
    with torch.no_grad():
        assert record["test/net_acc"] == pytest.approx(
            (model(data.evals["test"].x).argmax(1) == yt).double().mean().item()
        )


def two_pass_subset(h, y, mask, C):
    return two_pass(h[mask], y[mask], C)[2]


def test_hooks_give_the_same_numbers_as_the_models_own_layers():
    from learnscope.models.mlp import MLP

    torch.manual_seed(0)
    x, y = torch.randn(120, 20), torch.arange(120) % 4
    data = from_tensors(x[:90], y[:90], x[90:], y[90:])
    model = MLP(20, 4, depth=3, width=16, batchnorm=True, bias=True).eval()
    ctx = ProbeContext(model, data, loss_function("ce", "sum"), 0, batch_size=32)
    by_model = collapse(CollapseConfig(bootstrap=0))(ctx)
    by_name = collapse(CollapseConfig(layers=model.probe_layers(), bootstrap=0))(ctx)
    assert by_model == by_name
    post = collapse(CollapseConfig(post_activation=True, bootstrap=0))(ctx)
    assert post["train/cdnv/1"] != by_model["train/cdnv/1"]  # post-BN/ReLU features differ from pre-BN


def test_linear_probe_matches_scikit_learn_ridge():
    from sklearn.linear_model import Ridge

    torch.manual_seed(0)
    data = build_data(Config().data)
    model = Probed().eval()
    ctx = ProbeContext(model, data, loss_function("ce", "sum"), 0, batch_size=100)
    record = collapse(
        CollapseConfig(layers=["body.1", "body.3"], bootstrap=0, linear_probe=True, ridge=0.01)
    )(ctx)
    with torch.no_grad():
        feats = [model.body[:2](data.train.x).double().numpy(), model.body[:4](data.train.x).double().numpy()]
        tests = [
            model.body[:2](data.evals["test"].x).double().numpy(),
            model.body[:4](data.evals["test"].x).double().numpy(),
        ]
    y, yt = data.train.y.numpy(), data.evals["test"].y.numpy()
    for i, (h, ht) in enumerate(zip(feats, tests, strict=True), start=1):
        lam = 0.01 * h.var(0).mean()  # the probe's ridge: relative to the mean feature variance
        ridge = Ridge(alpha=lam * len(y)).fit(h, np.eye(10)[y])
        assert record[f"train/linear/{i}"] == pytest.approx(
            (ridge.predict(h).argmax(1) == y).mean(), abs=1e-3
        )
        assert record[f"test/linear/{i}"] == pytest.approx(
            (ridge.predict(ht).argmax(1) == yt).mean(), abs=2e-3
        )
    assert record["train/linear/2"] > 0.5


def test_kept_train_features_give_the_record_of_a_second_forward_pass(monkeypatch):
    """The train features of the first pass serve the NCC predictions of the second when they fit the budget:
    the network then runs once over each set, and the record is the one that running it again gives, bit for
    bit (label-noise subsets and linear probe included)."""
    import learnscope.probes.collapse as collapse_module

    torch.manual_seed(0)
    data = build_data(Config().override("data.label_noise=0.2").data)
    model = Probed().eval()
    ctx = ProbeContext(model, data, loss_function("ce", "sum"), 5, batch_size=128)  # batches split classes
    probe = collapse(CollapseConfig(layers=["body.1", "body.3"], linear_probe=True, bootstrap=50))
    rows_seen = []
    model.register_forward_pre_hook(lambda _module, inputs: rows_seen.append(len(inputs[0])))
    kept = probe(ctx)
    assert sum(rows_seen) == len(data.train.y) + len(data.evals["test"].y)
    rows_seen.clear()
    monkeypatch.setattr(collapse_module, "TRAIN_FEATURE_CACHE_BYTES", 0)
    again = probe(ctx)
    assert sum(rows_seen) == 2 * len(data.train.y) + len(data.evals["test"].y)
    assert kept == again
    assert {
        "train_clean/ncc/2",
        "train_noisy_true/cdnv/1",
        "test/linear/2",
        "train/effective_depth_hi",
    } <= set(kept)
