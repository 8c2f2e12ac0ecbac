"""Fully connected models: MLP-L-W of Galanti et al. (TMLR 2023; docs/studies/neural_collapse.md §2) and a
linear classifier.

With depth 1 and width 512 the MLP is the two-layer "MLP D-512-C" of Refinetti et al. 2023 (e.g. 40-512-10
on MNIST-1D). PyTorch default initialisation throughout; the caller seeds the global RNG.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal

from pydantic import PositiveInt
from torch import Tensor, nn

from ..registry import MODELS
from ..sections import ModelConfig


class MLPConfig(ModelConfig):
    """MLP-L-W: `depth` hidden blocks of `width` units, optional BatchNorm1d after each Linear."""

    kind: Literal["mlp"] = "mlp"
    depth: PositiveInt = 1
    width: PositiveInt = 512
    batchnorm: bool = False
    bias: bool = True  # bias of every Linear, the head included


class LinearConfig(ModelConfig):
    """A linear model on the flattened input (a classifier, or the student of a linear regression)."""

    kind: Literal["linear"] = "linear"
    bias: bool = True
    init: Literal["zeros"] | None = None  # None: PyTorch's default; zeros: start at w = 0 (linear theory)


class MLP(nn.Module):
    """flatten -> depth x [Linear -> (BatchNorm1d) -> ReLU] -> Linear head (Galanti et al. 2023, MLP-L-W)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int,
        width: int,
        batchnorm: bool,
        bias: bool,
        *,
        norm_affine: bool = True,
        head_bias: bool | None = None,
    ):
        """`bias` of the hidden Linears (and of the head unless `head_bias` says otherwise); `norm_affine`:
        BatchNorm's scale and shift (off for a scale-invariant MLP, models/scale_invariant.py)."""
        super().__init__()
        self.flatten = nn.Flatten()
        blocks = []
        prev = in_features
        for _ in range(depth):
            layers: OrderedDict[str, nn.Module] = OrderedDict(linear=nn.Linear(prev, width, bias=bias))
            if batchnorm:
                layers["norm"] = nn.BatchNorm1d(width, affine=norm_affine)
            layers["act"] = nn.ReLU()  # one instance per block, never in place: hooks see what they expect
            blocks.append(nn.Sequential(layers))
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(prev, num_classes, bias=bias if head_bias is None else head_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.flatten(x)))

    def probe_layers(self) -> list[str]:
        """Output of each hidden Linear (pre-BN, pre-ReLU): the embedding the neural-collapse code probes."""
        return [f"blocks.{i}.linear" for i in range(len(self.blocks))]

    def post_activation_layers(self) -> list[str]:
        """Output of each block's ReLU, an alternative embedding for probes."""
        return [f"blocks.{i}.act" for i in range(len(self.blocks))]


class LinearClassifier(nn.Module):
    """flatten -> Linear(D, C)."""

    def __init__(self, in_features: int, num_classes: int, bias: bool):
        super().__init__()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(in_features, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(x))

    def probe_layers(self) -> list[str]:
        return ["head"]


@MODELS.register("mlp", MLPConfig)
def mlp(cfg: MLPConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, cfg.depth, cfg.width, cfg.batchnorm, cfg.bias)


@MODELS.register("linear", LinearConfig)
def linear(cfg: LinearConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model = LinearClassifier(math.prod(input_shape), num_classes, cfg.bias)
    if cfg.init == "zeros":
        for p in model.parameters():
            nn.init.zeros_(p)
    return model
