"""A small vision transformer: the lucidrains-style ViT of Refinetti et al. 2023
(docs/studies/increasing_complexity.md §4, §7.5), without einops.

Patches of p x p pixels, each flattened as (p1 p2 c) and embedded linearly; a learned CLS token and learned
positional embeddings (both N(0, 1) at init); `depth` pre-LayerNorm blocks of multi-head self-attention
(qkv without bias, softmax(q k^T / sqrt(dim_head)) v, output projection) and a GELU MLP, each with a residual;
CLS (or mean) pooling; LayerNorm + Linear head. Defaults are the original's: patch 4, dim 512, depth 6,
8 heads of 64, MLP 512, dropout 0.1 and embedding dropout 0.1. Differences: `num_classes` follows the data
(the original hard-codes 10) and the forward returns logits (the original log_softmax: the same
cross-entropy).

Parameters carry the original's names and shapes (its state dicts load) and are created in its order, so
the same seed should draw the same initial weights (not checked against the original, which needs einops);
linear layers keep PyTorch's default initialisation.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from ..registry import MODELS
from ..sections import ModelConfig
from .convnet import image_shape


class ViTConfig(ModelConfig):
    """Patch size, width, depth, heads (of `dim_head` each), MLP width, dropouts and pooling."""

    kind: Literal["vit"] = "vit"
    patch: PositiveInt = 4
    dim: PositiveInt = 512
    depth: PositiveInt = 6
    heads: PositiveInt = 8
    dim_head: PositiveInt = 64
    mlp_dim: PositiveInt = 512
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1  # after the attention projection and in the MLP
    emb_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1  # on the embedded tokens
    pool: Literal["cls", "mean"] = "cls"


class Patchify(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C): row-major patches, each flattened as (p1, p2, c)."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(dim_head)) v per head, heads concatenated, projected
    back to `dim` (no projection when one head spans the whole width, as the original)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)  # a module, so that hooks can read the attention maps
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        project = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (b, h, n, d)
        attn = self.attend(q @ k.transpose(-1, -2) * self.scale)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class Block(nn.ModuleList):
    """[PreNorm(attention), PreNorm(MLP)], each added to the residual stream; its output is what is probed."""

    def forward(self, x: Tensor) -> Tensor:
        attn, ff = self
        x = attn(x) + x
        return ff(x) + x


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(
                [
                    PreNorm(dim, Attention(dim, heads, dim_head, dropout)),
                    PreNorm(dim, FeedForward(dim, mlp_dim, dropout)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)
        return x


class ViT(nn.Module):
    """Patch embedding + CLS token + positions -> transformer -> pool -> LayerNorm + Linear."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, cfg: ViTConfig):
        super().__init__()
        c, h, w = input_shape
        p = cfg.patch
        num_patches = (h // p) * (w // p)
        self.to_patch_embedding = nn.Sequential(Patchify(p), nn.Linear(p * p * c, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, cfg.dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.dropout = nn.Dropout(cfg.emb_dropout)
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.dropout)
        self.pool = cfg.pool
        self.to_latent = nn.Identity()  # the pooled embedding, (B, dim)
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, num_classes))

    def forward(self, img: Tensor) -> Tensor:
        x = self.to_patch_embedding(img)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embedding
        x = self.transformer(self.dropout(x))
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return self.mlp_head(self.to_latent(x))

    def probe_layers(self) -> list[str]:
        """The residual stream after each block (B, tokens, dim), then the pooled embedding (B, dim)."""
        return [f"transformer.layers.{i}" for i in range(len(self.transformer.layers))] + ["to_latent"]


@MODELS.register("vit", ViTConfig)
def vit(cfg: ViTConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ViT(image_shape("vit", input_shape, multiple=cfg.patch), num_classes, cfg)
