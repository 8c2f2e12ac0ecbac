"""Finite datasets as tensors in memory, and the preparation every finite dataset shares.

A `Dataset` has a `train` split (what the loader draws batches from) and named evaluation sets (`train`
without augmentation and `test`, for a clone the real test set). Preparation runs in a fixed order on the
raw arrays: subset per class -> grayscale -> pad -> per-channel normalisation (train statistics) -> flatten
-> label noise. Each random choice has its own seeded generator derived from `data.seed`, so changing the
run's seed never changes the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from ..errors import DataError
from ..registry import DATA
from ..sections import DataConfig

# Independent streams derived from data.seed (numpy SeedSequence spawn keys).
_SUBSET, _NOISE, _SPLIT = 0, 1, 2


def data_rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


class FiniteDataConfig(DataConfig):
    """Options shared by every dataset held in memory."""

    seed: int = 0  # data randomness only: split, subset, label noise
    subset_per_class: PositiveInt | None = None  # keep n training samples per class (seeded)
    normalize: bool = True  # per-channel mean/std from the train split
    grayscale: bool = False  # RGB -> luma (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B)
    pad: NonNegativeInt = 0  # zero-pad images on every side (e.g. 2: MNIST 28 -> 32)
    flatten: bool = False
    label_noise: Annotated[float, Field(ge=0, lt=1)] = (
        0.0  # fraction of train labels corrupted, chosen at random
    )
    # How the chosen labels are corrupted. None (the default): each moves to another class, so exactly that
    # fraction is wrong. "permute": the chosen labels are shuffled among themselves (Pezeshki et al.'s code;
    # about 1/C of them keep their class). "redraw": each is drawn anew uniformly over the classes (their
    # paper's wording; likewise about 1/C unchanged). `noisy` marks the labels that did change.
    label_noise_mode: Literal["permute", "redraw"] | None = None
    crop_padding: NonNegativeInt = 0  # augmentation: random crop with this padding (0: off)
    flip: bool = False  # augmentation: random horizontal flip


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Augment:
    """Batched augmentation of training images; `fill` is the normalised value of a black pixel."""

    crop_padding: int = 0
    flip: bool = False
    fill: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


@dataclass
class Dataset:
    """Tensors in memory. Classification: integer labels (N,) and `num_classes` classes. Regression:
    real-valued targets (N, width), and `num_classes` is the width (the models' output size)."""

    train: Split
    evals: dict[str, Split]
    num_classes: int
    augment: Augment = field(default_factory=Augment)
    true_train_labels: torch.Tensor | None = None  # with label noise: the labels before corruption
    noisy: torch.Tensor | None = None  # with label noise: bool mask of the corrupted training labels
    # What generated the data, for probes that compare with it (a teacher's weights): name -> tensor.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def regression(self) -> bool:
        """Real-valued targets (a regression), not class labels."""
        return self.train.y.is_floating_point()

    def to(self, device: torch.device | str) -> Dataset:
        moved = {name: split.to(device) for name, split in self.evals.items() if split is not self.train}
        train = self.train.to(device)
        evals = {name: moved.get(name, train) for name in self.evals}
        fill = None if self.augment.fill is None else self.augment.fill.to(device)
        return replace(
            self,
            train=train,
            evals=evals,
            augment=replace(self.augment, fill=fill),
            true_train_labels=None if self.true_train_labels is None else self.true_train_labels.to(device),
            noisy=None if self.noisy is None else self.noisy.to(device),
            extras={name: t.to(device) for name, t in self.extras.items()},
        )


def build_data(cfg: DataConfig) -> Dataset:
    """The dataset a `data` config section describes."""
    return DATA.builder(cfg.kind)(cfg)


def from_tensors(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
) -> Dataset:
    """A dataset from user tensors, used as they are (the Python API's `data=` argument, and a plugin's data
    kind): integer labels make a classification, float targets (N,) or (N, width) a regression."""
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"{name} split: {len(x)} inputs but {len(y)} labels")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"train inputs {tuple(x_train.shape[1:])} and test inputs {tuple(x_test.shape[1:])} differ"
        )
    if y_train.is_floating_point() != y_test.is_floating_point():
        raise DataError("train and test targets must both be class labels (integers) or both real (floats)")
    if y_train.is_floating_point():  # a regression: targets (N, width), the width is the output size
        y_train, y_test = (y.float().reshape(len(y), -1) for y in (y_train, y_test))
        if y_train.shape[1:] != y_test.shape[1:]:
            raise DataError(
                f"train targets {tuple(y_train.shape[1:])} and test {tuple(y_test.shape[1:])} differ"
            )
        train = Split(x_train.float(), y_train)
        return Dataset(train, {"train": train, "test": Split(x_test.float(), y_test)}, y_train.shape[1])
    train = Split(x_train.float(), y_train.long())
    # max() of an empty tensor raises: count classes over the labels there are, and leave an empty split to
    # validate_dataset, which names it.
    labels = [y.max() for y in (y_train, y_test) if y.numel()]
    num_classes = int(max(labels)) + 1 if labels else 0
    return Dataset(train, {"train": train, "test": Split(x_test.float(), y_test.long())}, num_classes)


