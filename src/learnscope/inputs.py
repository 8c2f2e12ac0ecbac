"""The files a run reads (data, weights, moments) are part of what the run is: a file is named by its path in
the config, so a file replaced at the same path would silently give one run two data sets. Every reader of an
input file says so (`note_input`); a run records what it read (`recording_inputs`, `fingerprint`) in its
directory, and before it resumes or is returned as finished, `changed` compares the files with the record.

A file is identified as git's index does it: size and modification time, and where those differ, the sha256 of
its content (a file touched but not changed is the same file). Hashes are kept per process for files whose
size, time and inode are unchanged, so a sweep of many runs on one file reads it once to hash it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_reading: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("reading_inputs", default=None)
_hashes: dict[tuple[str, int, int, int], str] = {}


def note_input(path: str | Path) -> None:
    """Called by every reader of an input file: recorded where a run is recording what it reads."""
    log = _reading.get()
    if log is not None:
        resolved = Path(path).resolve()
        if resolved not in log:
            log.append(resolved)


@contextlib.contextmanager
def recording_inputs() -> Iterator[list[Path]]:
    """The files read inside the block, in order, each once."""
    log: list[Path] = []
    token = _reading.set(log)
    try:
        yield log
    finally:
        _reading.reset(token)


def fingerprint(paths: list[Path]) -> list[dict[str, Any]]:
    """{path, size, mtime_ns, sha256} of each file (a folder: of each file in it, recursively)."""
    files = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return [_fingerprint(path) for path in files]


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": _sha256(path, stat),
    }


def _sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def changed(recorded: list[dict[str, Any]]) -> str | None:
    """What differs between the recorded files and those on disk now, in one phrase (None: nothing). A file
    that is gone is not a change: what was computed from it stands, and reading it again fails on its own."""
    for entry in recorded:
        path = Path(entry["path"])
        try:
            stat = path.stat()
        except OSError:
            continue
        if stat.st_size == entry["size"] and stat.st_mtime_ns == entry["mtime_ns"]:
            continue
        now = _sha256(path, stat)
        if now != entry["sha256"]:
            return f"{path} changed (sha256 {entry['sha256'][:12]} then, {now[:12]} now)"
    return None
