"""Pure-numpy readers of on-disk dataset formats (IDX, CIFAR python pickles, npz).

Every reader validates what it reads and raises `DataError` with a one-line message naming the file; loading a
file never runs code from it (CIFAR pickles go through a restricted unpickler).
"""

from __future__ import annotations

import _compat_pickle
import gzip
import io
import math
import pickle
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError
from ..inputs import note_input

__all__ = ["find_idx_pair", "load_cifar", "load_npz", "read_idx"]

# --- IDX (MNIST, Fashion-MNIST, KMNIST) ---

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Read a whole file, decompressing it if it is gzip (detected by content, not by name)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e
    note_input(path)
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip stream ({e})") from e
    except (OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian array, checking magic, dims and payload size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes, header needs 4)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} "
            f"(expected 0x0000 then a dtype code in {sorted(hex(c) for c in _IDX_DTYPES)})"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{path}: truncated IDX payload for shape {dims}: expected {expected} bytes, got {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} trailing bytes after IDX payload for shape {dims} "
            f"(expected {expected} bytes, got {actual})"
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # copies: writable and native-endian


def _find_idx_file(directory: Path, prefix: str, kind: str, idx: str) -> Path:
    """First existing spelling of `{prefix}-{kind}-{idx}-ubyte` (or `.{idx}-ubyte`), raw or `.gz`."""
    candidates = []
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        candidates += [directory / stem, directory / f"{stem}.gz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"{candidates[0]}[.gz]: {kind} file not found (also tried {candidates[2].name}[.gz])")


def find_idx_pair(directory: str | Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 of one MNIST-style split (prefix "train" or "t10k")."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: IDX data directory not found")
    images_path = _find_idx_file(directory, prefix, "images", "idx3")
    labels_path = _find_idx_file(directory, prefix, "labels", "idx1")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected 3-D uint8 images, got {images.ndim}-D {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: expected 1-D integer labels, got {labels.ndim}-D {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    return images, labels.astype(np.int64)


# --- Restricted unpickler (CIFAR python batches) ---


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles from Python 3 use for bytes; latin-1 only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"_codecs.encode only allowed as encode(str, 'latin1'), got {encoding!r}"
        )
    return obj.encode("latin-1")


# Taken from live objects so the mapping holds on numpy 1.x (numpy.core) and 2.x (numpy._core) alike.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler resolving only the globals that rebuild numpy arrays; any other global is a DataError."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            # Name it as Python 3 does (protocol 2 writes `__builtin__` for `builtins`); nothing is imported.
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            raise DataError(
                f"{self.source}: pickle references forbidden global {module}.{name} (refused, nothing run)"
            ) from None


def _safe_load_dict(payload: bytes, source: str) -> dict:
    """Unpickle `payload` with the restricted unpickler and check the top-level object is a dict."""
    try:
        obj = _SafeUnpickler(io.BytesIO(payload), source).load()
    except DataError:
        raise
    except Exception as e:  # any failure on untrusted input is bad data, reported in one line
        raise DataError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    return obj


# --- CIFAR-10 / CIFAR-100 ---

_CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_TARBALL = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
_CIFAR_TRAIN = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}
_CIFAR_TEST = {"cifar10": ["test_batch"], "cifar100": ["test"]}
# (output key suffix, key in the pickle, number of classes)
_CIFAR_LABELS = {
    "cifar10": [("", "labels", 10)],
    "cifar100": [("", "fine_labels", 100), ("_coarse", "coarse_labels", 20)],
}


def _get(d: dict, key: str, source: str) -> Any:
    """`d[b'key']` or `d['key']`: the official files use bytes keys, re-saved ones may use str."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    present = sorted(k.decode("latin-1") if isinstance(k, bytes) else str(k) for k in d)
    raise DataError(f"{source}: missing key {key!r} (present: {present})")


def _parse_cifar_batch(d: dict, name: str, split: str, source: str) -> dict[str, np.ndarray]:
    """`x_{split}` (N, 32, 32, 3) uint8 HWC and int64 label arrays of one batch, shapes and ranges checked."""
    data = _get(d, "data", source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: 'data' must be a (N, 3072) uint8 array, got {desc}")
    n = data.shape[0]
    # Rows are CHW (1024 red, 1024 green, 1024 blue, each row-major 32x32); models here take HWC.
    out = {f"x_{split}": np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))}
    for suffix, key, n_classes in _CIFAR_LABELS[name]:
        try:
            labels = np.asarray(_get(d, key, source))
        except (ValueError, TypeError) as e:
            raise DataError(f"{source}: {key!r} is not a list of ints ({e})") from e
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise DataError(
                f"{source}: {key!r} must be a 1-D list of ints, got {labels.ndim}-D {labels.dtype}"
            )
        if len(labels) != n:
            raise DataError(f"{source}: {len(labels)} {key!r} for {n} images")
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(
                f"{source}: {key!r} outside [0, {n_classes}): min {labels.min()}, max {labels.max()}"
            )
        out[f"y_{split}{suffix}"] = labels.astype(np.int64)
    return out


def _iter_cifar_tar(path: Path, folder: str, members: list[str]) -> Iterator[tuple[str, str, bytes]]:
    """(member, source, bytes) of the expected members `folder/<member>` of a tarball, in memory, one pass."""
    wanted = {f"{folder}/{m}": m for m in members}
    seen: set[str] = set()
    note_input(path)
    try:
        with tarfile.open(path, "r|*") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is None or member in seen:
                    continue
                if not info.isfile():
                    raise DataError(f"{path}:{info.name}: expected a regular file in the archive")
                f = tar.extractfile(info)
                assert f is not None  # a regular file always has a file object
                seen.add(member)
                yield member, f"{path}:{folder}/{member}", f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated tar archive ({e})") from e
    missing = [f"{folder}/{m}" for m in members if m not in seen]
    if missing:
        raise DataError(f"{path}: archive lacks {missing}")


def _iter_cifar_dir(directory: Path, members: list[str]) -> Iterator[tuple[str, str, bytes]]:
    """(member, source, bytes) of the expected batch files of an extracted CIFAR folder."""
    for m in members:
        try:
            payload = (directory / m).read_bytes()
        except OSError as e:
            raise DataError(f"{directory / m}: cannot read CIFAR batch ({e.strerror or e})") from e
        note_input(directory / m)
        yield m, str(directory / m), payload


def load_cifar(path: str | Path, name: Literal["cifar10", "cifar100"]) -> dict[str, np.ndarray]:
    """CIFAR-10/100 from the official python batches: a batch folder, its parent, or the official `.tar.gz`.

    Returns `x_train`, `x_test` (N, 32, 32, 3) uint8 HWC and int64 `y_train`, `y_test` (and for cifar100
    the 20 superclasses as `y_train_coarse`, `y_test_coarse`).
    """
    if name not in _CIFAR_FOLDER:
        raise DataError(f"unknown CIFAR dataset {name!r} (allowed: {sorted(_CIFAR_FOLDER)})")
    path = Path(path)
    folder = _CIFAR_FOLDER[name]
    members = _CIFAR_TRAIN[name] + _CIFAR_TEST[name]
    if path.is_file():
        files = _iter_cifar_tar(path, folder, members)
    elif path.is_dir():
        if (path / members[0]).exists():
            files = _iter_cifar_dir(path, members)
        elif (path / folder).is_dir():
            files = _iter_cifar_dir(path / folder, members)
        elif (path / _CIFAR_TARBALL[name]).is_file():
            files = _iter_cifar_tar(path / _CIFAR_TARBALL[name], folder, members)
        else:
            raise DataError(
                f"{path}: no {name} data (looked for {path / members[0]}, {path / folder}/ "
                f"and {path / _CIFAR_TARBALL[name]})"
            )
    else:
        raise DataError(
            f"{path}: {name} data not found (expected the {folder}/ folder or {_CIFAR_TARBALL[name]})"
        )

    # Parse each file as it is read, so that at most one raw batch is held besides the parsed arrays.
    batches: dict[str, dict[str, np.ndarray]] = {}
    for member, source, payload in files:
        split = "train" if member in _CIFAR_TRAIN[name] else "test"
        batches[member] = _parse_cifar_batch(_safe_load_dict(payload, source), name, split, source)
    out: dict[str, np.ndarray] = {}
    for split_members in (_CIFAR_TRAIN[name], _CIFAR_TEST[name]):
        parsed = [batches[m] for m in split_members]  # official batch order, whatever the archive order
        for key in parsed[0]:
            out[key] = np.concatenate([b[key] for b in parsed])
    return out


# --- npz ---

_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` holding at least `x_train, y_train, x_test, y_test`; never unpickles."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # OSError, BadZipFile, ValueError, EOFError...: unreadable input, in one line
        raise DataError(f"{path}: cannot read npz ({type(e).__name__}: {e})") from e
    note_input(path)
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive of named arrays, got a single .npy array")
    out: dict[str, np.ndarray] = {}
    with npz:
        keys = list(npz.files)
        for key in _NPZ_REQUIRED:
            if key not in keys:
                raise DataError(f"{path}: missing array {key!r} (present: {keys})")
        for key in keys:
            try:
                out[key] = npz[key]
            except ValueError as e:  # object arrays need pickle, which is refused
                raise DataError(f"{path}: array {key!r} cannot be loaded without pickle ({e})") from e
            except Exception as e:
                raise DataError(f"{path}: array {key!r} is unreadable ({type(e).__name__}: {e})") from e

    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.ndim < 1 or y.ndim != 1:
            raise DataError(
                f"{path}: y_{split} must be 1-D and x_{split} at least 1-D, got {y.shape}, {x.shape}"
            )
        if len(x) != len(y):
            raise DataError(f"{path}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
        if len(x) == 0:  # caught here, or the label range of an empty array fails with a numpy traceback
            raise DataError(f"{path}: x_{split} has 0 rows (the {split} split is empty)")
        # Counted in the file, before normalisation spreads one NaN over a whole channel.
        if x.dtype.kind in "fc" and not np.isfinite(x).all():
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise DataError(f"{path}: {bad} non-finite value{'s' if bad != 1 else ''} in x_{split}")
        if y.dtype.kind not in "iu":
            raise DataError(f"{path}: y_{split} must hold integer labels, got {y.dtype}")
        if len(y) and y.min() < 0:
            raise DataError(f"{path}: y_{split} has negative labels (min {y.min()})")
        out[f"y_{split}"] = y.astype(np.int64)
    return out