def validate_dataset(data: Dataset) -> None:
    """DataError naming the split if one is empty or holds a non-finite input (or float target): a NaN
    pixel otherwise surfaces only as a diverged loss, many steps into a run. One pass per tensor, on any
    device; the bad values are counted only on failure."""
    splits = [("the training split", "train", data.train)]
    splits += [(f"evaluation set {name!r}", name, s) for name, s in data.evals.items() if s is not data.train]
    for what, name, split in splits:
        if split.x.shape[0] == 0 or len(split) == 0:
            raise DataError(f"data: {what} is empty")
        for tensor, role, key in ((split.x, "inputs", f"x_{name}"), (split.y, "targets", f"y_{name}")):
            if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
                continue  # integer labels are finite by construction
            bad = int((~torch.isfinite(tensor)).sum())
            plural = "s" if bad != 1 else ""
            raise DataError(f"data: {bad} non-finite value{plural} in the {role} of {what} ({key})")


def prepare(
    cfg: FiniteDataConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
) -> Dataset:
    """Raw arrays -> Dataset. Images come as (N, C, H, W), signals as (N, C, L); uint8 is scaled to [0, 1]."""
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    for name, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"{cfg.kind}: {name} labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}"
            )

    if cfg.subset_per_class is not None:
        keep = subset_indices(y_train, cfg.subset_per_class, num_classes, data_rng(cfg.seed, _SUBSET))
        x_train, y_train = x_train[keep], y_train[keep]

    xs = [_to_float(x_train), _to_float(x_test)]
    if cfg.grayscale:
        xs = [_grayscale(x, cfg.kind) for x in xs]
    if cfg.pad:
        xs = [_pad(x, cfg.pad, cfg.kind) for x in xs]
    xs, fill = normalise_and_view(cfg, xs, stats_from=xs[0])

    train = Split(xs[0], torch.from_numpy(y_train))
    dataset = Dataset(
        train=train,
        evals={"train": train, "test": Split(xs[1], torch.from_numpy(y_test))},
        num_classes=num_classes,
        augment=Augment(cfg.crop_padding, cfg.flip, fill),
    )
    if cfg.label_noise > 0:
        dataset = add_label_noise(dataset, cfg.label_noise, data_rng(cfg.seed, _NOISE), cfg.label_noise_mode)
    return dataset


def normalise_and_view(
    cfg: FiniteDataConfig, xs: list[torch.Tensor], stats_from: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-channel normalisation of every split with the statistics of `stats_from` (the real train split),
    then the flat view if asked. Also returns the normalised value of a black pixel (the crop's fill)."""
    fill = torch.zeros(xs[0].shape[1]) if xs[0].ndim >= 3 else None
    if cfg.normalize:
        mean, std = channel_stats(stats_from)
        xs = [(x - _bcast(mean, x)) / _bcast(std, x) for x in xs]
        if fill is not None:
            fill = -mean / std
    if cfg.flatten:
        xs = [x.flatten(1) for x in xs]
    if (cfg.crop_padding or cfg.flip) and xs[0].ndim != 4:
        raise DataError(
            f"{cfg.kind}: crop/flip augmentation needs (N, C, H, W) images, got {tuple(xs[0].shape)}"
        )
    return xs, fill


def subset_indices(y: np.ndarray, per_class: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` random indices of each class, in ascending order."""
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise DataError(
                f"subset_per_class={per_class} but class {c} has only {len(idx)} training samples"
            )
        keep.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(keep))


def add_label_noise(
    dataset: Dataset, fraction: float, rng: np.random.Generator, mode: str | None = None
) -> Dataset:
    """Corrupt round(fraction * n) training labels chosen at random: each moved to a different random class
    (mode None), shuffled among themselves ("permute") or drawn anew uniformly ("redraw")."""
    y_np = dataset.train.y.numpy().copy()
    n = len(y_np)
    chosen = rng.choice(n, round(fraction * n), replace=False)
    if mode == "permute":
        y_np[chosen] = y_np[rng.permutation(chosen)]
    elif mode == "redraw":
        y_np[chosen] = rng.integers(0, dataset.num_classes, size=len(chosen))
    else:
        shift = rng.integers(1, dataset.num_classes, size=len(chosen))
        y_np[chosen] = (y_np[chosen] + shift) % dataset.num_classes
    noisy = torch.from_numpy(y_np != dataset.train.y.numpy())
    train = Split(dataset.train.x, torch.from_numpy(y_np))
    evals = {name: (train if split is dataset.train else split) for name, split in dataset.evals.items()}
    return replace(dataset, train=train, evals=evals, true_train_labels=dataset.train.y, noisy=noisy)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over samples and positions (dim 1 is the channel; vectors: per feature)."""
    dims = [0, *range(2, x.ndim)]
    x64 = x.double()
    mean = x64.mean(dim=dims)
    std = x64.std(dim=dims).clamp_min(1e-8)
    return mean.float(), std.float()


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.ndim - 2)))


def _to_float(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def _grayscale(x: torch.Tensor, kind: str) -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{kind}: grayscale needs (N, 3, H, W) images, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _pad(x: torch.Tensor, pad: int, kind: str) -> torch.Tensor:
    if x.ndim != 4:
        raise DataError(f"{kind}: pad needs (N, C, H, W) images, got {tuple(x.shape)}")
    return torch.nn.functional.pad(x, (pad, pad, pad, pad))
