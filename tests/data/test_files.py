"""Readers of on-disk dataset formats, checked on files written here in the official formats and on MNIST."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shlex
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from learnscope.data.files import find_idx_pair, load_cifar, load_npz, read_idx
from learnscope.data.real import BUNDLED_MNIST
from learnscope.errors import DataError

MNIST_DIR = BUNDLED_MNIST  # the official test split, shipped in the package
# Known MNIST test-set facts: per-class counts (8 has 974, 9 has 1009) and the first ten labels.
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TEST_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- IDX ---


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """IDX encoding of `arr` as specified on yann.lecun.com/exdb/mnist: magic, big-endian dims, payload."""
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(IDX_CODES[code]).tobytes()


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = False) -> Path:
    data = idx_bytes(arr, code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_idx_ubyte_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz=gz)

    got = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, images)

    x, y = find_idx_pair(tmp_path, "train")
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels.astype(np.int64))


@pytest.mark.parametrize("code", sorted(IDX_CODES))
def test_idx_every_dtype(tmp_path: Path, code: int) -> None:
    rng = np.random.default_rng(code)
    ref = (rng.standard_normal((2, 3, 4)) * 50).astype(np.dtype(IDX_CODES[code]).newbyteorder("="))
    got = read_idx(write_idx(tmp_path / "a.idx", ref, code))
    assert got.dtype == ref.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, ref)


def test_idx_big_endian_bytes_by_hand(tmp_path: Path) -> None:
    # int16 (0x0B), 1-D, dim 2, payload 0x0102 = 258 and 0xFFFE = -2, written byte by byte.
    path = tmp_path / "hand.idx"
    path.write_bytes(b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x01\x02\xff\xfe")
    np.testing.assert_array_equal(read_idx(path), np.array([258, -2], dtype=np.int16))


def test_idx_truncated_and_trailing(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((1, 28, 28), dtype=np.uint8))
    truncated = tmp_path / "truncated"
    truncated.write_bytes(data[:-1])
    with pytest.raises(DataError, match=r"truncated.*expected 784 bytes, got 783") as e:
        read_idx(truncated)
    assert str(truncated) in str(e.value)

    short_header = tmp_path / "short_header"
    short_header.write_bytes(data[:10])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(short_header)

    trailing = tmp_path / "trailing"
    trailing.write_bytes(data + b"\x00\x00")
    with pytest.raises(DataError, match="2 trailing bytes"):
        read_idx(trailing)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03"])
def test_idx_bad_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(magic + b"\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="IDX") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_idx_bad_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 7))
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(truncated)

    corrupt = tmp_path / "c.gz"
    corrupt.write_bytes(compressed[:12] + bytes(b ^ 0xFF for b in compressed[12:]))
    with pytest.raises(DataError, match="gzip"):
        read_idx(corrupt)


def test_find_idx_pair_alternative_spelling_and_errors(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as e:
        find_idx_pair(tmp_path, "t10k")
    assert str(tmp_path) in str(e.value)

    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4], dtype=np.uint8), gz=True)
    with pytest.raises(DataError, match="3 labels for 2 images"):
        find_idx_pair(tmp_path, "t10k")

    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 1], dtype=np.uint8), gz=True)
    x, y = find_idx_pair(tmp_path, "t10k")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [3, 1])

    write_idx(tmp_path / "flat-images-idx3-ubyte", images.reshape(2, -1))
    write_idx(tmp_path / "flat-labels-idx1-ubyte", np.array([3, 1], dtype=np.uint8))
    with pytest.raises(DataError, match="3-D"):
        find_idx_pair(tmp_path, "flat")

    with pytest.raises(DataError, match="nowhere"):
        find_idx_pair(tmp_path / "nowhere", "train")


def test_real_mnist_test_split() -> None:
    x, y = find_idx_pair(MNIST_DIR, "t10k")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9
    assert np.bincount(y, minlength=10).tolist() == MNIST_TEST_CLASS_COUNTS
    assert y[:10].tolist() == MNIST_TEST_FIRST_LABELS


# --- CIFAR ---

CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_TARBALL = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_TRAIN = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
CIFAR_TEST = {"cifar10": ["test_batch"], "cifar100": ["test"]}


def cifar_batch(rng: np.random.Generator, n: int, name: str) -> dict[bytes, object]:
    """One batch dict as in the official files: bytes keys, CHW uint8 rows, labels as lists of ints."""
    d: dict[bytes, object] = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if name == "cifar10":
        d[b"labels"] = rng.integers(0, 10, size=n).tolist()
    else:
        d[b"fine_labels"] = rng.integers(0, 100, size=n).tolist()
        d[b"coarse_labels"] = rng.integers(0, 20, size=n).tolist()
    return d


def py2_str(b: bytes) -> bytes:
    """A Python 2 `str` in pickle protocol 2 (SHORT_BINSTRING / BINSTRING), read back as bytes."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def py2_pickle(d: dict[bytes, object]) -> bytes:
    """Protocol-2 pickle of a batch dict as Python 2 + numpy 1.x wrote the official CIFAR files."""
    out = [b"\x80\x02}("]
    for key, value in d.items():
        out.append(py2_str(key))
        if isinstance(value, np.ndarray):
            assert value.dtype == np.uint8 and value.ndim == 2
            out += [
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
                + py2_str(b"b")
                + b"\x87R(",
                b"K\x01J"
                + struct.pack("<i", value.shape[0])
                + b"J"
                + struct.pack("<i", value.shape[1])
                + b"\x86",
                b"cnumpy\ndtype\n" + py2_str(b"u1") + b"K\x00K\x01\x87R(K\x03" + py2_str(b"|"),
                b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + py2_str(value.tobytes()) + b"tb",
            ]
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            out.append(b"](" + b"".join(b"J" + struct.pack("<i", v) for v in value) + b"e")
        elif isinstance(value, list):
            out.append(b"](" + b"".join(py2_str(v) for v in value) + b"e")
        else:
            out.append(py2_str(value))
    out.append(b"u.")
    return b"".join(out)


