"""The registered datasets and the shared preparation: splits, subsets, label noise, normalisation, views."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from learnscope.config import Config
from learnscope.data import build_data
from learnscope.data.dataset import add_label_noise, data_rng, from_tensors
from learnscope.data.real import BUNDLED_MNIST, digits_arrays
from learnscope.errors import DataError


def data(**fields):
    return build_data(Config().override(*(f"data.{k}={v}" for k, v in fields.items())).data)


def test_digits_equal_scikit_learn_and_split_is_stratified():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = digits_arrays()
    assert np.array_equal(x, bunch.images) and np.array_equal(y, bunch.target)
    d = data(normalize="false")
    assert len(d.train) + len(d.evals["test"]) == 1797
    test_counts = torch.bincount(d.evals["test"].y).numpy()
    assert np.array_equal(test_counts, np.round(0.3 * np.bincount(y)).astype(int))
    assert d.input_shape == (1, 8, 8) and d.train.x.max() == 1.0
    assert torch.equal(data(seed=1).train.x, data(seed=1).train.x)
    assert not torch.equal(data(seed=1).train.y, data(seed=2).train.y)


def test_mnist1d_is_the_package_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    d = build_data(Config().override("data=mnist1d", "data.normalize=false").data)
    ref = make_dataset(get_dataset_args())
    assert d.input_shape == (1, 40) and len(d.train) == 4000 and len(d.evals["test"]) == 1000
    assert np.allclose(d.train.x[:, 0].numpy(), ref["x"], atol=1e-6)
    assert np.array_equal(d.evals["test"].y.numpy(), ref["y_test"])


def test_normalisation_uses_train_statistics_per_channel():
    d = data()
    assert d.train.x.mean().item() == pytest.approx(0, abs=1e-5)
    assert d.train.x.std().item() == pytest.approx(1, abs=1e-3)
    flat = data(flatten="true")
    assert flat.input_shape == (64,) and torch.allclose(flat.train.x, d.train.x.flatten(1))


def test_subset_per_class():
    d = data(subset_per_class=20)
    assert torch.bincount(d.train.y).tolist() == [20] * 10
    with pytest.raises(DataError, match="has only"):
        data(subset_per_class=500)


def test_label_noise_moves_the_stated_fraction_to_other_classes():
    d = data(label_noise=0.25, seed=3)
    n = len(d.train)
    assert d.noisy.sum().item() == round(0.25 * n)
    changed = d.train.y != d.true_train_labels
    assert torch.equal(changed, d.noisy)  # every chosen label moved, none else
    again = data(label_noise=0.25, seed=3)
    assert torch.equal(again.train.y, d.train.y)
    # Targets are spread over the other classes, roughly uniformly.
    rng = data_rng(0, 1)
    big = from_tensors(
        torch.zeros(20000, 1), torch.zeros(20000, dtype=torch.long), torch.zeros(1, 1), torch.tensor([3])
    )
    counts = torch.bincount(add_label_noise(big, 0.9, rng).train.y, minlength=4)
    assert counts[0] == 2000 and all(abs(c - 6000) < 300 for c in counts[1:].tolist())


def test_label_noise_subsets_are_reported_by_the_evaluation_probe():
    cfg = Config().override("data.label_noise=0.4", "train.steps=2", "device=cpu")
    from learnscope import run

    record = run(cfg, None, quiet=True).records[-1]
    for name in ("train", "test", "train_clean", "train_noisy", "train_noisy_true"):
        assert f"{name}/acc" in record
    n_noisy = round(0.4 * 1258)
    mixed = (record["train_clean/acc"] * (1258 - n_noisy) + record["train_noisy/acc"] * n_noisy) / 1258
    assert record["train/acc"] == pytest.approx(mixed, abs=2e-3)


def test_grayscale_uses_luma_weights():
    x = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 100, 200, 50
    path = _npz(x, x)
    d = build_data(
        Config().override("data=npz", f"data.path={path}", "data.grayscale=true", "data.normalize=false").data
    )
    assert d.input_shape == (1, 4, 4)
    assert d.train.x[0, 0, 0, 0].item() == pytest.approx((0.299 * 100 + 0.587 * 200 + 0.114 * 50) / 255)


def _npz(x_train, x_test, tmp=[None]):  # noqa: B006
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "d.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(len(x_train)) % 2,
        x_test=x_test,
        y_test=np.arange(len(x_test)) % 2,
    )
    return path


def test_npz_nhwc_is_transposed():
    x = np.random.default_rng(0).integers(0, 255, (4, 6, 5, 3), dtype=np.uint8)
    d = build_data(Config().override("data=npz", f"data.path={_npz(x, x)}", "data.normalize=false").data)
    assert d.input_shape == (3, 6, 5)
    assert d.train.x[1, 2, 4, 3].item() == pytest.approx(x[1, 4, 3, 2] / 255)


def test_mnist_from_the_bundled_test_split_alone():
    d = build_data(Config().override("data=mnist", "data.train_prefix=t10k", "data.split_at=8000").data)
    assert len(d.train) == 8000 and len(d.evals["test"]) == 2000 and d.input_shape == (1, 28, 28)
    with pytest.raises(DataError, match="bundled MNIST is the official test split only"):
        build_data(Config().override("data=mnist").data)
    with pytest.raises(DataError, match="train-images"):  # only the t10k files are there
        build_data(Config().override("data=mnist", f"data.path={BUNDLED_MNIST}").data)
    with pytest.raises(DataError, match=r"data\.path is required for fashion_mnist"):
        build_data(Config().override("data=fashion_mnist").data)


def test_the_bundled_mnist_is_the_official_files_listed_in_its_readme():
    import hashlib

    listed = dict(
        reversed(line.split())
        for line in (BUNDLED_MNIST / "README.md").read_text().splitlines()
        if line.strip().endswith(".gz")
    )
    assert set(listed) == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for name, digest in listed.items():
        assert hashlib.sha256((BUNDLED_MNIST / name).read_bytes()).hexdigest() == digest


def test_missing_and_truncated_idx_files(tmp_path):
    with pytest.raises(DataError, match="t10k-images"):
        build_data(
            Config()
            .override("data=mnist", f"data.path={tmp_path}", "data.train_prefix=t10k", "data.split_at=5")
            .data
        )
    images = b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(28 * 28 * 3)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(
        b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10)
    )
    with pytest.raises(DataError, match="truncated"):
        build_data(
            Config()
            .override("data=mnist", f"data.path={tmp_path}", "data.train_prefix=t10k", "data.split_at=5")
            .data
        )


def test_cifar10_builder_on_official_format_files(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 6) for i in range(1, 6)), ("test_batch", 4)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    d = build_data(Config().override("data=cifar10", f"data.path={tmp_path}", "data.normalize=false").data)
    assert d.input_shape == (3, 32, 32) and len(d.train) == 30 and d.num_classes == 10
    first = pickle.loads((root / "data_batch_1").read_bytes())[b"data"][0]
    assert d.train.x[0, 2, 5, 7].item() == pytest.approx(first[2 * 1024 + 5 * 32 + 7] / 255)
    coarse = build_data(Config().override("data=cifar10", f"data.path={tmp_path}", "data.coarse=true").data)
    assert coarse.num_classes == 2 and coarse.train.y[:6].tolist() == [0, 0, 0, 1, 1, 1]


def test_label_noise_modes_permute_and_redraw():
    """permute: the chosen labels are shuffled among themselves (the class counts do not change); redraw:
    each is drawn uniformly, so about 1/C of the chosen keep their class. `noisy` marks the changed ones."""
    for mode in ("permute", "redraw"):
        d = data(label_noise=0.3, label_noise_mode=mode, seed=1)
        changed = d.train.y != d.true_train_labels
        assert torch.equal(changed, d.noisy)
        chosen = round(0.3 * len(d.train))
        assert 0.75 * chosen < int(changed.sum()) < chosen  # ~9/10 of the chosen change (10 classes)
    permuted = data(label_noise=0.3, label_noise_mode="permute", seed=1)
    assert torch.equal(torch.bincount(permuted.train.y), torch.bincount(permuted.true_train_labels))
