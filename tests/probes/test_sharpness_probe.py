"""The sharpness probe: the exact top eigenvalue and trace of the Hessian of the mean training loss (against
autograd.functional.hessian and eigvalsh), the scale-invariant and tangent-space variants, a model, buffers
and RNG left exactly as found, and records written from inside a training run."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from learnscope import Config, run
from learnscope.data.dataset import Dataset, Split
from learnscope.errors import ConfigError
from learnscope.models.scale_invariant import scale_invariant_parameters
from learnscope.optim import loss_function
from learnscope.probes import ProbeContext
from learnscope.probes.sharpness import SharpnessConfig, sharpness, training_subset
from tests.conftest import tiny

F64 = torch.float64


summed_ce = loss_function("ce", "sum")
pytestmark = pytest.mark.usefixtures("one_thread")


def dataset(n: int = 40, dtype=F64) -> Dataset:
    g = torch.Generator().manual_seed(0)
    train = Split(torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g))
    return Dataset(train, {"train": train}, 3)


def context(model, data, batch_size=7) -> ProbeContext:
    return ProbeContext(model, data, summed_ce, step=0, batch_size=batch_size)


def probe(ctx, **options) -> dict[str, float]:
    return sharpness(SharpnessConfig(**options))(ctx)


def mean_loss_hessian(model, x, y, names) -> torch.Tensor:
    """The exact Hessian of the mean cross-entropy over (x, y) in one batch, w.r.t. the named parameters."""
    model = copy.deepcopy(model)
    ps = dict(model.named_parameters())
    shapes = [ps[n].shape for n in names]

    def f(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        values = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return summed_ce(functional_call(model, values, (x,)), y) / len(y)

    return torch.autograd.functional.hessian(f, torch.cat([ps[n].detach().reshape(-1) for n in names]))


def tanh_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def test_the_probe_is_the_top_eigenvalue_and_trace_of_the_mean_loss_hessian():
    model, data = tanh_mlp(), dataset()
    names = [n for n, _ in model.named_parameters()]
    H = mean_loss_hessian(model, data.train.x, data.train.y, names)
    evals = torch.linalg.eigvalsh(H)
    ctx = context(model, data, batch_size=20)  # 2 chunks: the Hessian of the sum over chunks, over the count
    record = probe(ctx, samples="all", iters=len(evals), trace_samples=300)
    assert set(record) == {"sharpness/top_eig", "sharpness/trace", "sharpness/trace_se"}
    assert abs(record["sharpness/top_eig"] - float(evals[-1])) < 1e-12 * float(evals.abs().max())
    assert abs(record["sharpness/trace"] - float(H.trace())) < 4 * record["sharpness/trace_se"]
    default = probe(ctx)  # 512 samples > 40: all of them; 20 Lanczos steps
    assert abs(default["sharpness/top_eig"] - float(evals[-1])) < 1e-8 * float(evals[-1])
    power = probe(ctx, samples=100, iters=200, method="power")
    assert abs(power["sharpness/top_eig"] - float(evals[evals.abs().argmax()])) < 1e-8


def test_a_subset_is_fixed_by_the_seed_and_the_probe_uses_it():
    model, data = tanh_mlp(), dataset()
    state = torch.get_rng_state()
    x, y = training_subset(data.train, 10, seed=3)
    again, other = training_subset(data.train, 10, seed=3), training_subset(data.train, 10, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(x, again[0]) and not torch.equal(x, other[0])
    rows = [int(torch.nonzero((data.train.x == row).all(dim=1))[0]) for row in x]
    assert len(set(rows)) == 10 and rows == sorted(rows) and torch.equal(data.train.y[rows], y)
    H = mean_loss_hessian(model, x, y, [n for n, _ in model.named_parameters()])
    record = probe(context(model, data), samples=10, seed=3, iters=43)
    assert abs(record["sharpness/top_eig"] - float(torch.linalg.eigvalsh(H)[-1])) < 1e-12


def test_the_probe_leaves_the_model_buffers_modes_and_rng_as_found_and_repeats_itself():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    model.train()
    model[3].eval()  # a mixed state, restored module by module
    data = dataset(60, torch.float32)
    modes = [m.training for m in model.modules()]
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    ctx = context(model, data, batch_size=25)
    for mode in ("train", "eval"):
        first = probe(ctx, samples=50, iters=8, trace_samples=3, mode=mode)
        second = probe(ctx, samples=50, iters=8, trace_samples=3, mode=mode)
        assert first == second and all(math.isfinite(v) for v in first.values())
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN running stats too
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def si_mlp() -> nn.Module:
    """Linear(no bias)-BatchNorm(affine=False)-ReLU-Linear: the first weight is scale-invariant in train mode,
    exactly so with BatchNorm's ε (which adds ε/‖w‖² to the normalised variance) made negligible."""
    torch.manual_seed(3)
    norm = nn.BatchNorm1d(6, affine=False, eps=1e-15)
    return nn.Sequential(nn.Linear(4, 6, bias=False), norm, nn.ReLU(), nn.Linear(6, 3))


