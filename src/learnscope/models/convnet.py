"""Convolutional models: CONV-L-W of Galanti et al. (TMLR 2023; docs/studies/neural_collapse.md §2) and the
PyTorch-tutorial LeNet of Refinetti et al. 2023 (docs/studies/increasing_complexity.md §4), made
dimension-generic so that the same LeNet is the small 1-D CNN for MNIST-1D.

PyTorch default initialisation throughout; the caller seeds the global RNG.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import PositiveInt
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import MODELS
from ..sections import ModelConfig


def image_shape(model: str, input_shape: tuple[int, ...], multiple: int = 1) -> tuple[int, int, int]:
    """`(C, H, W)` of a 2-D input whose H and W are multiples of `multiple`, else a one-line ConfigError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[1] % multiple or shape[2] % multiple or min(shape) < 1:
        need = f" with H and W divisible by {multiple}" if multiple > 1 else ""
        raise ConfigError(f"model {model!r} needs a 2-D image input (C, H, W){need}; got input shape {shape}")
    return shape  # type: ignore[return-value]


class ConvConfig(ModelConfig):
    """CONV-L-W: a stride-4 stem, then `depth` 3x3 conv blocks of `width` channels, then a linear head."""

    kind: Literal["conv"] = "conv"
    depth: PositiveInt = 5
    width: PositiveInt = 64


class LeNetConfig(ModelConfig):
    """The tutorial LeNet; its sizes follow the input shape and the number of classes."""

    kind: Literal["lenet"] = "lenet"


class ConvNet(nn.Module):
    """CONV-L-W (Galanti et al. 2023): Conv2x2/2-BN, Conv2x2/2-BN-ReLU, depth x [Conv3x3-BN-ReLU], Linear."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, depth: int, width: int):
        super().__init__()
        c_in, h, w = input_shape
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(c_in, width, 2, stride=2),
                norm1=nn.BatchNorm2d(width),  # no ReLU after the first conv, as in the original code
                conv2=nn.Conv2d(width, width, 2, stride=2),
                norm2=nn.BatchNorm2d(width),
                act=nn.ReLU(),
            )
        )
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv2d(width, width, 3, padding=1),
                        norm=nn.BatchNorm2d(width),
                        act=nn.ReLU(),
                    )
                )
                for _ in range(depth)
            )
        )
        self.flatten = nn.Flatten()
        self.head = nn.Linear(width * (h // 4) * (w // 4), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(self.blocks(self.stem(x))))

    def probe_layers(self) -> list[str]:
        """Output of each 3x3 conv (pre-BN), the full W x H/4 x W/4 map; the stem is not probed."""
        return [f"blocks.{i}.conv" for i in range(len(self.blocks))]

    def post_activation_layers(self) -> list[str]:
        return [f"blocks.{i}.act" for i in range(len(self.blocks))]


class LeNet(nn.Module):
    """The PyTorch-tutorial LeNet (Refinetti et al. 2023): 2 x [Conv5-ReLU-MaxPool2], FC 120, FC 84 (120 if
    C >= 100), head; Conv1d/MaxPool1d for a 1-D signal (C, L) or (L,), Conv2d/MaxPool2d for an image."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)  # (L,): one channel
        if len(shape) not in (2, 3):
            raise ConfigError(
                f"model 'lenet' needs a 1-D (C, L) or 2-D (C, H, W) input; got input shape {input_shape}"
            )
        self.input_shape = shape
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(shape) == 2 else (nn.Conv2d, nn.MaxPool2d)
        spatial = [((n - 4) // 2 - 4) // 2 for n in shape[1:]]  # two valid 5-convs, each followed by a 2-pool
        if min(spatial) < 1:
            raise ConfigError(f"model 'lenet' needs every spatial size >= 14; got input shape {input_shape}")
        hidden = 120 if num_classes >= 100 else 84
        self.features = nn.Sequential(
            OrderedDict(
                conv1=conv(shape[0], 6, 5),
                act1=nn.ReLU(),
                pool1=pool(2),
                conv2=conv(6, 16, 5),
                act2=nn.ReLU(),
                pool2=pool(2),
            )
        )
        self.flatten = nn.Flatten()
        flat = 16
        for n in spatial:
            flat *= n
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(flat, 120), act1=nn.ReLU(), fc2=nn.Linear(120, hidden), act2=nn.ReLU())
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.head(self.classifier(self.flatten(self.features(x))))

    def probe_layers(self) -> list[str]:
        """Outputs of both convs and both hidden FC layers (pre-ReLU)."""
        return ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"]


@MODELS.register("conv", ConvConfig)
def conv(cfg: ConvConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ConvNet(image_shape("conv", input_shape, multiple=4), num_classes, cfg.depth, cfg.width)


@MODELS.register("lenet", LeNetConfig)
def lenet(cfg: LeNetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LeNet(tuple(input_shape), num_classes)
