"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one; and the one
exclusive lock of a directory (a run's, a fetched data set's).

A leaf module (it imports nothing of the package), so the store, the data cache and the report share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """The hidden temporary file that `atomic_write` fills before renaming it to `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)`, flush it to disk, then rename over `path`. On any failure (a full disk, an interrupt)
    the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_savez(path: Path, arrays: dict[str, Any]) -> None:
    """An .npz of `arrays`, written atomically (savez on an open file: a path would gain a second suffix)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def directory_lock(path: Path, fallback: str, *, block: bool = False) -> Iterator[None]:
    """An exclusive flock of the directory `path` itself while the block runs, so no lock file that a user
    may delete as stale can let two processes in; where the filesystem cannot lock a directory (NFS emulates
    flock with byte-range locks, which need a file open for writing), of the file `fallback` in it. Held by
    another process: BlockingIOError at once, or with `block` the wait until it is free. An OSError where
    the directory cannot be opened."""
    mode = fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            raise
        except OSError:  # no directory locks here: the lock file
            os.close(fd)
            fd = -1
            fd = os.open(Path(path) / fallback, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, mode)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock
