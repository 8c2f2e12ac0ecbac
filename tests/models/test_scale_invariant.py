"""Scale-invariant models (Kodryan et al., NeurIPS 2022) and the detection of their SI parameters.

Invariance is checked numerically on float64 copies: scaling the SI set by α must leave the output unchanged.
BatchNorm's ε breaks exact invariance: (αz − αμ)/sqrt(α²σ² + ε) = (z − μ)/sqrt(σ² + ε/α²), a relative change
of order ε/σ² (measured here: ~1e-4 at ε = 1e-5). So the exactness tests set ε = 1e-30 (torch refuses 0 in
train mode), which float64 cannot see next to σ², and a separate test checks that the only effect of ε is
exactly that substitution ε → ε/α².
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnscope.errors import ConfigError
from learnscope.models.scale_invariant import scale_invariant_groups, scale_invariant_parameters, si_norm
from learnscope.registry import MODELS

# every SI kind at a small size (input shape, config fields); a new SI kind must be added here
SMALL: dict[str, tuple[tuple[int, ...], dict]] = {
    "convnet_si": ((3, 8, 8), {"width": 4}),
    "convnet_si_af": ((3, 8, 8), {"width": 4}),
    "resnet18_si": ((3, 8, 8), {"width": 4}),
    "resnet18_si_af": ((3, 8, 8), {"width": 4}),
    "mlp_si": ((64,), {"width": 16}),
    "mlp_si_af": ((64,), {"width": 16}),
}
KINDS = sorted(SMALL)
TINY_EPS = 1e-30  # "no ε": positive as train-mode BatchNorm requires, invisible next to σ² in float64


def build(kind: str, shape: tuple[int, ...], classes: int = 10, **fields) -> nn.Module:
    cfg = MODELS.params(kind).model_validate({"kind": kind, **fields})
    return MODELS.builder(kind)(cfg, shape, classes)


def norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def small(kind: str, seed: int = 0, eps: float = TINY_EPS) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 model in train mode with BatchNorm ε = `eps`, random affine γ, β (af kinds, so they are not
    at their trivial init), a batch of 8 and labels."""
    shape, fields = SMALL[kind]
    torch.manual_seed(seed)
    model = build(kind, shape, **fields).double().train()
    set_eps(model, eps)
    with torch.no_grad():
        for bn in norms(model):
            if bn.affine:
                bn.weight.copy_(1 + 0.5 * torch.randn_like(bn.weight))
                bn.bias.copy_(0.5 * torch.randn_like(bn.bias))
    x = torch.randn(8, *shape, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    return model, x, y


def set_eps(model: nn.Module, eps: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm):
            m.eps = eps


def scale_(params: list[nn.Parameter], alpha: float) -> None:
    with torch.no_grad():
        for p in params:
            p.mul_(alpha)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def si(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, p in scale_invariant_parameters(model)]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_si_kind_is_tested():
    assert {k for k in MODELS.kinds() if k.endswith(("_si", "_si_af"))} == set(SMALL)


# --- numerical scale invariance ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 3.0])
@pytest.mark.parametrize("kind", KINDS)
def test_output_is_invariant_to_scaling_the_si_set(kind, alpha):
    model, x, _ = small(kind)
    params = si(model)
    assert params
    before = model(x)
    scale_(params, alpha)
    after = model(x)
    # measured: exactly 0 for α = 0.5 (a power of two scales exactly), ≤ 3e-15 for α = 3
    assert rel(after, before) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_batchnorm_eps_is_the_only_break_of_invariance(kind):
    """With the default ε = 1e-5: f(αS; ε) ≠ f(S; ε) (by ~1e-4), but f(αS; ε) = f(S; ε') exactly, where ε' =
    ε/α² for every BatchNorm whose input scales with S (all but ResNet18SI's shortcut BNs, whose input is the
    already normalised block input)."""
    alpha = 3.0
    model, x, _ = small(kind, eps=1e-5)
    before = model(x)
    scale_(si(model), alpha)
    after = model(x)
    assert 1e-7 < rel(after, before) < 1e-2  # measured 3e-5 to 3e-4
    scale_(si(model), 1 / alpha)
    for name, bn in model.named_modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and not name.endswith("shortcut.norm"):
            bn.eps = 1e-5 / alpha**2
    assert rel(model(x), after) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_is_invariant_with_running_statistics_of_the_scaled_weights(kind):
    """In eval mode BatchNorm uses running statistics, which scale with the weights only if estimated at
    that scale: re-estimated from one batch (momentum=None: the plain average), the outputs agree."""
    model, x, _ = small(kind)
    x_test = torch.randn_like(x)[:3]

    def eval_output() -> torch.Tensor:
        model.train()
        for bn in norms(model):
            bn.momentum = None
            bn.reset_running_stats()
        with torch.no_grad():
            model(x)
        model.eval()
        with torch.no_grad():
            return model(x_test)

    before = eval_output()
    scale_(si(model), 3.0)
    assert rel(eval_output(), before) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_is_orthogonal_to_the_si_vector_and_scales_as_one_over_alpha(kind):
    """L(αw) = L(w) gives ⟨∇L(w), w⟩ = 0 and ∇L(αw) = ∇L(w)/α."""
    model, x, y = small(kind)
    params = si(model)

    def grads() -> list[torch.Tensor]:
        return list(torch.autograd.grad(F.cross_entropy(model(x), y), params))

    g = grads()
    dot = sum((gi * p).sum() for gi, p in zip(g, params, strict=True))
    assert float(dot.detach().abs()) < 1e-12 * si_norm(g) * si_norm(params)  # measured ~1e-17 relative
    assert si_norm(g) > 0
    alpha = 3.0
    scale_(params, alpha)
    g_alpha = grads()
    for a, b in zip(g_alpha, g, strict=True):
        assert rel(a, b / alpha) < 1e-10  # measured ≤ 1e-14


@pytest.mark.parametrize("kind", KINDS)
def test_scaling_the_head_changes_the_output(kind):
    """The invariance is not vacuous: the head (not SI) changes the output when scaled."""
    model, x, _ = small(kind)
    before = model(x)
    scale_([model.head.weight], 3.0)
    assert rel(model(x), before) > 0.1


# --- which parameters are SI -------------------------------------------------------------------------------


def resnet_si_names() -> list[str]:
    names = ["stem.weight"]
    for s in range(1, 5):
        for b in range(2):
            names += [f"layer{s}.{b}.conv1.weight", f"layer{s}.{b}.conv2.weight"]
            if s > 1 and b == 0:
                names.append(f"layer{s}.0.shortcut.conv.weight")
    return names


EXPECTED_SI = {
    "convnet_si": [f"blocks.{i}.conv.weight" for i in range(4)],
    "resnet18_si": resnet_si_names(),
    "mlp_si": ["blocks.0.linear.weight", "blocks.1.linear.weight"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_si_set_is_the_bias_free_layers_before_batchnorm(kind):
    model, _, _ = small(kind)
    names = [n for n, _ in scale_invariant_parameters(model)]
    assert names == EXPECTED_SI[kind.removesuffix("_af")]
    assert [f"{n}.weight" for n in model.probe_layers()] == names  # the hand-written list agrees
    # the rest is exactly the head and (af) the BatchNorm affine parameters
    bn_params = {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)
        for p in ("weight", "bias")
        if getattr(m, p) is not None
    }
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert set(dict(model.named_parameters())) - set(names) == head | bn_params
    assert bool(bn_params) == kind.endswith("_af")


def test_resnet_si_set_is_si_only_jointly_by_stage():
    """Identity shortcuts tie the stem (stage 1) or the shortcut conv (stages 2-4) to the blocks' conv2: these
    groups are SI only together; each block's conv1 is SI alone."""
    model, x, _ = small("resnet18_si")
    groups = [[n for n, _ in g] for g in scale_invariant_groups(model)]
    assert groups[0] == ["stem.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"]
    for s in (2, 3, 4):
        joint = [f"layer{s}.0.conv2.weight", f"layer{s}.0.shortcut.conv.weight", f"layer{s}.1.conv2.weight"]
        assert joint in groups
    singles = sorted(g[0] for g in groups if len(g) == 1)
    assert singles == sorted(f"layer{s}.{b}.conv1.weight" for s in range(1, 5) for b in range(2))
    assert len(groups) == 12
    before = model(x)
    params = dict(model.named_parameters())
    for group in groups:
        scale_([params[n] for n in group], 3.0)
        assert rel(model(x), before) < 1e-12
        scale_([params[n] for n in group], 1 / 3.0)
    scale_([params["stem.weight"]], 3.0)  # one member of a joint group alone is not SI
    assert rel(model(x), before) > 1e-3


@pytest.mark.parametrize("kind", ["convnet_si", "mlp_si"])
def test_each_layer_is_si_on_its_own_without_shortcuts(kind):
    model, x, _ = small(kind)
    groups = scale_invariant_groups(model)
    assert [[n for n, _ in g] for g in groups] == [[n] for n in EXPECTED_SI[kind]]
    before = model(x)
    for group in groups:
        scale_([p for _, p in group], 3.0)
        assert rel(model(x), before) < 1e-12


def test_convnet_si_matches_the_original_layer_list():
    """The paper code's ConvNetSI is one nn.Sequential whose SI weights it names by index (conv_layers.0, 3,
    7, 11, right only at depth 3). Built from the same seed, ours computes the same function, and the
    detection run on the original's layout finds exactly those indices."""

    def block(c_in, c_out, pool):
        layers = [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(),
        ]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    c = 4
    torch.manual_seed(5)
    conv_layers = nn.Sequential(
        *block(3, c, False), *block(c, 2 * c, True), *block(2 * c, 4 * c, True), *block(4 * c, 8 * c, True)
    )
    linear = nn.Linear(8 * c, 10)
    with torch.no_grad():
        linear.weight.copy_(10 * linear.weight / linear.weight.norm())  # init_scale = 10
    original = nn.Sequential(conv_layers, nn.MaxPool2d(4), nn.Flatten(), linear)
    torch.manual_seed(5)
    ours = build("convnet_si", (3, 32, 32), width=c, head_seed=None)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(ours(x), original(x))
    assert [n for n, _ in scale_invariant_parameters(original)] == [f"0.{i}.weight" for i in (0, 3, 7, 11)]


def test_convnet_si_depth_follows_the_original_layout_and_detection_follows_depth():
    """Depth 6: each stage repeats a width-keeping block before its widening one (7 convs, all SI)."""
    model = build("convnet_si", (3, 16, 16), width=2, depth=6)
    widths = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [(3, 2), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16)]
    assert len(si(model)) == 7 and model.head.in_features == 16


# --- parameter counts --------------------------------------------------------------------------------------

# Hand counts. A conv3x3 a->b without bias has 9ab weights; affine-free BatchNorm has none.
# convnet_si, c = 32 on (3,32,32): 9*3*32 = 864; 9*32*64 = 18,432; 9*64*128 = 73,728; 9*128*256 = 294,912
# (SI 387,936); head 256*10 + 10 = 2,570: 390,506. The af variant adds 2*(32 + 64 + 128 + 256) = 960.
# resnet18_si, width k: convs 2724k^2 + 27k (the ResNet-18 count of test_models.py without BatchNorm and
# stem BN, with the 3*k*9 stem), head 8k*10 without bias. k = 32: 2,789,376 + 864 = 2,790,240 SI, + 2,560;
# k = 64: 11,157,504 + 1,728 = 11,159,232 SI, + 5,120.
# mlp_si 64-128-128-10: 64*128 + 128*128 = 24,576 SI, head 128*10 + 10 = 1,290.
COUNTS = [
    ("convnet_si", (3, 32, 32), {}, 390_506, 387_936),
    ("convnet_si_af", (3, 32, 32), {}, 391_466, 387_936),
    ("resnet18_si", (3, 32, 32), {"width": 32}, 2_792_800, 2_790_240),
    ("resnet18_si", (3, 32, 32), {}, 11_164_352, 11_159_232),
    ("mlp_si", (64,), {}, 25_866, 24_576),
]


@pytest.mark.parametrize(("kind", "shape", "fields", "total", "si_count"), COUNTS)
def test_parameter_counts(kind, shape, fields, total, si_count):
    model = build(kind, shape, **fields)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in si(model)) == si_count


