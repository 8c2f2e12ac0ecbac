"""SGD on the sphere at a fixed effective learning rate (optim.SphereSGD), against projected SGD on the unit
sphere written out directly."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope.optim import SphereSGD


def si_mlp(seed: int = 0) -> tuple[nn.Module, list[nn.Parameter]]:
    """Bias-free layers into affine-free BatchNorm, a frozen head: the loss is invariant to the scale of the
    two hidden weights together (and of each alone). float64 and a negligible BatchNorm eps (its default 1e-5
    breaks the invariance at the 1e-5 level), so the checks can be tight."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16, affine=False, eps=1e-14), nn.ReLU(),
        nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16, affine=False, eps=1e-14), nn.ReLU(),
        nn.Linear(16, 3),
    ).double()  # fmt: skip
    model[6].requires_grad_(False)
    return model, [model[0].weight, model[3].weight]


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in params])


def test_a_step_is_projected_sgd_on_the_unit_sphere_with_step_elr():
    model, si = si_mlp()
    x, y = batch()
    rho = flat(si).norm().item()
    opt = SphereSGD(si, elr=0.05)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * rho**2)
    for step in range(5):
        u = flat(si) / rho
        # the reference: gradient at the unit-sphere point u (the loss is scale-invariant), step elr, retract
        unit = [nn.Parameter((p / rho).detach().clone()) for p in si]
        with torch.no_grad():
            saved = [p.clone() for p in si]
            for p, q in zip(si, unit, strict=True):
                p.copy_(q)
        F.cross_entropy(model(x), y).backward()
        g_unit = flat([p.grad for p in si])
        model.zero_grad()
        with torch.no_grad():
            for p, q in zip(si, saved, strict=True):
                p.copy_(q)
        expected = u - 0.05 * g_unit
        expected = expected / expected.norm()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        model.zero_grad()
        assert torch.allclose(flat(si) / rho, expected, atol=1e-12), step
        assert flat(si).norm().item() == pytest.approx(rho, rel=1e-12)


@pytest.mark.parametrize("sphere", ["whole", "layer"])
def test_norms_stay_on_their_spheres_in_float32(sphere):
    model, si = si_mlp()
    model.float()
    x, y = batch()
    x = x.float()
    before = [p.norm().item() for p in si]
    opt = SphereSGD(si, elr=0.3, sphere=sphere, momentum=0.9)
    for _ in range(200):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        model.zero_grad()
    after = [p.norm().item() for p in si]
    if sphere == "whole":
        assert math.hypot(*after) == pytest.approx(math.hypot(*before), rel=1e-6)
        assert after != pytest.approx(before, rel=1e-3)  # the norm moves between the layers
    else:
        assert after == pytest.approx(before, rel=1e-6)


def test_angle_per_step_is_arctan_of_elr_times_the_effective_gradient_norm():
    model, si = si_mlp()
    x, y = batch()
    rho = flat(si).norm().item()
    opt = SphereSGD(si, elr=0.2)
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
        g, w = flat([p.grad for p in si]), flat(si)
        g = g - torch.dot(g, w) / torch.dot(w, w) * w  # the tangent part (rounding leaves a radial one)
        grad_norm = g.norm().item() * rho  # ‖∇L(u)‖ = ρ‖∇L(w)‖
        opt.step()
        model.zero_grad()
        stats = opt.step_statistics()
        assert stats["effective_grad_norm"] == pytest.approx(grad_norm, rel=1e-10)
        assert stats["angle"] == pytest.approx(math.degrees(math.atan(0.2 * grad_norm)), rel=1e-8)
    assert opt.step_statistics() == {}  # read and reset


def test_tangent_momentum_moves_along_the_sphere_and_plain_momentum_is_torchs_buffer():
    model, si = si_mlp()
    x, y = batch()
    opt = SphereSGD(si, elr=0.1, momentum=0.9, momentum_mode="tangent")
    for _ in range(10):
        w = flat(si)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        model.zero_grad()
        buf = torch.cat([opt.state[p]["momentum_buffer"].flatten() for p in si])
        assert abs(torch.dot(buf, w).item()) < 1e-12 * w.norm().item() * buf.norm().item()
    model, si = si_mlp()
    reference = [p.detach().clone().requires_grad_(True) for p in si]
    plain = SphereSGD(si, elr=0.1, momentum=0.9, momentum_mode="plain")
    torch_sgd = torch.optim.SGD(reference, lr=plain.param_groups[0]["lr"], momentum=0.9)
    F.cross_entropy(model(x), y).backward()
    for p, q in zip(si, reference, strict=True):
        q.grad = p.grad.clone()
    plain.step()
    torch_sgd.step()
    with torch.no_grad():  # the same step, then onto the sphere
        ref = flat(reference)
        ref = ref * (flat(reference).norm() / ref.norm())
        rho = plain.param_groups[0]["radii"][0]
        assert torch.allclose(flat(si), flat(reference) * rho / flat(reference).norm(), atol=1e-12)


def test_state_dict_round_trip_keeps_the_radii_and_buffers():
    model, si = si_mlp()
    x, y = batch()
    opt = SphereSGD(si, elr=0.1, momentum=0.5)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    state = opt.state_dict()
    _, si2 = si_mlp(seed=5)
    opt2 = SphereSGD(si2, elr=0.1, momentum=0.5)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["radii"] == opt.param_groups[0]["radii"]
    assert torch.equal(opt2.state[si2[0]]["momentum_buffer"], opt.state[si[0]]["momentum_buffer"])


def test_a_model_without_scale_invariant_parameters_is_a_one_line_error():
    from learnscope.errors import ConfigError

    with pytest.raises(ConfigError, match="scale-invariant"):
        SphereSGD([], elr=0.1)


@pytest.mark.parametrize("sphere", ["whole", "layer"])
@pytest.mark.parametrize(("momentum", "mode"), [(0.0, "tangent"), (0.9, "tangent"), (0.9, "plain")])
def test_host_scalars_on_the_cpu_take_the_same_steps_as_device_scalars(sphere, momentum, mode):
    """The CPU does the step's scalar arithmetic in Python floats; an accelerator keeps it in device scalars
    (no host sync). Both are float64 arithmetic: forced onto the CPU, the device path must agree."""
    x, y = batch()
    runs = []
    for host in (True, False):
        model, si = si_mlp()
        opt = SphereSGD(si, elr=0.2, sphere=sphere, momentum=momentum, momentum_mode=mode)
        assert opt.host_scalars  # the default on the CPU
        opt.host_scalars = host
        for _ in range(10):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            model.zero_grad()
        runs.append((flat(si), opt.step_statistics()))
    (w_host, stats_host), (w_device, stats_device) = runs
    assert torch.allclose(w_host, w_device, rtol=0, atol=1e-13)
    assert stats_host == pytest.approx(stats_device, rel=1e-12)
    assert stats_host["angle"] > 1  # the steps turned the weights: the comparison is not vacuous
