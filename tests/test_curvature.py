"""Hessian-vector products, top eigenvalues, Hutchinson traces and their tangent-space versions, each against
the exact Hessian (torch.autograd.functional.hessian) and an exact eigensolver (eigvalsh), in float64."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from learnscope.curvature import (
    Operator,
    hutchinson_trace,
    hvp_operator,
    lanczos,
    power_iteration,
    top_eigenpair,
    top_eigenvalue,
)
from learnscope.optim import loss_function

F64 = torch.float64
# torch's forward-mode AD (the "func" backend) loads its decompositions with torch.jit.script on first use
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


summed_ce = loss_function("ce", "sum")


def summed_sq(out, y):
    return 0.5 * (out - y).pow(2).sum()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def convnet() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()


def bn_convnet() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)
    ).double()


def data(kind: str, n: int = 10):
    g = torch.Generator().manual_seed(3)
    shape = (n, 3) if kind == "mlp" else (n, 1, 6, 6)
    classes = 2 if kind == "mlp" else 3
    return torch.randn(shape, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


MODELS = {"mlp": mlp, "conv": convnet, "bn_conv": bn_convnet}


def exact_hessian(model, x, y, loss, params=None, scale=1.0, batch_size=None) -> torch.Tensor:
    """The Hessian of scale·Σ_chunks loss by autograd.functional.hessian over the flat parameters named in
    `params` (in that order; default: all), on a copy of the model, whose BatchNorm buffers it may update."""
    model = copy.deepcopy(model)
    ps = dict(model.named_parameters())
    names = list(ps) if params is None else params
    shapes = [ps[n].shape for n in names]
    theta = torch.cat([ps[n].detach().reshape(-1) for n in names])
    batch_size = batch_size or len(y)

    def f(t):
        parts = torch.split(t, [s.numel() for s in shapes])
        values = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        chunks = zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True)
        return scale * sum(loss(functional_call(model, values, (xc,)), yc) for xc, yc in chunks)

    return torch.autograd.functional.hessian(f, theta)


@pytest.mark.parametrize("kind", ["mlp", "conv", "bn_conv"])
@pytest.mark.parametrize("backend", ["autograd", "func"])
def test_the_product_is_the_exact_hessian_times_a_vector_with_or_without_chunks(kind, backend):
    model = MODELS[kind]()
    x, y = data("mlp" if kind == "mlp" else "conv")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # BatchNorm in train mode normalises each chunk by its own statistics: the reference sums chunk Hessians
    for batch_size in (None, 3):
        op = hvp_operator(model, x, y, summed_ce, batch_size=batch_size, scale=0.1, backend=backend)
        H = exact_hessian(model, x, y, summed_ce, scale=0.1, batch_size=batch_size)
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(4), dtype=F64)
        err = (op(v) - H @ v).abs().max() / (H @ v).abs().max()
        assert err < 1e-13, err  # measured ≤ 3e-16
        listed = op.apply(op.unflatten(v))
        assert torch.equal(op.flatten(listed), op(v))
    if kind != "bn_conv":  # without batch statistics, chunks change nothing: the HVP of the sum over chunks
        whole = hvp_operator(model, x, y, summed_ce, backend=backend)(v)
        assert torch.allclose(hvp_operator(model, x, y, summed_ce, batch_size=4, backend=backend)(v), whole)
    for k, value in model.state_dict().items():  # BatchNorm's running statistics and counter untouched
        assert torch.equal(value, before[k]), k
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_the_two_backends_agree_in_eval_mode_and_on_a_parameter_subset():
    model = bn_convnet()
    model.eval()
    x, y = data("conv")
    chosen = [("4.weight", model[4].weight), ("1.bias", model[1].bias)]
    ops = [hvp_operator(model, x, y, summed_ce, chosen, 4, backend=b) for b in ("autograd", "func")]
    H = exact_hessian(model, x, y, summed_ce, params=["4.weight", "1.bias"])
    v = torch.randn(ops[0].dim, generator=torch.Generator().manual_seed(5), dtype=F64)
    for op in ops:
        assert op.dim == 96 + 2 and op.names == ["4.weight", "1.bias"]
        assert torch.allclose(op(v), H @ v, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_top_eigenvalue_and_trace_against_an_exact_eigensolver(kind):
    model = MODELS[kind]()
    x, y = data(kind if kind == "mlp" else "conv")
    op = hvp_operator(model, x, y, summed_ce, scale=1 / len(y))
    H = exact_hessian(model, x, y, summed_ce, scale=1 / len(y))
    evals = torch.linalg.eigvalsh(H)
    # Lanczos through the whole space is exact; 20 steps already give the top one closely
    assert abs(float(top_eigenvalue(op, op.dim)) - float(evals[-1])) < 1e-12 * float(evals.abs().max())
    twenty = float(top_eigenvalue(op, 20))
    assert twenty <= float(evals[-1]) + 1e-12 and abs(twenty - float(evals[-1])) < 1e-6 * float(evals[-1])
    value, vector = top_eigenpair(op, op.dim)
    assert torch.allclose(H @ vector, value * vector, atol=1e-10) and abs(float(vector.norm()) - 1) < 1e-12
    # power iteration: the eigenvalue of largest magnitude
    largest = float(evals[evals.abs().argmax()])
    power = float(top_eigenvalue(op, 2000, method="power", tol=1e-13))
    assert abs(power - largest) < 1e-6 * abs(largest)
    # Hutchinson: within 4 standard errors, and the standard error that of the exact variance 2·Σ_{i≠j} H_ij²
    samples = 1000
    trace, se = hutchinson_trace(op, samples, seed=7)
    exact_se = float((2 * (H.pow(2).sum() - H.diagonal().pow(2).sum()) / samples).sqrt())
    assert abs(float(trace) - float(H.trace())) < 4 * float(se)
    assert 0.85 < float(se) / exact_se < 1.15


def test_lanczos_on_known_spectra_breakdown_and_negative_definite():
    g = torch.Generator().manual_seed(8)
    basis, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=F64))

    def operator(spectrum):
        A = basis @ torch.diag(spectrum) @ basis.T
        return Operator(lambda v: A @ v, 30, F64)

    low_rank = torch.zeros(30, dtype=F64)
    low_rank[:3] = torch.tensor([5.0, 2.0, 1.0])  # the Krylov space is invariant after 3 steps
    values, vectors = lanczos(operator(low_rank), 30)
    assert torch.isfinite(values).all() and abs(float(values[-1]) - 5.0) < 1e-12
    assert torch.allclose(vectors @ vectors.T, torch.eye(30, dtype=F64), atol=1e-10)  # an orthonormal basis
    negative = -torch.linspace(1, 10, 30, dtype=F64)
    assert abs(float(top_eigenvalue(operator(negative), 30)) + 1.0) < 1e-12  # no spurious 0 Ritz value
    assert abs(float(power_iteration(operator(negative), 3000, tol=1e-15)[0]) + 10.0) < 1e-6
    zero = operator(torch.zeros(30, dtype=F64))
    assert float(top_eigenvalue(zero, 5)) == 0.0 and float(power_iteration(zero, 5)[0]) == 0.0


def test_start_vectors_are_seeded_and_leave_the_global_rng_alone():
    model = mlp()
    x, y = data("mlp")
    op = hvp_operator(model, x, y, summed_ce)
    state = torch.get_rng_state()
    a = [top_eigenvalue(op, 5, seed=1), *hutchinson_trace(op, 3, seed=1)]
    b = [top_eigenvalue(op, 5, seed=1), *hutchinson_trace(op, 3, seed=1)]
    assert torch.equal(torch.stack(a), torch.stack(b)) and torch.equal(torch.get_rng_state(), state)
    assert float(hutchinson_trace(op, 3, seed=2)[0]) != float(a[1])


def test_dropout_draws_fixed_masks_from_the_seed_not_the_global_rng():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2)).double().train()
    x, y = data("mlp")
    op = hvp_operator(model, x, y, summed_ce, seed=11)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(4), dtype=F64)
    state = torch.get_rng_state()
    first, second = op(v), op(v)
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):  # the reference draws its one mask after the same seeding
        torch.manual_seed(11)
        H = exact_hessian(model, x, y, summed_ce)
    assert torch.allclose(first, H @ v, rtol=0, atol=1e-13)
    assert not torch.allclose(hvp_operator(model, x, y, summed_ce, seed=12)(v), first)


class SIToy(nn.Module):
    """out = tanh(x Wᵀ/‖W‖_F) Aᵀ: a loss of W that is scale-invariant, L(cW) = L(W)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(10)
        self.weight = nn.Parameter(3 * torch.randn(4, 3, generator=g, dtype=F64))
        self.head = nn.Parameter(torch.randn(2, 4, generator=g, dtype=F64))

    def forward(self, x):
        return torch.tanh(x @ (self.weight / self.weight.norm()).T) @ self.head.T


