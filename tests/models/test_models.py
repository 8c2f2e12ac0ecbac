"""Built-in models: hand-computed parameter counts, forward/backward, probe-layer names, BatchNorm in eval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learnscope.errors import ConfigError
from learnscope.registry import MODELS

# Tiny input shape and config overrides per kind for the generic tests. A kind registered elsewhere and not
# listed here is tested at DEFAULT_SHAPE with its default config.
TINY: dict[str, tuple[tuple[int, ...], dict]] = {
    "mlp": ((1, 8, 8), {"depth": 2, "width": 16, "batchnorm": True}),
    "linear": ((40,), {}),
    "conv": ((3, 8, 8), {"depth": 2, "width": 8}),
    "lenet": ((1, 40), {}),
    "resnet18": ((3, 8, 8), {"width": 4}),
    "twolayer": ((1, 8, 8), {"width": 16}),
    "vit": ((3, 8, 8), {"patch": 4, "dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 32}),
}
DEFAULT_SHAPE = (3, 16, 16)
NUM_CLASSES = 10


def build(kind: str, input_shape: tuple[int, ...], num_classes: int = NUM_CLASSES, **fields) -> nn.Module:
    cfg = MODELS.params(kind).model_validate({"kind": kind, **fields})
    return MODELS.builder(kind)(cfg, input_shape, num_classes)


def tiny(kind: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    shape, fields = TINY.get(kind, (DEFAULT_SHAPE, {}))
    torch.manual_seed(seed)
    model = build(kind, shape, **fields)
    return model, torch.randn(4, *shape)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_builtin_kinds_are_registered():
    assert {"mlp", "linear", "conv", "lenet", "resnet18", "twolayer", "vit"} <= set(MODELS.kinds())


# Counts by hand: a Linear(a, b) has a*b + b parameters, a Conv(a, b, k) a*b*k^d + b (+0 without bias), a
# BatchNorm(b) 2b (running statistics are buffers, not parameters).
PARAM_COUNTS = [
    # mlp 64-512-10 on digits: (64*512 + 512) + (512*10 + 10) = 33,280 + 5,130
    ("mlp", (1, 8, 8), 10, {}, 38_410),
    # mlp 40-512-10 on MNIST-1D: (40*512 + 512) + 5,130 = 20,992 + 5,130
    ("mlp", (40,), 10, {}, 26_122),
    # with BatchNorm1d(512): + 2*512
    ("mlp", (40,), 10, {"batchnorm": True}, 27_146),
    # 40-100-100-100-10 without biases: 40*100 + 100*100 + 100*100 + 100*10
    ("mlp", (40,), 10, {"depth": 3, "width": 100, "bias": False}, 25_000),
    # linear: 64*10 + 10 ; 40*10 + 10
    ("linear", (1, 8, 8), 10, {}, 650),
    ("linear", (40,), 10, {}, 410),
    # conv L=5 W=64 on (3,32,32): stem (3*64*4 + 64) + 128 + (64*64*4 + 64) + 128 = 832 + 128 + 16,448 + 128
    # = 17,536; blocks 5 * (64*64*9 + 64 + 128) = 5 * 37,056 = 185,280; head 64*8*8*10 + 10 = 40,970
    ("conv", (3, 32, 32), 10, {}, 243_786),
    # conv on (1,28,28): stem (1*64*4 + 64) + 128 + 16,448 + 128 = 17,024; blocks 185,280;
    # head 64*7*7*10 + 10 = 31,370
    ("conv", (1, 28, 28), 10, {}, 233_674),
    # lenet (3,32,32): conv1 3*6*25 + 6 = 456; conv2 6*16*25 + 16 = 2,416;
    # 32->28->14->10->5 so flat 16*5*5 = 400; fc1 400*120 + 120 = 48,120; fc2 120*84 + 84 = 10,164;
    # head 84*10 + 10 = 850
    ("lenet", (3, 32, 32), 10, {}, 62_006),
    # lenet with 100 classes: fc2 120*120 + 120 = 14,520; head 120*100 + 100 = 12,100;
    # 456 + 2,416 + 48,120 + 14,520 + 12,100
    ("lenet", (3, 32, 32), 100, {}, 77_612),
    # lenet (1,28,28): conv1 1*6*25 + 6 = 156; conv2 2,416; 28->24->12->8->4 so flat 16*4*4 = 256;
    # fc1 256*120 + 120 = 30,840; fc2 10,164; head 850
    ("lenet", (1, 28, 28), 10, {}, 44_426),
    # lenet 1-D on (1,40): conv1 1*6*5 + 6 = 36; conv2 6*16*5 + 16 = 496;
    # 40->36->18->14->7 so flat 16*7 = 112; fc1 112*120 + 120 = 13,560; fc2 10,164; head 850
    ("lenet", (1, 40), 10, {}, 25_106),
    ("lenet", (40,), 10, {}, 25_106),  # a bare (L,) signal is one channel
    # resnet18, width k, C classes, no conv biases. Stem 3*k*9 + 2k = 29k.
    # BasicBlock(a, b): 9ab + 9b^2 + 4b, plus ab + 2b for a projection shortcut.
    # layer1 2*(18k^2 + 4k) = 36k^2 + 8k; layer2 (18+36+2)k^2 + 12k + 72k^2 + 8k = 128k^2 + 20k;
    # layer3 (72+144+8)k^2 + 24k + 288k^2 + 16k = 512k^2 + 40k; layer4 (288+576+32)k^2 + 48k + 1152k^2 + 32k
    # = 2048k^2 + 80k; head 8k*C + C. Total 2724k^2 + 177k + 8kC + C.
    # k=64: 11,157,504 + 11,328 + 5,120 + 10
    ("resnet18", (3, 32, 32), 10, {}, 11_173_962),
    # k=16: 697,344 + 2,832 + 1,280 + 10
    ("resnet18", (3, 32, 32), 10, {"width": 16}, 701_466),
    # twolayer on grayscale 32x32 (D = 1024), K = 512: (1024*512 + 512) + (512*10 + 10) = 524,800 + 5,130
    ("twolayer", (1, 32, 32), 10, {}, 529_930),
    # K = 2048, 100 classes: (1024*2048 + 2048) + (2048*100 + 100) = 2,099,200 + 204,900
    ("twolayer", (1, 32, 32), 100, {"width": 2048}, 2_304_100),
    # vit, the original's (3,32,32): 8x8 = 64 patches of 4*4*3 = 48 values.
    # patch embedding 48*512 + 512 = 25,088; positions 65*512 = 33,280; CLS 512.
    # block: LN 2*512 = 1,024; qkv 512*3*(8*64) = 786,432 (no bias); out 512*512 + 512 = 262,656;
    # LN 1,024; MLP (512*512 + 512) + (512*512 + 512) = 525,312; block = 1,576,448; 6 blocks = 9,458,688.
    # head LN 1,024 + 512*10 + 10 = 6,154. Total 25,088 + 33,280 + 512 + 9,458,688 + 6,154
    ("vit", (3, 32, 32), 10, {}, 9_523_722),
    # vit on (1,28,28): 7x7 = 49 patches of 16 values: embedding 16*512 + 512 = 8,704; positions 50*512
    # = 25,600; CLS 512; blocks 9,458,688; head 6,154
    ("vit", (1, 28, 28), 10, {}, 9_499_658),
    # small vit on (1,8,8), patch 4, dim 32, depth 2, 2 heads of 8, MLP 64: 4 patches of 16 values.
    # embedding 16*32 + 32 = 544; positions 5*32 = 160; CLS 32; block: LN 64 + qkv 32*48 = 1,536 +
    # out 16*32 + 32 = 544 + LN 64 + MLP (32*64 + 64) + (64*32 + 32) = 4,192 -> 6,400; 2 blocks 12,800;
    # head LN 64 + 32*10 + 10 = 394. Total 544 + 160 + 32 + 12,800 + 394
    ("vit", (1, 8, 8), 10, {"dim": 32, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 64}, 13_930),
    # one head spanning the width (dim_head = dim = 32) has no output projection: each block loses the
    # 544 of `out` and its qkv is 32*96 = 3,072 instead of 1,536: 13,930 + 2*(1,536 - 544)
    ("vit", (1, 8, 8), 10, {"dim": 32, "depth": 2, "heads": 1, "dim_head": 32, "mlp_dim": 64}, 15_914),
]


@pytest.mark.parametrize(("kind", "shape", "classes", "fields", "expected"), PARAM_COUNTS)
def test_parameter_count(kind, shape, classes, fields, expected):
    assert n_params(build(kind, shape, classes, **fields)) == expected


@pytest.mark.parametrize("kind", MODELS.kinds())
def test_default_config_is_valid(kind):
    cfg = MODELS.params(kind)()
    assert cfg.kind == kind
    assert MODELS.params(kind).model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("kind", MODELS.kinds())
def test_forward_backward(kind):
    model, x = tiny(kind)
    out = model(x)
    assert out.shape == (4, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:  # a frozen part (the fixed head of a scale-invariant model)
            continue
        assert p.grad is not None, f"{kind}: {name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
    # some gradient flows into the very first layer too
    first = next(iter(model.parameters()))
    assert first.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", MODELS.kinds())
def test_probe_layers_exist_and_fire_in_order(kind):
    model, x = tiny(kind)
    if kind not in TINY and not hasattr(model, "probe_layers"):
        pytest.skip(f"{kind} exposes no probe layers")
    assert hasattr(model, "probe_layers")
    modules = dict(model.named_modules())
    for method in ("probe_layers", "post_activation_layers"):
        if not hasattr(model, method):
            continue
        names = getattr(model, method)()
        assert names, f"{kind}.{method}() is empty"
        assert len(set(names)) == len(names)
        fired: list[str] = []
        handles = []
        for name in names:
            assert name in modules, f"{kind}: {name!r} is not a module"
            handles.append(modules[name].register_forward_hook(lambda m, i, o, n=name, f=fired: f.append(n)))
        model(x)
        for h in handles:
            h.remove()
        assert fired == names  # each fires once, in forward order


@pytest.mark.parametrize(
    ("kind", "fields", "names", "module_type"),
    [
        ("mlp", {"depth": 3}, ["blocks.0.linear", "blocks.1.linear", "blocks.2.linear"], nn.Linear),
        ("conv", {"depth": 2}, ["blocks.0.conv", "blocks.1.conv"], nn.Conv2d),
        ("linear", {}, ["head"], nn.Linear),
    ],
)
def test_probe_layers_are_the_reference_choice(kind, fields, names, module_type):
    """MLP/CONV probe the pre-BN linear/conv output (docs/studies/neural_collapse.md §2)."""
    model = build(kind, (3, 8, 8), **fields)
    assert model.probe_layers() == names
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], module_type) for n in names)


def test_named_layers():
    lenet = build("lenet", (1, 40))
    assert lenet.probe_layers() == ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"]
    assert isinstance(dict(lenet.named_modules())["features.conv1"], nn.Conv1d)
    assert isinstance(dict(build("lenet", (3, 32, 32)).named_modules())["features.conv1"], nn.Conv2d)
    resnet = build("resnet18", (3, 8, 8), width=4)
    expected = ["stem"] + [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert resnet.probe_layers() == expected
    mlp = build("mlp", (40,), depth=2, batchnorm=True)
    modules = dict(mlp.named_modules())
    assert isinstance(modules["blocks.1.norm"], nn.BatchNorm1d)
    assert "blocks.0.norm" not in dict(build("mlp", (40,)).named_modules())
    assert isinstance(modules["head"], nn.Linear)


def test_resnet_shortcuts_only_where_shape_changes():
    resnet = build("resnet18", (3, 8, 8), width=4)
    projected = [
        n for n, m in resnet.named_modules() if n.endswith("shortcut") and not isinstance(m, nn.Identity)
    ]
    assert projected == ["layer2.0.shortcut", "layer3.0.shortcut", "layer4.0.shortcut"]


@pytest.mark.parametrize(
    ("kind", "shape", "fields"),
    [
        ("mlp", (1, 8, 8), {"depth": 2, "width": 16, "batchnorm": True}),
        ("conv", (3, 8, 8), {"depth": 2, "width": 8}),
        ("resnet18", (3, 8, 8), {"width": 4}),
    ],
)
def test_batchnorm_eval_is_deterministic_and_per_sample(kind, shape, fields):
    torch.manual_seed(0)
    model = build(kind, shape, **fields)
    x = torch.randn(6, *shape)
    model.train()
    train_out = model(x)
    model(x + 1)  # move the running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[:1])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-5)  # no batch statistics in eval
    assert not torch.allclose(train_out[:1], a[:1])  # train mode did use batch statistics


def test_resnet18_k64_forward():
    torch.manual_seed(0)
    model = build("resnet18", (3, 32, 32)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_seeded_build_is_reproducible():
    torch.manual_seed(3)
    a = build("conv", (1, 8, 8), depth=1, width=4)
    torch.manual_seed(3)
    b = build("conv", (1, 8, 8), depth=1, width=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("shape", [(1, 30, 30), (3, 32, 30), (40,), (1, 40)])
def test_conv_rejects_bad_input_shape(shape):
    with pytest.raises(ConfigError) as info:
        build("conv", shape)
    msg = str(info.value)
    assert "'conv'" in msg and str(shape) in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("kind", "shape"), [("lenet", (1, 8, 8)), ("lenet", (1, 2, 3, 4)), ("resnet18", (40,))]
)
def test_other_bad_input_shapes(kind, shape):
    with pytest.raises(ConfigError, match=kind):
        build(kind, shape)


def test_config_rejects_unknown_and_bad_fields():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        MODELS.params("mlp")(depth=0)
    with pytest.raises(ValidationError):
        MODELS.params("conv")(widht=8)
