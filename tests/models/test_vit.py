"""The ViT and the two-layer net of Refinetti et al. 2023: attention against torch's
scaled_dot_product_attention, patches against an explicit loop, pooling, the original's parameter names,
per-sample evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learnscope.errors import ConfigError
from learnscope.models.vit import Attention, Patchify
from learnscope.registry import MODELS

SMALL = {"patch": 4, "dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 32}


def build(kind, shape, classes=10, **fields):
    cfg = MODELS.params(kind).model_validate({"kind": kind, **fields})
    return MODELS.builder(kind)(cfg, shape, classes)


@pytest.mark.parametrize(("heads", "dim_head"), [(3, 8), (1, 24), (4, 5)])
def test_attention_is_scaled_dot_product_attention(heads, dim_head):
    torch.manual_seed(0)
    dim = 24
    attn = Attention(dim, heads, dim_head, dropout=0.0).double().eval()
    x = torch.randn(2, 7, dim, dtype=torch.float64)
    maps = []
    attn.attend.register_forward_hook(lambda m, i, o: maps.append(o))
    out = attn(x)
    # Reference: the original's layout (qkv chunked in three, then 'b n (h d) -> b h n d'), torch's kernel.
    q, k, v = (t.reshape(2, 7, heads, dim_head).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, heads * dim_head)
    ref = attn.to_out(ref)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert maps[0].shape == (2, heads, 7, 7)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, heads, 7, dtype=torch.float64))
    # one head as wide as the model: no output projection, as in the original
    assert isinstance(attn.to_out, torch.nn.Identity) == (heads == 1 and dim_head == dim)


def test_patches_are_row_major_and_flattened_as_p1_p2_c():
    x = torch.randn(2, 3, 8, 12)
    patches = Patchify(4)(x)
    assert patches.shape == (2, 2 * 3, 4 * 4 * 3)
    for i in range(2):
        for j in range(3):
            block = x[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]  # (b, c, p1, p2)
            assert torch.equal(patches[:, 3 * i + j], block.permute(0, 2, 3, 1).reshape(2, -1))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_pooling_feeds_the_head(pool):
    torch.manual_seed(0)
    model = build("vit", (1, 8, 8), **SMALL, pool=pool).eval()
    seen = {}
    model.transformer.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o))
    model.to_latent.register_forward_hook(lambda m, i, o: seen.setdefault("latent", o))
    with torch.no_grad():
        out = model(torch.randn(3, 1, 8, 8))
    tokens = seen["tokens"]
    assert tokens.shape == (3, 5, 16)  # CLS + 4 patches
    expected = tokens[:, 0] if pool == "cls" else tokens.mean(1)
    torch.testing.assert_close(seen["latent"], expected)
    torch.testing.assert_close(out, model.mlp_head(expected))


def test_parameter_names_are_the_originals():
    """Names and shapes of lucidrains' ViT as the original instantiates it (depth 1 here), so its state dicts
    load; and the two-layer net's fc1/fc2."""
    model = build("vit", (3, 8, 8), patch=4, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32)
    block = "transformer.layers.0"
    expected = {
        "pos_embedding": (1, 5, 16),
        "cls_token": (1, 1, 16),
        "to_patch_embedding.1.weight": (16, 48),
        "to_patch_embedding.1.bias": (16,),
        f"{block}.0.norm.weight": (16,),
        f"{block}.0.norm.bias": (16,),
        f"{block}.0.fn.to_qkv.weight": (48, 16),
        f"{block}.0.fn.to_out.0.weight": (16, 16),
        f"{block}.0.fn.to_out.0.bias": (16,),
        f"{block}.1.norm.weight": (16,),
        f"{block}.1.norm.bias": (16,),
        f"{block}.1.fn.net.0.weight": (32, 16),
        f"{block}.1.fn.net.0.bias": (32,),
        f"{block}.1.fn.net.3.weight": (16, 32),
        f"{block}.1.fn.net.3.bias": (16,),
        "mlp_head.0.weight": (16,),
        "mlp_head.0.bias": (16,),
        "mlp_head.1.weight": (10, 16),
        "mlp_head.1.bias": (10,),
    }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    two = build("twolayer", (1, 32, 32), width=512)
    assert {k: tuple(v.shape) for k, v in two.state_dict().items()} == {
        "fc1.weight": (512, 1024),
        "fc1.bias": (512,),
        "fc2.weight": (10, 512),
        "fc2.bias": (10,),
    }


def test_twolayer_is_relu_between_two_affine_maps():
    torch.manual_seed(0)
    model = build("twolayer", (1, 4, 4), classes=3, width=5)
    x = torch.randn(6, 1, 4, 4)
    flat = x.reshape(6, 16)
    hidden = (flat @ model.fc1.weight.T + model.fc1.bias).clamp_min(0)
    torch.testing.assert_close(model(x), hidden @ model.fc2.weight.T + model.fc2.bias)


def test_default_init_of_embeddings_is_standard_normal():
    torch.manual_seed(0)
    model = build("vit", (3, 32, 32))
    pos = model.pos_embedding.detach()
    assert pos.shape == (1, 65, 512)
    assert abs(pos.mean().item()) < 0.02 and abs(pos.std().item() - 1) < 0.02  # 33,280 N(0, 1) draws


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 12), (1, 12, 4), (3, 16, 16)])
def test_vit_takes_one_or_three_channels_of_any_size_divisible_by_the_patch(shape):
    torch.manual_seed(0)
    model = build("vit", shape, **SMALL)
    tokens = shape[1] // 4 * (shape[2] // 4) + 1
    assert model.pos_embedding.shape == (1, tokens, 16)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(3, 30, 30), (1, 8, 6), (64,), (1, 64)])
def test_vit_rejects_other_shapes(shape):
    with pytest.raises(ConfigError, match="'vit'"):
        build("vit", shape, **SMALL)


def test_dropout_only_in_train_mode_and_eval_is_per_sample():
    torch.manual_seed(0)
    model = build("vit", (3, 8, 8), **SMALL, dropout=0.5, emb_dropout=0.5)
    x = torch.randn(5, 3, 8, 8)
    assert not torch.equal(model(x), model(x))  # dropout in train mode
    model.eval()
    with torch.no_grad():
        a, b, single = model(x), model(x), model(x[:1])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-6)
