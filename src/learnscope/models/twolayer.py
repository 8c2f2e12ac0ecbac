"""The two-layer network `TwoLayer` of Refinetti et al. 2023 (docs/studies/increasing_complexity.md §4).

flatten -> Linear(D, K) -> ReLU -> Linear(K, C), both layers with biases, PyTorch default initialisation (the
caller seeds the global RNG). The original feeds grayscale 32x32 CIFAR images flattened to D = 1024 (here:
`data.grayscale=true`) and uses K = 512 on CIFAR-10, K = 2048 on CIFAR-100 and the coarse-label sets. Its
layers keep the original's names (`fc1`, `fc2`), so the original's state dicts load. The original returns
log_softmax; this returns logits, which give the same cross-entropy.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import PositiveInt
from torch import Tensor, nn

from ..registry import MODELS
from ..sections import ModelConfig


class TwoLayerConfig(ModelConfig):
    """K hidden ReLU units: 512 (the original on CIFAR-10), 2048 (its CIFAR-100 and coarse-label runs)."""

    kind: Literal["twolayer"] = "twolayer"
    width: PositiveInt = 512


class TwoLayer(nn.Module):
    """flatten -> fc1 (D -> K) -> ReLU -> fc2 (K -> C)."""

    def __init__(self, in_features: int, num_classes: int, width: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.flatten(x))))

    def probe_layers(self) -> list[str]:
        """The hidden layer's pre-activation (as the MLP's `probe_layers`)."""
        return ["fc1"]

    def post_activation_layers(self) -> list[str]:
        return ["act"]


@MODELS.register("twolayer", TwoLayerConfig)
def twolayer(cfg: TwoLayerConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return TwoLayer(math.prod(input_shape), num_classes, cfg.width)
