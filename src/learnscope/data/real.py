"""Real datasets, registered by kind: digits, mnist1d (both embedded), mnist / fashion_mnist (IDX files),
cifar10 / cifar100 (official python batches), npz (any arrays). Each builder reads raw arrays and hands them
to the shared `prepare`."""

from __future__ import annotations

import contextlib
import importlib.util
import random
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PositiveInt

from .. import fetch
from ..errors import DataError
from ..registry import DATA
from . import files
from .dataset import _SPLIT, Dataset, FiniteDataConfig, data_rng, prepare

# CIFAR-10 in two super-classes, as the clones study's original code: {airplane, automobile, bird, ship,
# truck} -> 0, {cat, deer, dog, frog, horse} -> 1.
CIFAR10_COARSE = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])


class DigitsConfig(FiniteDataConfig):
    """scikit-learn's bundled 8x8 digits (1,797 images), split into train/test stratified by class."""

    kind: Literal["digits"] = "digits"
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.3


@cache
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (N, 8, 8) values 0..16 and labels, read from the CSV that scikit-learn ships
    (the file `load_digits` reads), without importing scikit-learn (two seconds of start-up)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits data set needs scikit-learn installed (pip install scikit-learn)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


@DATA.register("digits", DigitsConfig)
def digits(cfg: DigitsConfig) -> Dataset:
    images, y = digits_arrays()
    x = (images / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    train, test = stratified_split(y, cfg.test_fraction, data_rng(cfg.seed, _SPLIT))
    return prepare(cfg, x[train], y[train], x[test], y[test], num_classes=10)


def stratified_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Indices (train, test) with round(test_fraction * n_c) test samples of each class c."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class MNIST1DConfig(FiniteDataConfig):
    """MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package; signals of shape (1, 40)."""

    kind: Literal["mnist1d"] = "mnist1d"
    num_samples: PositiveInt = 5000  # the package's default: 4000 train / 1000 test
    train_split: Annotated[float, Field(gt=0, lt=1)] = 0.8
    generator_seed: int = 42  # the package's seed for the frozen data set


@cache
def _mnist1d_arrays(num_samples: int, train_split: float, seed: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    with _global_rng_restored():  # make_dataset reseeds numpy's and Python's global generators
        d = make_dataset(args)
    return d["x"].astype(np.float32), d["y"], d["x_test"].astype(np.float32), d["y_test"]


@contextlib.contextmanager
def _global_rng_restored():
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@DATA.register("mnist1d", MNIST1DConfig)
def mnist1d(cfg: MNIST1DConfig) -> Dataset:
    x, y, xt, yt = _mnist1d_arrays(cfg.num_samples, cfg.train_split, cfg.generator_seed)
    return prepare(cfg, x[:, None], y, xt[:, None], yt, num_classes=10)


# MNIST's official test split ships inside the package (source, licence, checksums: its README.md there).
BUNDLED_MNIST = Path(__file__).parent / "bundled" / "mnist"


class IDXConfig(FiniteDataConfig):
    """MNIST or Fashion-MNIST from IDX files (raw or .gz) in `path`.

    `train_prefix`/`test_prefix` name the file pairs (`train-images-idx3-ubyte`, ...). When both name the same
    pair, `split_at` cuts it: the first `split_at` samples train, the rest test (MNIST's test split alone).
    Without `path`, MNIST's t10k-only configs read the official test split bundled with learnscope (always: a
    fetched copy holds the same bytes, and their runs keep reading the files they read); the training split
    and Fashion-MNIST come from the copy `learnscope data fetch` verified in the data directory.
    """

    kind: Literal["mnist", "fashion_mnist"] = "mnist"
    path: Path | None = None
    train_prefix: str = "train"
    test_prefix: str = "t10k"
    split_at: PositiveInt | None = None


def _idx_folder(cfg: IDXConfig) -> Path:
    if cfg.path is not None:
        return cfg.path
    if cfg.kind == "mnist" and cfg.train_prefix == cfg.test_prefix == "t10k":
        return BUNDLED_MNIST
    fetched = fetch.fetched_path(cfg.kind)
    if fetched is not None:
        return fetched
    if cfg.kind != "mnist":
        raise DataError(f"data.path is required for {cfg.kind} unless fetched: {fetch.fetch_hint(cfg.kind)}")
    raise DataError(
        f"the bundled MNIST is the official test split only: {fetch.fetch_hint('mnist')}, set data.path to a "
        'folder with the training files, or data.train_prefix = data.test_prefix = "t10k" and data.split_at '
        "(e.g. 8000)"
    )


def _idx(cfg: IDXConfig) -> Dataset:
    folder = _idx_folder(cfg)
    if cfg.train_prefix == cfg.test_prefix:
        if cfg.split_at is None:
            raise DataError(f"data.split_at is needed when train and test both read {cfg.train_prefix!r}")
        x, y = files.find_idx_pair(folder, cfg.train_prefix)
        if not 0 < cfg.split_at < len(y):
            raise DataError(f"data.split_at={cfg.split_at} must lie in (0, {len(y)})")
        x_train, y_train, x_test, y_test = (
            x[: cfg.split_at],
            y[: cfg.split_at],
            x[cfg.split_at :],
            y[cfg.split_at :],
        )
    else:
        if cfg.split_at is not None:
            raise DataError("data.split_at applies only when train_prefix equals test_prefix")
        x_train, y_train = files.find_idx_pair(folder, cfg.train_prefix)
        x_test, y_test = files.find_idx_pair(folder, cfg.test_prefix)
    return prepare(cfg, x_train[:, None], y_train, x_test[:, None], y_test, num_classes=10)


DATA.register("mnist", IDXConfig)(_idx)
DATA.register("fashion_mnist", IDXConfig)(_idx)


class CIFARConfig(FiniteDataConfig):
    """CIFAR-10/100 from the official python batch directory, its parent, or the official .tar.gz.

    Without `path`: the copy `learnscope data fetch` verified in the data directory (data/fetch.py).
    `coarse`: CIFAR-100's 20 super-classes, or CIFAR-10 in 2 classes (the clones study's mapping)."""

    kind: Literal["cifar10", "cifar100"] = "cifar10"
    path: Path | None = None  # None is left out of the config's JSON: runs with a path keep their hash
    coarse: bool = False


def _cifar(cfg: CIFARConfig) -> Dataset:
    path = cfg.path if cfg.path is not None else fetch.fetched_path(cfg.kind)
    if path is None:
        raise DataError(f"data.path is required for {cfg.kind} unless fetched: {fetch.fetch_hint(cfg.kind)}")
    arrays = files.load_cifar(path, cfg.kind)
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    num_classes = 10 if cfg.kind == "cifar10" else 100
    if cfg.coarse and cfg.kind == "cifar10":
        y_train, y_test, num_classes = CIFAR10_COARSE[y_train], CIFAR10_COARSE[y_test], 2
    elif cfg.coarse:
        y_train, y_test, num_classes = arrays["y_train_coarse"], arrays["y_test_coarse"], 20
    to_nchw = (0, 3, 1, 2)
    return prepare(
        cfg,
        arrays["x_train"].transpose(to_nchw),
        y_train,
        arrays["x_test"].transpose(to_nchw),
        y_test,
        num_classes,
    )


DATA.register("cifar10", CIFARConfig)(_cifar)
DATA.register("cifar100", CIFARConfig)(_cifar)


class NPZConfig(FiniteDataConfig):
    """Arrays `x_train, y_train, x_test, y_test` from an .npz file. Images as NCHW or NHWC (`layout`)."""

    kind: Literal["npz"] = "npz"
    path: Path
    layout: Literal["auto", "nchw", "nhwc"] = "auto"
    num_classes: PositiveInt | None = None  # default: 1 + the largest label


@DATA.register("npz", NPZConfig)
def npz(cfg: NPZConfig) -> Dataset:
    arrays = files.load_npz(cfg.path)
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{cfg.path}: x_train {x_train.shape[1:]} and x_test {x_test.shape[1:]} differ in shape"
        )
    if x_train.ndim == 4 and _is_nhwc(x_train.shape, cfg.layout):
        x_train, x_test = x_train.transpose(0, 3, 1, 2), x_test.transpose(0, 3, 1, 2)
    num_classes = cfg.num_classes or int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return prepare(cfg, x_train, arrays["y_train"], x_test, arrays["y_test"], num_classes)


def _is_nhwc(shape: tuple[int, ...], layout: str) -> bool:
    if layout != "auto":
        return layout == "nhwc"
    return shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)
