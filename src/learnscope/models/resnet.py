"""ResNet-18, CIFAR variant: a 3x3 stride-1 stem and no max-pool (He et al. 2016; as in kuangliu/pytorch-cifar
and the timm model Refinetti et al. 2023 patch: docs/studies/increasing_complexity.md §4).

PyTorch default initialisation; the caller seeds the global RNG.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import PositiveInt
from torch import Tensor, nn

from ..registry import MODELS
from ..sections import ModelConfig
from .convnet import image_shape


class ResNet18Config(ModelConfig):
    """ResNet-18 with stage widths k, 2k, 4k, 8k (k = 64: the standard 11,173,962-parameter CIFAR model)."""

    kind: Literal["resnet18"] = "resnet18"
    width: PositiveInt = 64


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN projection where the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm=nn.BatchNorm2d(c_out)
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: Conv3x3-BN-ReLU stem, 4 stages of 2 BasicBlocks (strides 1,2,2,2), pool, Linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        k = width
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, k, 3, padding=1, bias=False),
                norm=nn.BatchNorm2d(k),
                act=nn.ReLU(),
            )
        )
        self.layer1 = nn.Sequential(BasicBlock(k, k, 1), BasicBlock(k, k, 1))
        self.layer2 = nn.Sequential(BasicBlock(k, 2 * k, 2), BasicBlock(2 * k, 2 * k, 1))
        self.layer3 = nn.Sequential(BasicBlock(2 * k, 4 * k, 2), BasicBlock(4 * k, 4 * k, 1))
        self.layer4 = nn.Sequential(BasicBlock(4 * k, 8 * k, 2), BasicBlock(8 * k, 8 * k, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(8 * k, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(self.flatten(self.pool(x)))

    def probe_layers(self) -> list[str]:
        """Output of the stem and of each BasicBlock (post-ReLU)."""
        return ["stem"] + [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]


@MODELS.register("resnet18", ResNet18Config)
def resnet18(cfg: ResNet18Config, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c_in, _, _ = image_shape("resnet18", input_shape)
    return ResNet18(c_in, num_classes, cfg.width)