def test_convnet_si_per_layer_counts_and_init_norm():
    torch.manual_seed(0)
    params = si(build("convnet_si", (3, 32, 32)))
    assert [p.numel() for p in params] == [864, 18_432, 73_728, 294_912]
    # Kaiming-uniform (a = √5) gives E‖W‖² = out_channels/3: ρ² ≈ (32 + 64 + 128 + 256)/3 = 160
    assert si_norm(params) == pytest.approx(math.sqrt(160), rel=0.01)


# --- the head ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["convnet_si", "resnet18_si", "mlp_si"])
def test_head_is_rescaled_frozen_and_shared(kind):
    shape, fields = SMALL[kind]
    torch.manual_seed(1)
    a = build(kind, shape, **fields)
    torch.manual_seed(2)
    b = build(kind, shape, **fields)
    assert float(a.head.weight.double().norm()) == pytest.approx(10.0, rel=1e-6)
    assert not any(p.requires_grad for p in a.head.parameters())
    for pa, pb in zip(a.head.parameters(), b.head.parameters(), strict=True):
        assert torch.equal(pa, pb)  # one head for every global seed
    assert not torch.equal(si(a)[0], si(b)[0])  # the body follows the global seed
    # the head is the one `torch.manual_seed(228); nn.Linear(...)` draws (the original's --same_last_layer)
    torch.manual_seed(228)
    ref = nn.Linear(a.head.in_features, 10, bias=a.head.bias is not None)
    assert torch.equal(a.head.weight, 10 * ref.weight / ref.weight.norm())
    if ref.bias is not None:
        assert torch.equal(a.head.bias, ref.bias)