def test_the_tangent_operator_is_the_projected_hessian_of_a_scale_invariant_loss():
    model = SIToy()
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(12), dtype=F64)
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    params = [("weight", model.weight)]
    op = hvp_operator(model, x, y, summed_sq, params, 5, scale=1 / 16, tangent=True)
    full = hvp_operator(model, x, y, summed_sq, params, 5, scale=1 / 16)
    H = exact_hessian(model, x, y, summed_sq, params=["weight"], scale=1 / 16)
    w = model.weight.detach().reshape(-1)
    u = w / w.norm()
    # the toy is SI: ∇L ⊥ w (no Riemannian curvature term) and H w = −∇L
    model.zero_grad()
    (summed_sq(model(x), y) / 16).backward()
    g = model.weight.grad.reshape(-1)
    assert abs(float(g @ u)) < 1e-14 * float(g.norm()) and torch.allclose(H @ w, -g, atol=1e-13)
    # the projected operator annihilates w and is P H P
    P = torch.eye(12, dtype=F64) - torch.outer(u, u)
    assert float(op(w).norm()) < 1e-13 * float(full(w).norm())
    v = torch.randn(12, generator=torch.Generator().manual_seed(14), dtype=F64)
    assert torch.allclose(op(v), P @ H @ P @ v, rtol=0, atol=1e-13)
    # its eigenvalues are those of the tangent block Bᵀ H B (B: an orthonormal basis of u's complement)
    B = torch.linalg.svd(P).U[:, :11]
    tangent = torch.linalg.eigvalsh(B.T @ H @ B)
    assert op.space_dim == 11
    assert abs(float(top_eigenvalue(op, 11)) - float(tangent[-1])) < 1e-12 * float(tangent.abs().max())
    top_full = float(torch.linalg.eigvalsh(H)[-1])
    assert abs(float(top_eigenvalue(full, 12)) - top_full) < 1e-12 * float(H.norm())
    _, vector = top_eigenpair(op, 11)
    assert abs(float(vector @ u)) < 1e-12
    trace, se = hutchinson_trace(op, 300)
    assert abs(float(trace) - float(tangent.sum())) < 4 * float(se)
    # H(θ/‖θ‖) = ‖θ‖² H(θ): the unit-sphere sharpness
    unit = copy.deepcopy(model)
    with torch.no_grad():
        unit.weight /= unit.weight.norm()
    op_unit = hvp_operator(unit, x, y, summed_sq, [unit.weight], scale=1 / 16, tangent=True)
    top, top_unit = float(top_eigenvalue(op, 11)), float(top_eigenvalue(op_unit, 11))
    assert abs(top * float(w @ w) - top_unit) < 1e-11 * abs(top_unit)


def test_bad_arguments_are_refused():
    model = mlp()
    x, y = data("mlp")
    with pytest.raises(ValueError, match="not parameters of the model"):
        hvp_operator(model, x, y, summed_ce, [nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="backend"):
        hvp_operator(model, x, y, summed_ce, backend="jax")
    with pytest.raises(ValueError, match="no parameters"):
        hvp_operator(model, x, y, summed_ce, [])
    with pytest.raises(ValueError, match="method"):
        top_eigenvalue(hvp_operator(model, x, y, summed_ce), method="arnoldi")
