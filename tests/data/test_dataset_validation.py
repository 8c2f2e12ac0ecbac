"""`validate_dataset`: an empty split or non-finite values are a one-line DataError naming the split, before a
run writes anything; and the npz loader refuses an empty split itself, naming the file and the key."""

import re

import numpy as np
import pytest
import torch

from learnscope.config import Config
from learnscope.data import Split, build_data, from_tensors, validate_dataset
from learnscope.errors import DataError


def tensors(n_train: int = 12, n_test: int = 6) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(n_train, 4, generator=gen),
        torch.arange(n_train) % 3,
        torch.randn(n_test, 4, generator=gen),
        torch.arange(n_test) % 3,
    )


def refused(data, message: str) -> None:
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        validate_dataset(data)


def test_a_good_dataset_passes():
    validate_dataset(from_tensors(*tensors()))
    validate_dataset(build_data(Config().data))  # the bundled digits


def test_nan_in_the_training_inputs_is_counted_and_named():
    x_train, y_train, x_test, y_test = tensors()
    x_train[1, 2] = x_train[5, 0] = x_train[7, 3] = float("nan")
    refused(
        from_tensors(x_train, y_train, x_test, y_test),
        "data: 3 non-finite values in the inputs of the training split (x_train)",
    )


def test_inf_in_an_evaluation_set_is_named():
    x_train, y_train, x_test, y_test = tensors()
    x_test[0, 0] = -float("inf")
    refused(
        from_tensors(x_train, y_train, x_test, y_test),
        "data: 1 non-finite value in the inputs of evaluation set 'test' (x_test)",
    )


def test_non_finite_float_targets_are_refused():
    data = from_tensors(*tensors())
    y = torch.zeros(len(data.train))
    y[3] = float("nan")
    data.evals["test"] = Split(data.evals["test"].x, torch.zeros(len(data.evals["test"])))
    data.train = Split(data.train.x, y)
    refused(data, "data: 1 non-finite value in the targets of the training split (y_train)")


def test_empty_splits_are_named():
    x_train, y_train, x_test, y_test = tensors()
    refused(from_tensors(x_train[:0], y_train[:0], x_test, y_test), "data: the training split is empty")
    refused(from_tensors(x_train, y_train, x_test[:0], y_test[:0]), "data: evaluation set 'test' is empty")


def test_npz_with_an_empty_training_split_names_the_file_and_key(tmp_path):
    path = tmp_path / "empty.npz"
    x_test = np.zeros((5, 1, 4, 4), np.float32)
    np.savez(path, x_train=x_test[:0], y_train=np.zeros(0, np.int64), x_test=x_test, y_test=np.arange(5))
    cfg = Config().override("data=npz", f"data.path={path}").data
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: x_train has 0 rows"):
        build_data(cfg)


def test_npz_non_finite_inputs_are_counted_in_the_file(tmp_path):
    """Counted before normalisation, which would spread the one NaN over its whole channel."""
    path = tmp_path / "nan.npz"
    x = np.ones((8, 3), np.float32)
    x[3, 2] = np.nan
    np.savez(path, x_train=x, y_train=np.arange(8) % 2, x_test=np.ones((4, 3)), y_test=np.arange(4) % 2)
    cfg = Config().override("data=npz", f"data.path={path}").data
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: 1 non-finite value in x_train$"):
        build_data(cfg)