def test_head_seed_does_not_touch_the_global_rng():
    """The head is first drawn from the global RNG as always, then redrawn from its own generator: the body
    and the global RNG state afterwards do not depend on head_seed."""
    shape, fields = SMALL["convnet_si"]
    states, bodies, heads = [], [], []
    for head_seed in (228, 7, None):
        torch.manual_seed(3)
        model = build("convnet_si", shape, **fields, head_seed=head_seed)
        states.append(torch.get_rng_state())
        bodies.append(si(model))
        heads.append(model.head.weight.detach())
    assert all(torch.equal(s, states[0]) for s in states)
    for body in bodies[1:]:
        assert all(torch.equal(p, q) for p, q in zip(body, bodies[0], strict=True))
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_head_without_seed_follows_the_global_rng():
    shape, fields = SMALL["mlp_si"]
    heads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        heads.append(build("mlp_si", shape, **fields, head_seed=None).head.weight)
    assert not torch.equal(*heads)


@pytest.mark.parametrize("kind", ["convnet_si_af", "resnet18_si_af", "mlp_si_af"])
def test_af_head_is_trained_and_not_rescaled(kind):
    shape, fields = SMALL[kind]
    model = build(kind, shape, **fields)
    assert all(p.requires_grad for p in model.parameters())
    assert float(model.head.weight.detach().norm()) < 5  # default init: ‖W‖ ≈ sqrt(C/3) ≈ 1.8, not 10
    frozen = build(kind, shape, **fields, head_norm=10.0)
    assert float(frozen.head.weight.norm()) == pytest.approx(10.0, rel=1e-6)
    assert not frozen.head.weight.requires_grad