def write_cifar(root: Path, name: str, payloads: dict[str, bytes], layout: str) -> Path:
    """Write batch files in the official layout; returns the path to hand to `load_cifar`."""
    folder = CIFAR_FOLDER[name]
    root.mkdir(parents=True, exist_ok=True)
    if layout == "tar":
        tar_path = root / CIFAR_TARBALL[name]
        with tarfile.open(tar_path, "w:gz") as tar:
            for member in [*payloads, "readme.html"]:
                data = payloads.get(member, b"<html></html>")
                info = tarfile.TarInfo(f"{folder}/{member}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return tar_path
    (root / folder).mkdir()
    for member, data in payloads.items():
        (root / folder / member).write_bytes(data)
    return root / folder if layout == "folder" else root


def chw_to_hwc_reference(data: np.ndarray) -> np.ndarray:
    """x[i, h, w, c] = data[i, c * 1024 + h * 32 + w], by explicit index arithmetic."""
    h, w, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    return data[:, c * 1024 + h * 32 + w]


@pytest.mark.parametrize("layout", ["folder", "parent", "tar"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("writer", ["py3", "py2"])
def test_cifar_round_trip(tmp_path: Path, name: str, layout: str, writer: str) -> None:
    rng = np.random.default_rng(1)
    members = CIFAR_TRAIN[name] + CIFAR_TEST[name]
    batches = {m: cifar_batch(rng, n, name) for m, n in zip(members, [3, 4, 2, 5, 1, 6], strict=False)}
    dump = py2_pickle if writer == "py2" else (lambda d: pickle.dumps(d, protocol=2))
    payloads = {m: dump(d) for m, d in batches.items()}
    for m, d in batches.items():  # the hand-made Python 2 pickles are what the stdlib unpickler reads
        back = pickle.loads(payloads[m], encoding="bytes")
        assert back.keys() == d.keys()
        np.testing.assert_array_equal(back[b"data"], d[b"data"])

    out = load_cifar(write_cifar(tmp_path, name, payloads, layout), name)  # type: ignore[arg-type]

    label_keys = {"": b"labels"} if name == "cifar10" else {"": b"fine_labels", "_coarse": b"coarse_labels"}
    assert set(out) == {f"x_{s}" for s in ("train", "test")} | {
        f"y_{s}{k}" for s in ("train", "test") for k in label_keys
    }
    for split, split_members in (("train", CIFAR_TRAIN[name]), ("test", CIFAR_TEST[name])):
        data = np.concatenate([batches[m][b"data"] for m in split_members])
        x = out[f"x_{split}"]
        assert x.dtype == np.uint8 and x.shape == (len(data), 32, 32, 3)
        np.testing.assert_array_equal(x, chw_to_hwc_reference(data))
        # One pixel by hand: sample 0, row 5, column 7, green channel.
        assert x[0, 5, 7, 1] == data[0, 1024 + 5 * 32 + 7]
        for suffix, key in label_keys.items():
            y = out[f"y_{split}{suffix}"]
            assert y.dtype == np.int64
            assert y.tolist() == [label for m in split_members for label in batches[m][key]]


def good_cifar10(tmp_path: Path, **override: bytes) -> Path:
    rng = np.random.default_rng(2)
    payloads = {m: pickle.dumps(cifar_batch(rng, 2, "cifar10"), protocol=2) for m in CIFAR_TRAIN["cifar10"]}
    payloads["test_batch"] = pickle.dumps(cifar_batch(rng, 2, "cifar10"), protocol=2)
    payloads.update(override)
    return write_cifar(tmp_path, "cifar10", payloads, "folder")


class System:
    """Unpickles as `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Eval:
    """Unpickles as `eval(source)`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (eval, (self.source,))


class SubprocessCall:
    """Unpickles as `subprocess.call(argv)`."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):
        return (subprocess.call, (self.argv,))


@pytest.mark.skipif(os.name != "posix", reason="uses `touch`")
@pytest.mark.parametrize(
    ("make", "protocol", "forbidden"),
    [
        (lambda marker: System(f"touch {shlex.quote(str(marker))}"), 2, f"{os.system.__module__}.system"),
        (
            lambda marker: Eval(f"__import__('os').system('touch {shlex.quote(str(marker))}')"),
            2,
            "builtins.eval",
        ),
        (lambda marker: SubprocessCall(["touch", str(marker)]), 4, "subprocess.call"),
    ],
)
def test_cifar_malicious_pickle_is_refused(tmp_path: Path, make, protocol: int, forbidden: str) -> None:
    # Control: the payload really does create its marker when unpickled by the stdlib.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps({b"data": make(control)}, protocol=protocol))
    assert control.exists()

    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": make(marker), b"labels": [0]}, protocol=protocol)
    path = good_cifar10(tmp_path / "evil", data_batch_1=evil)
    with pytest.raises(DataError, match=f"forbidden global {forbidden}") as e:
        load_cifar(path, "cifar10")
    assert "data_batch_1" in str(e.value)
    assert not marker.exists()

    # The same payload inside the official tarball.
    tar_path = write_cifar(tmp_path / "tar", "cifar10", {"data_batch_1": evil}, "tar")
    with pytest.raises(DataError, match=f"forbidden global {forbidden}"):
        load_cifar(tar_path, "cifar10")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2, 3], "expected a pickled dict, got list"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "missing key 'labels'"),
        ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\) uint8"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"\(N, 3072\) uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 'labels' for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"outside \[0, 10\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, -1]}, r"outside \[0, 10\)"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1.5]}, "list of ints"),
    ],
)
def test_cifar_malformed_batch(tmp_path: Path, batch: object, message: str) -> None:
    path = good_cifar10(tmp_path, test_batch=pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=message) as e:
        load_cifar(path, "cifar10")
    assert "test_batch" in str(e.value)


def test_cifar_str_keys_accepted(tmp_path: Path) -> None:
    batch = {"data": np.full((2, 3072), 7, np.uint8), "labels": [9, 0]}
    out = load_cifar(good_cifar10(tmp_path, test_batch=pickle.dumps(batch, protocol=4)), "cifar10")
    assert out["y_test"].tolist() == [9, 0] and (out["x_test"] == 7).all()


def test_cifar_missing_and_truncated(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_cifar(tmp_path / "absent", "cifar10")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar(tmp_path, "cifar10")  # empty directory

    good = good_cifar10(tmp_path / "dir")
    (good / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar(good, "cifar10")

    truncated_pickle = good_cifar10(tmp_path / "tp")
    (truncated_pickle / "test_batch").write_bytes((truncated_pickle / "test_batch").read_bytes()[:-50])
    with pytest.raises(DataError, match="malformed pickle"):
        load_cifar(truncated_pickle, "cifar10")

    rng = np.random.default_rng(3)
    payloads = {m: pickle.dumps(cifar_batch(rng, 2, "cifar100"), protocol=2) for m in ("train", "test")}
    lacking = write_cifar(tmp_path / "lack", "cifar100", {"train": payloads["train"]}, "tar")
    with pytest.raises(DataError, match=r"lacks.*cifar-100-python/test"):
        load_cifar(lacking, "cifar100")

    tar_path = write_cifar(tmp_path / "trunc", "cifar100", payloads, "tar")
    tar_path.write_bytes(tar_path.read_bytes()[: tar_path.stat().st_size // 2])  # cuts into a member
    with pytest.raises(DataError, match="tar archive") as e:
        load_cifar(tar_path, "cifar100")
    assert str(tar_path) in str(e.value)


# --- npz ---


def npz_arrays(n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {
        "x_train": rng.standard_normal((n_train, 4)).astype(np.float32),
        "y_train": rng.integers(0, 3, n_train).astype(np.int32),
        "x_test": rng.standard_normal((n_test, 4)).astype(np.float32),
        "y_test": rng.integers(0, 3, n_test).astype(np.uint8),
    }


def test_npz_round_trip(tmp_path: Path) -> None:
    arrays = npz_arrays()
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays, extra=np.arange(3))
    out = load_npz(path)
    assert set(out) == {*arrays, "extra"}
    for key, ref in arrays.items():
        np.testing.assert_array_equal(out[key], ref)
    assert out["y_train"].dtype == np.int64 and out["y_test"].dtype == np.int64
    assert out["x_train"].dtype == np.float32


def test_npz_missing_key(tmp_path: Path) -> None:
    arrays = npz_arrays()
    del arrays["y_test"]
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"missing array 'y_test' \(present: .*'x_train'") as e:
        load_npz(path)
    assert str(path) in str(e.value)


def test_npz_object_array_is_not_unpickled(tmp_path: Path) -> None:
    arrays = npz_arrays(n_train=1)
    marker = tmp_path / "pwned"
    arrays["x_train"] = np.array([System(f"touch {shlex.quote(str(marker))}")], dtype=object)
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)  # numpy pickles object arrays by default
    with pytest.raises(DataError, match="'x_train' cannot be loaded without pickle"):
        load_npz(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_train": np.zeros(4, np.int64)}, "x_train has 5 rows but y_train has 4"),
        ({"y_test": np.array([0.0, 1.0, 2.0])}, "y_test must hold integer labels"),
        ({"y_test": np.array([0, -1, 2])}, "y_test has negative labels"),
        ({"y_train": np.zeros((5, 1), np.int64)}, "y_train must be 1-D"),
    ],
)
def test_npz_bad_labels(tmp_path: Path, change: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **{**npz_arrays(), **change})
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_npz_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"garbage\.npz"):
        load_npz(garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.arange(3))
    with pytest.raises(DataError, match=r"single \.npy array"):
        load_npz(single)
    with pytest.raises(DataError, match=r"absent\.npz"):
        load_npz(tmp_path / "absent.npz")
