"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

A leaf module (it imports nothing of the package), so the store, the data cache and the report share it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