def test_mlp_si_is_the_fully_si_digits_mlp():
    """mlp_si on 8x8 digits is the paper-style fully SI MLP 64-128-128-10 with a norm-10 head drawn under seed
    228: built by hand the same way, the weights agree exactly."""
    torch.manual_seed(1)
    ref = nn.Sequential(
        nn.Linear(64, 128, bias=False),
        nn.BatchNorm1d(128, affine=False),
        nn.ReLU(),
        nn.Linear(128, 128, bias=False),
        nn.BatchNorm1d(128, affine=False),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    torch.manual_seed(228)
    h = nn.Linear(128, 10)
    with torch.no_grad():
        ref[6].weight.copy_(10.0 * h.weight / h.weight.norm())
        ref[6].bias.copy_(h.bias)
    torch.manual_seed(1)
    model = build("mlp_si", (64,))
    assert [n for n, _ in scale_invariant_parameters(ref)] == ["0.weight", "3.weight"]
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


# --- detection on hand-built models ------------------------------------------------------------------------


class Bypass(nn.Module):
    """l1 is normalised before the sum; l2 joins it unnormalised, so scaling l2 changes the mix that the
    second BatchNorm sees (a sum of a scaled and an unscaled value is not homogeneous)."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(6, 8, bias=False)
        self.bn1 = nn.BatchNorm1d(8, affine=False)
        self.l2 = nn.Linear(6, 8, bias=False)
        self.bn2 = nn.BatchNorm1d(8, affine=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(F.relu(self.bn2(self.bn1(self.l1(x)) + self.l2(x))))


class Branches(nn.Module):
    """Two bias-free branches concatenated, then LayerNorm: SI together, not alone; forward has a tensor
    constant, which the tracer stores on the model (and the analysis removes again)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4, bias=False)
        self.b = nn.Linear(6, 4, bias=False)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x) * torch.tensor(2.0, dtype=x.dtype)], dim=1)
        return self.head(self.norm(h).view(x.size(0), -1))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.l1(x) if x.sum() > 0 else -self.l1(x)


