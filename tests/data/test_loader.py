"""The loader and the batched augmentations, against per-sample reference code."""

import torch

from learnscope.data.dataset import Augment, Split
from learnscope.data.loader import BatchLoader, random_crop, random_flip


def split(n=23):
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n) % 3)


def test_each_epoch_is_a_permutation_and_drop_last_counts():
    loader = BatchLoader(split(), 5, seed=0)
    assert loader.steps_per_epoch == 5
    seen = torch.cat([loader.next()[0].flatten() for _ in range(5)])
    assert sorted(seen.tolist()) == list(range(23)) and loader.epoch == 1
    second = torch.cat([loader.next()[0].flatten() for _ in range(5)])
    assert sorted(second.tolist()) == list(range(23)) and not torch.equal(seen, second)
    dropping = BatchLoader(split(), 5, seed=0, drop_last=True)
    assert dropping.steps_per_epoch == 4
    assert all(len(dropping.next()[0]) == 5 for _ in range(9))


def test_same_seed_same_batches_and_state_round_trip():
    a, b = BatchLoader(split(), 4, seed=3), BatchLoader(split(), 4, seed=3)
    for _ in range(7):
        assert torch.equal(a.next()[0], b.next()[0])
    state = a.state_dict()
    after = [a.next()[0] for _ in range(9)]
    c = BatchLoader(split(), 4, seed=99)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next()[0]) for x in after)


def test_full_batch_returns_everything_each_step():
    loader = BatchLoader(split(), None, seed=0)
    x, _ = loader.next()
    assert loader.steps_per_epoch == 1 and torch.equal(x, split().x)


def reference_crop(x, padding, tops, lefts, fill):
    out = torch.empty_like(x)
    b, c, h, w = x.shape
    for i in range(b):
        padded = fill.view(c, 1, 1).expand(c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, padding : padding + h, padding : padding + w] = x[i]
        out[i] = padded[:, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w]
    return out


def test_random_crop_matches_a_per_image_loop():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 6, 5)
    fill = torch.tensor([-1.0, 0.5, 2.0])
    gen = torch.Generator().manual_seed(7)
    out = random_crop(x, 2, gen, fill)
    replay = torch.Generator().manual_seed(7)
    tops = torch.randint(0, 5, (16,), generator=replay)
    lefts = torch.randint(0, 5, (16,), generator=replay)
    assert torch.equal(out, reference_crop(x, 2, tops, lefts, fill))
    assert (tops != 2).any()  # the test exercises real shifts


def test_random_flip_mirrors_about_half():
    x = torch.arange(4 * 1000, dtype=torch.float32).view(1000, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == x[:, 0, 0, 3]).float()
    assert torch.equal(out[flipped.bool()], x[flipped.bool()].flip(-1))
    assert torch.equal(out[~flipped.bool()], x[~flipped.bool()])
    assert 0.45 < flipped.mean().item() < 0.55


def test_loader_applies_augmentation_only_when_active():
    data = Split(torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
    plain = BatchLoader(data, None, seed=0, augment=Augment())
    assert torch.equal(plain.next()[0], data.x)
    flipping = BatchLoader(data, None, seed=0, augment=Augment(flip=True))
    assert not torch.equal(flipping.next()[0], data.x)
