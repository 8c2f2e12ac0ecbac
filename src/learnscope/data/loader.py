"""Batches drawn by index from tensors already on the device, and batched augmentation.

The loader owns two seeded generators: a CPU one for the epoch permutations and one on the data's device
for augmentation. Its whole state (epoch, position, permutation, generator states) goes into checkpoints, so a
resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch

from .dataset import Augment, Split


def steps_per_epoch(n: int, batch_size: int | None, drop_last: bool = False) -> int:
    """The steps of an epoch over `n` samples: one where the batch is the whole split (None, or >= n)."""
    if batch_size is None or batch_size >= n:
        return 1
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class BatchLoader:
    """Shuffled mini-batches (a new permutation each epoch), or the whole split when `batch_size` is None."""

    def __init__(
        self,
        split: Split,
        batch_size: int | None,
        seed: int,
        drop_last: bool = False,
        augment: Augment | None = None,
    ):
        self.split = split
        self.n = len(split)
        self.batch_size = self.n if batch_size is None else min(batch_size, self.n)
        self.full_batch = batch_size is None or batch_size >= self.n
        self.drop_last = drop_last
        self.augment = augment if augment is not None and augment.active else None
        device = split.x.device
        self.perm_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.epoch = 0
        self.position = 0
        self.perm: torch.Tensor | None = None

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n, None if self.full_batch else self.batch_size, self.drop_last)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full_batch:
            x, y = self.split.x, self.split.y
            self.epoch += 1
        else:
            if self.perm is None:
                self.perm = torch.randperm(self.n, generator=self.perm_gen).to(self.split.x.device)
            idx = self.perm[self.position : self.position + self.batch_size]
            # index_select, not x[idx]: the same rows, several times faster on the CPU
            x, y = self.split.x.index_select(0, idx), self.split.y.index_select(0, idx)
            self.position += self.batch_size
            if self.position >= self.steps_per_epoch * self.batch_size:
                self.epoch += 1
                self.position = 0
                self.perm = None
        if self.augment is not None:
            x = augment_batch(x, self.augment, self.aug_gen)
        return x, y

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "perm": None if self.perm is None else self.perm.cpu(),
            "perm_gen": self.perm_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.perm = None if state["perm"] is None else state["perm"].to(self.split.x.device)
        self.perm_gen.set_state(state["perm_gen"])
        self.aug_gen.set_state(state["aug_gen"])


def augment_batch(x: torch.Tensor, augment: Augment, gen: torch.Generator) -> torch.Tensor:
    if augment.crop_padding:
        x = random_crop(x, augment.crop_padding, gen, augment.fill)
    if augment.flip:
        x = random_flip(x, gen)
    return x


def random_crop(
    x: torch.Tensor, padding: int, gen: torch.Generator, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Pad each image by `padding` (with `fill` per channel) and cut an H x W window at a random offset."""
    b, c, h, w = x.shape
    padded = x.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    if fill is not None:
        padded += fill.view(1, c, 1, 1)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    top = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put their broadcast shape first: (B, H, W, C).
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