def chain(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers).double()


# (name, model, the SI set it must find, weights that must change the output when scaled alone)
HAND_BUILT = [
    # a bias before a ReLU before the BatchNorm: not homogeneous, not SI
    (
        "biased",
        lambda: chain(nn.Linear(6, 8), nn.ReLU(), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 3)),
        [],
        ["0.weight", "3.weight"],
    ),
    # a bias right before BatchNorm: its mean subtraction removes the bias, so the weight is in fact SI in
    # train mode, but the detection does not claim it (conservative: a bias stops the walk)
    (
        "bias_then_bn",
        lambda: chain(nn.Linear(6, 8), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 3)),
        [],
        [],
    ),
    # a bias-free layer whose output reaches the head unnormalised is not SI; the one before BN is
    (
        "unnormalised",
        lambda: chain(
            nn.Linear(6, 8, bias=False),
            nn.BatchNorm1d(8, affine=False),
            nn.ReLU(),
            nn.Linear(8, 8, bias=False),
            nn.ReLU(),
            nn.Linear(8, 3),
        ),
        ["0.weight"],
        ["3.weight", "5.weight"],
    ),
    # tanh is not homogeneous
    (
        "tanh",
        lambda: chain(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.BatchNorm1d(8), nn.Linear(8, 3)),
        [],
        ["0.weight"],
    ),
    # two bias-free layers in a row before BN: both SI (the BN input has degree 2), each on its own
    (
        "chain",
        lambda: chain(
            nn.Linear(6, 8, bias=False),
            nn.Linear(8, 8, bias=False),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Linear(8, 3, bias=False),
        ),
        ["0.weight", "1.weight"],
        ["4.weight"],
    ),
    ("bypass", lambda: Bypass().double(), ["l1.weight"], ["l2.weight", "head.weight"]),
    ("branches", lambda: Branches().double(), ["a.weight", "b.weight"], ["a.weight", "head.weight"]),
    # no normalisation at all: nothing is SI, not even a bias-free head
    (
        "plain",
        lambda: chain(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False)),
        [],
        ["0.weight", "2.weight"],
    ),
]


