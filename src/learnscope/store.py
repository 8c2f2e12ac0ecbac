"""The run store: one directory per run, named by the config's hash.

    <root>/<hash>/config.json     the config (and, for a user-supplied model or data, its fingerprint)
                  metrics.jsonl   a JSON record per probe step, appended, flushed; a torn last line is ignored
                  checkpoint.pt   written to a temporary file, then renamed; loaded with weights_only=True
                  status.json     running | done | failed | diverged, with the error or the step
                  lock            held (flock) by the process running it

A `done` or `diverged` run is final: running it again returns the stored records without work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from .errors import StoreError

FINAL = ("done", "diverged")


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` then rename over `path`: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_savez(path: Path, arrays: dict[str, Any]) -> None:
    """An .npz of `arrays`, written atomically (savez on an open file: a path would gain a second suffix)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn (unparseable) last line from a killed writer is ignored."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise StoreError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


class RunSpec(Protocol):
    """What names a run: a training `Config`, or the config of another computation (e.g. an ODE)."""

    def run_hash(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class RunDir:
    """One run's directory. `identity` distinguishes runs of user-supplied models or data."""

    def __init__(self, root: str | Path, cfg: RunSpec, identity: str = ""):
        self.config = cfg
        self.identity = identity
        digest = cfg.run_hash()
        if identity:
            digest = hashlib.sha256(f"{digest}:{identity}".encode()).hexdigest()[:16]
        self.hash = digest
        self.path = Path(root) / digest
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_path = self.path / "checkpoint.pt"
        self.status_path = self.path / "status.json"
        self._metrics_file = None

    # -- lifecycle -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run: a second process gets a StoreError at once instead of a race."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"run {self.hash} is being run by another process ({self.path})") from None
            yield
        finally:
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None
            os.close(fd)

    def write_config(self) -> None:
        body = {"config": self.config.to_dict(), "hash": self.hash}
        if self.identity:
            body["identity"] = self.identity
        path = self.path / "config.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("hash") != self.hash:
                raise StoreError(f"{path} belongs to run {stored.get('hash')!r}, not {self.hash!r}")
            return
        _atomic_text(path, json.dumps(body, indent=2, sort_keys=True))

    def status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {"state": "new"}
        try:
            return json.loads(self.status_path.read_text())
        except json.JSONDecodeError:
            raise StoreError(f"{self.status_path} is not valid JSON") from None

    def set_status(self, state: str, **info: Any) -> None:
        body = {
            "state": state,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "host": socket.gethostname(),
            **info,
        }
        _atomic_text(self.status_path, json.dumps(body, indent=2))

    # -- metrics ---------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return read_records(self.metrics_path)

    def keep_records_through(self, step: int) -> None:
        """Drop records after `step` (written after the checkpoint a resumed run restarts from)."""
        kept = [r for r in self.records() if r["step"] <= step]
        _atomic_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        if self._metrics_file is None:
            self._metrics_file = open(self.metrics_path, "a")  # noqa: SIM115 (kept open while the run lasts)
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write(self.checkpoint_path, lambda tmp: torch.save({"run": self.hash, **state}, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file: say which and why, keep it for inspection
            raise StoreError(
                f"checkpoint {self.checkpoint_path} cannot be read ({type(exc).__name__})"
            ) from None
        if not isinstance(state, dict) or state.get("run") != self.hash:
            owner = state.get("run") if isinstance(state, dict) else None
            raise StoreError(f"checkpoint {self.checkpoint_path} belongs to run {owner!r}, not {self.hash!r}")
        return state


@dataclass
class ComputedRun:
    path: Path
    records: list[dict[str, Any]]
    computed: bool  # False when read back from a finished run


def computed_run(
    root: str | Path, spec: RunSpec, compute: Callable[[], Iterable[dict[str, Any]]]
) -> ComputedRun:
    """A run that is one computation without a training loop (a simulation, an ODE): a finished one is read
    back; otherwise `compute()` runs under the run's lock and its records are written at once, then `done`.
    A computation that raises leaves the run `failed` with the error (no records); a rerun retries it."""
    run_dir = RunDir(root, spec)
    if run_dir.status().get("state") == "done":
        return ComputedRun(run_dir.path, run_dir.records(), computed=False)
    with run_dir.lock():
        run_dir.write_config()
        run_dir.set_status("running", pid=os.getpid())
        try:
            records = list(compute())
        except Exception as exc:
            run_dir.set_status("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        _atomic_text(run_dir.metrics_path, "".join(json.dumps(r) + "\n" for r in records))
        run_dir.set_status("done", records=len(records))
    return ComputedRun(run_dir.path, records, computed=True)


# -- reading a store ---------------------------------------------------------------------------------------


def run_dirs(root: str | Path) -> list[Path]:
    root = Path(root)
    if (root / "config.json").exists():
        return [root]
    if not root.is_dir():
        raise StoreError(f"no run store at {root}")
    return sorted(p.parent for p in root.glob("*/config.json"))


def find_run(root: str | Path, ref: str) -> Path:
    """A run by its directory path or a unique prefix of its hash."""
    path = Path(ref)
    if (path / "config.json").exists():
        return path
    matches = [p for p in run_dirs(root) if p.name.startswith(ref)]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise StoreError(f"{found} in {root} matches {ref!r}")
    return matches[0]


def read_run(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config.json body, status, records) of one run directory."""
    body = json.loads((path / "config.json").read_text())
    status_path = path / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {"state": "new"}
    return body, status, read_records(path / "metrics.jsonl")


def load_runs(root: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """One table of every run under `root` (or only of the `runs` named by hash): a row per record, with the
    run's config as dotted columns."""
    frames = []
    paths = run_dirs(root) if runs is None else [Path(root) / name for name in sorted(runs)]
    for path in paths:
        body, status, records = read_run(path)
        meta = pd.json_normalize(body["config"], sep=".").iloc[0].to_dict()
        meta = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items()}
        frame = pd.DataFrame(records) if records else pd.DataFrame({"step": pd.Series(dtype=int)})
        for key, value in {"run": body["hash"], "status": status.get("state"), **meta}.items():
            frame[key] = [value] * len(frame)
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