def test_scale_invariant_and_tangent_sharpness_against_the_exact_projected_hessian():
    model, data = si_mlp().double().train(), dataset()
    assert [n for n, _ in scale_invariant_parameters(model)] == ["0.weight"]
    H = mean_loss_hessian(model, data.train.x, data.train.y, ["0.weight"])  # train mode: batch statistics
    w = model[0].weight.detach().reshape(-1)
    u = w / w.norm()
    B = torch.linalg.svd(torch.eye(24, dtype=F64) - torch.outer(u, u)).U[:, :23]  # basis of the tangent space
    tangent = torch.linalg.eigvalsh(B.T @ H @ B)
    ctx = context(model, data, batch_size=64)  # one chunk: BatchNorm statistics over all 40 samples
    rec = probe(ctx, params="scale_invariant", tangent=True, iters=23, trace_samples=300)
    assert abs(rec["sharpness/top_eig"] - float(tangent[-1])) < 1e-12 * float(tangent.abs().max())
    assert abs(rec["sharpness/trace"] - float(tangent.sum())) < 4 * rec["sharpness/trace_se"]
    assert rec["sharpness/top_eig_unit"] == pytest.approx(rec["sharpness/top_eig"] * float(w @ w), rel=1e-12)
    assert rec["sharpness/trace_unit"] == pytest.approx(rec["sharpness/trace"] * float(w @ w), rel=1e-12)
    whole = probe(ctx, params="scale_invariant", iters=24)
    assert abs(whole["sharpness/top_eig"] - float(torch.linalg.eigvalsh(H)[-1])) < 1e-12 * float(H.norm())
    # scale invariance: the probe at the unit-sphere point measures what top_eig_unit predicted
    unit = copy.deepcopy(model)
    with torch.no_grad():
        unit[0].weight /= unit[0].weight.norm()
    at_unit = probe(context(unit, data, batch_size=64), params="scale_invariant", tangent=True, iters=23)
    assert at_unit["sharpness/top_eig"] == pytest.approx(rec["sharpness/top_eig_unit"], rel=1e-10)


def test_inconsistent_options_and_models_are_one_line_errors():
    with pytest.raises(ConfigError, match="tangent=true needs params='scale_invariant'"):
        Config().override('probes.use=[{kind="sharpness", tangent=true}]')
    with pytest.raises(ConfigError, match="trace_samples must be 0"):
        Config().override('probes.use=[{kind="sharpness", trace_samples=1}]')
    with pytest.raises(ConfigError, match="has no scale-invariant parameters"):
        probe(context(tanh_mlp(), dataset()), params="scale_invariant")


def test_the_probe_records_inside_a_training_run_without_touching_its_randomness():
    base = tiny().override("train.steps=5", "probes.every=5")
    plain = run(base, store=None, quiet=True)
    cfg = base.override('probes.use=["evaluation","sharpness"]')
    result = run(cfg, store=None, quiet=True)
    assert [r["step"] for r in result.records] == [0, 5]
    for with_probe, without in zip(result.records, plain.records, strict=True):
        assert 0 < with_probe["sharpness/top_eig"] < 1e3
        assert {k: v for k, v in with_probe.items() if not k.startswith("sharpness/")} == without
    si = base.override(
        "model=mlp_si",
        "optim=sphere_sgd",
        'probes.use=[{kind="sharpness", params="scale_invariant", tangent=true, samples=128, iters=10}]',
    )
    records = run(si, store=None, quiet=True).records
    assert all(r["sharpness/top_eig_unit"] > r["sharpness/top_eig"] > 0 for r in records)