@pytest.mark.parametrize(("name", "make", "expected", "not_si"), HAND_BUILT, ids=[h[0] for h in HAND_BUILT])
def test_detection_on_hand_built_models(name, make, expected, not_si):
    torch.manual_seed(0)
    model = make().train()
    set_eps(model, TINY_EPS)
    attrs = set(vars(model))
    found = scale_invariant_parameters(model)
    assert set(vars(model)) == attrs  # tracing left nothing behind
    assert [n for n, _ in found] == expected
    x = torch.randn(8, 6, dtype=torch.float64)
    before = model(x)
    scale_([p for _, p in found], 3.0)
    assert rel(model(x), before) < 1e-12
    scale_([p for _, p in found], 1 / 3.0)
    params = dict(model.named_parameters())
    for n in not_si:  # the detection is not vacuous: these do change the output
        scale_([params[n]], 3.0)
        assert rel(model(x), before) > 1e-3, n
        scale_([params[n]], 1 / 3.0)


def test_groups_on_hand_built_models():
    torch.manual_seed(0)
    branches = Branches().double()
    set_eps(branches, TINY_EPS)
    assert [[n for n, _ in g] for g in scale_invariant_groups(branches)] == [["a.weight", "b.weight"]]
    x = torch.randn(8, 6, dtype=torch.float64)
    before = branches(x)
    scale_([branches.a.weight], 3.0)  # LayerNorm mixes the branches: one alone is not SI
    assert rel(branches(x), before) > 1e-3
    twice = chain(
        nn.Linear(6, 8, bias=False), nn.Linear(8, 8, bias=False), nn.BatchNorm1d(8), nn.Linear(8, 3)
    )
    assert [[n for n, _ in g] for g in scale_invariant_groups(twice)] == [["0.weight"], ["1.weight"]]


def test_detection_on_the_repo_resnet18():
    """The standard ResNet-18 (models/resnet.py: bias-free convs before affine BatchNorm, a biased head):
    every conv is SI, the BatchNorm γ/β and the head are not."""
    torch.manual_seed(0)
    model = build("resnet18", (3, 8, 8), width=4).double()
    set_eps(model, TINY_EPS)
    names = [n for n, _ in scale_invariant_parameters(model)]
    convs = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert names == convs and len(convs) == 20
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    before = model(x)
    scale_(si(model), 3.0)
    assert rel(model(x), before) < 1e-12


def test_untraceable_model_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"Untraceable.*torch\.fx") as info:
        scale_invariant_parameters(Untraceable())
    assert "\n" not in str(info.value)


def test_si_norm():
    params = [torch.ones(2, 3), torch.full((4,), 2.0)]
    assert si_norm(params) == pytest.approx(math.sqrt(6 + 16))
    assert si_norm([("a", params[0]), ("b", params[1])]) == si_norm(params)
    assert si_norm([]) == 0.0


# --- configs and shapes ------------------------------------------------------------------------------------


def test_config_defaults():
    for kind in KINDS:
        cfg = MODELS.params(kind)()
        assert cfg.head_seed == 228
        assert cfg.head_norm == (None if kind.endswith("_af") else 10.0)
    assert MODELS.params("convnet_si")().width == 32
    assert MODELS.params("resnet18_si")().width == 64 and not MODELS.params("resnet18_si")().head_bias
    assert (MODELS.params("mlp_si")().depth, MODELS.params("mlp_si")().width) == (2, 128)
    with pytest.raises(ValueError):
        MODELS.params("convnet_si")(head_norm=0.0)


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("convnet_si", (64,)), ("convnet_si", (1, 40)), ("convnet_si", (3, 4, 4)), ("resnet18_si_af", (40,))],
)
def test_bad_input_shapes(kind, shape):
    with pytest.raises(ConfigError, match=kind) as info:
        build(kind, shape)
    assert str(shape) in str(info.value) and "\n" not in str(info.value)


def test_convnet_si_takes_other_image_sizes():
    model = build("convnet_si", (1, 28, 28), width=4)  # MNIST: 28 -> 14 -> 7 -> 3, then global max-pool
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
