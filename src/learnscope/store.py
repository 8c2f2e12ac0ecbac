"""The run store: one directory per run, named by the config's hash.

    <root>/<hash>/config.json     the config (and, for a user-supplied model or data, its fingerprint)
                  metrics.jsonl   one strict-JSON record per probe step, appended and flushed
                  checkpoint.pt   model, optimiser, RNG states and the records through its step; written to a
                                  temporary file, synced, then renamed; loaded with weights_only=True
                  status.json     running | done | failed | diverged | interrupted, with the error or the step
                  lock            held (flock) by the process running it

The invariant, kept under every fault (kill -9, Ctrl-C, SIGTERM, a full or read-only disk, a torn file):

- `metrics.jsonl` holds exactly the records of the steps up to the run's last durable point, each once, in
  order. Non-finite floats are written as the strings "NaN", "Infinity", "-Infinity" (strict JSON that any
  reader takes) and read back as floats.
- A checkpoint at step s carries the records through s. A run that starts (or resumes) first rewrites
  `metrics.jsonl` atomically to exactly its checkpoint's records, or to none without a checkpoint, then
  recomputes the rest: a torn or corrupt tail is replaced, never appended to, and no record is written twice.
- Readers ignore a torn last line (a writer killed mid-line). A run directory that cannot be read is listed
  as `corrupt` with the reason; it never breaks the reading of the rest of the store.
- `done` and `diverged` are final: running the config again returns the stored records without work.
  `failed` and `interrupted` runs (and `running` ones whose process died) resume from their checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
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

from . import tracking
from .atomic import TMP_SUFFIX, atomic_text, atomic_write
from .errors import INTERRUPTS, StoreError, describe_os_error

FINAL = ("done", "diverged")

# -- records: strict JSON lines ----------------------------------------------------------------------------

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def encode_record(record: dict[str, Any]) -> str:
    """One line of metrics.jsonl (with its newline)."""
    return json.dumps(_strict(record), allow_nan=False) + "\n"


def decode_record(line: str | bytes) -> dict[str, Any]:
    record = json.loads(line)  # also takes the bare NaN of stores written before strict JSON
    if not isinstance(record, dict):
        raise json.JSONDecodeError("not an object", str(line), 0)
    return {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl. A record is a line with its newline: a last line without one is what a
    killed writer left (torn) and is ignored; any other unreadable line is a StoreError naming it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(describe_os_error(exc)) from None
    records = []
    for i, line in enumerate(data.split(b"\n")[:-1]):  # the last piece is empty or torn
        if not line.strip():
            continue
        try:
            records.append(decode_record(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StoreError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise StoreError(describe_os_error(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"{path} is not valid JSON") from None
    if not isinstance(body, dict):
        raise StoreError(f"{path} is not a JSON object")
    return body


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def shown_state(status: dict[str, Any]) -> str:
    """The state to show: `running` whose process is gone from this host is `interrupted` (a kill -9, a
    power cut); the next run of its config resumes it."""
    state = status.get("state", "?")
    pid = status.get("pid")
    if state == "running" and isinstance(pid, int) and status.get("host") == socket.gethostname():
        return state if pid > 0 and process_alive(pid) else "interrupted"
    return state


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
        self._trackers = None  # tracking.RunTrackers while LEARNSCOPE_TRACK names any

    # -- lifecycle -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run: a second process gets a StoreError at once instead of a race. Temporary
        files left by a killed writer are removed (nobody else writes here while the lock is held)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write the run store: {describe_os_error(exc)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"run {self.hash} is being run by another process ({self.path})") from None
            for stale in self.path.glob(f".*{TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            self._close_metrics()
            os.close(fd)

    def write_config(self) -> None:
        body = {"config": self.config.to_dict(), "hash": self.hash}
        if self.identity:
            body["identity"] = self.identity
        path = self.path / "config.json"
        if path.exists():
            with contextlib.suppress(StoreError):  # an unreadable one is rewritten
                stored = _read_json(path)
                if stored.get("hash") != self.hash:
                    raise StoreError(f"{path} belongs to run {stored.get('hash')!r}, not {self.hash!r}")
                return
        atomic_text(path, json.dumps(body, indent=2, sort_keys=True))

    def status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {"state": "new"}
        return _read_json(self.status_path)

    def set_status(self, state: str, **info: Any) -> None:
        body = {
            "state": state,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "host": socket.gethostname(),
            **info,
        }
        atomic_text(self.status_path, json.dumps(_strict(body), indent=2, allow_nan=False))

    def set_status_if_possible(self, state: str, **info: Any) -> None:
        """`set_status` where the run is already failing: a status that cannot be written (the disk that
        made the run fail is still full) leaves the old one, which `shown_state` reads as interrupted."""
        with contextlib.suppress(OSError):
            self.set_status(state, **info)

    # -- metrics ---------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        return read_records(self.metrics_path)

    def restart_metrics(self, records: list[dict[str, Any]]) -> None:
        """Make metrics.jsonl exactly `records` (a checkpoint's, or none), atomically, then append after them:
        whatever a killed, failed or interrupted writer left after them is dropped."""
        self._close_metrics()
        atomic_text(self.metrics_path, "".join(encode_record(r) for r in records))

    def append(self, record: dict[str, Any]) -> None:
        if self._metrics_file is None:
            self._metrics_file = open(self.metrics_path, "a")  # noqa: SIM115 (kept open while the run lasts)
            names = tracking.requested()
            if names:
                self._trackers = tracking.RunTrackers(self.path, self.config.to_dict(), names)
        self._metrics_file.write(encode_record(record))
        self._metrics_file.flush()
        if self._trackers is not None:  # after the store has it: the store is the source of truth
            self._trackers.log(record)

    def _close_metrics(self) -> None:
        if self._metrics_file is not None:
            with contextlib.suppress(OSError):  # a full disk: what was flushed stays, the rest is recomputed
                self._metrics_file.close()
            self._metrics_file = None
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """The training state at a step and the records through it: the run's new durable point. Serialised
        in memory first, so a full disk is an OSError (ENOSPC) from the write, not torch's RuntimeError."""
        if self._metrics_file is not None:
            os.fsync(self._metrics_file.fileno())
        buffer = io.BytesIO()
        torch.save({"run": self.hash, **state, "records": records}, buffer)
        atomic_write(self.checkpoint_path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file: say which and why, keep it for inspection
            raise StoreError(
                f"checkpoint {self.checkpoint_path} cannot be read ({type(exc).__name__}); delete it to "
                "start the run afresh"
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
    status: str = "done"


def computed_run(
    root: str | Path, spec: RunSpec, compute: Callable[[], Iterable[dict[str, Any]]]
) -> ComputedRun:
    """A run that is one computation without a training loop (a simulation, an ODE): a finished one is read
    back; otherwise `compute()` runs under the run's lock and its records are written at once, then `done`.
    A computation that raises leaves the run `failed` with the error (no records), an interrupt leaves it
    `interrupted`; a rerun computes it again."""
    run_dir = RunDir(root, spec)
    if run_dir.status().get("state") == "done":
        return ComputedRun(run_dir.path, run_dir.records(), computed=False)
    with run_dir.lock():
        run_dir.write_config()
        run_dir.set_status("running", pid=os.getpid())
        try:
            records = list(compute())
            run_dir.restart_metrics(records)
        except INTERRUPTS:
            run_dir.set_status_if_possible("interrupted")
            raise
        except OSError as exc:
            run_dir.set_status_if_possible("failed", error=describe_os_error(exc))
            raise StoreError(describe_os_error(exc)) from None
        except Exception as exc:
            run_dir.set_status_if_possible("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        run_dir.set_status("done", records=len(records))
    return ComputedRun(run_dir.path, records, computed=True)


# -- reading a store ---------------------------------------------------------------------------------------


def run_dirs(root: str | Path) -> list[Path]:
    """The run directories of a store (or the one run `root` is)."""
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
    if not matches:
        raise StoreError(f"no run in {root} matches {ref!r}")
    if len(matches) > 1:
        shown = ", ".join(p.name for p in matches[:8]) + (", ..." if len(matches) > 8 else "")
        raise StoreError(f"{len(matches)} runs in {root} match {ref!r}: {shown}; give more of the hash")
    return matches[0]


def read_run(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config.json body, status, records) of one run directory; a StoreError names what cannot be read."""
    path = Path(path)
    body = _read_json(path / "config.json")
    if not isinstance(body.get("config"), dict) or "hash" not in body:
        raise StoreError(f"{path / 'config.json'} is not a run config (no 'config' or 'hash')")
    status_path = path / "status.json"
    status = _read_json(status_path) if status_path.exists() else {"state": "new"}
    return body, status, read_records(path / "metrics.jsonl")


def read_run_or_corrupt(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """`read_run`, except that an unreadable run is (its hash, status `corrupt` with the reason, no records):
    what readers of a whole store use, so one bad directory does not hide the others."""
    try:
        return read_run(path)
    except StoreError as exc:
        return {"config": {}, "hash": Path(path).name}, {"state": "corrupt", "error": str(exc)}, []


def load_runs(root: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """One table of every run under `root` (or only of the `runs` named by hash): a row per record, with the
    run's config as dotted columns. A run that cannot be read is one row with status `corrupt` and its
    `error`."""
    frames = []
    paths = run_dirs(root) if runs is None else [Path(root) / name for name in sorted(runs)]
    for path in paths:
        body, status, records = read_run_or_corrupt(path)
        meta = pd.json_normalize(body["config"], sep=".").iloc[0].to_dict() if body["config"] else {}
        meta = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items()}
        frame = pd.DataFrame(records) if records else pd.DataFrame({"step": pd.Series(dtype=int)})
        columns = {"run": body["hash"], "status": shown_state(status), **meta}
        if status.get("state") == "corrupt":
            frame = pd.DataFrame({"step": [pd.NA]})
            columns["error"] = status["error"]
        # the config columns at once (column by column fragments the frame); they win over same-named records
        constants = pd.DataFrame({k: [v] * len(frame) for k, v in columns.items()}, index=frame.index)
        frames.append(pd.concat([frame.drop(columns=[c for c in columns if c in frame]), constants], axis=1))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


COLLECT_FORMATS = (".csv", ".parquet")


def collect_runs(root: str | Path, out: str | Path) -> pd.DataFrame:
    """Every run of a store as one file (`load_runs`: a row per record, the run's hash and status, its config
    as dotted columns), CSV or Parquet by the suffix of `out`, written atomically. Values that are not scalars
    (lists, tuples) are written as their JSON text, and so are the values of a column that mixes text with
    numbers (e.g. `optim.lr`, a number or "1/sharpness"), so that every column has one type."""
    out = Path(out)
    if out.suffix not in COLLECT_FORMATS:
        raise StoreError(f"--out {out}: must end in {' or '.join(COLLECT_FORMATS)}")
    table = load_runs(root)
    if table.empty:
        raise StoreError(f"no runs in {root}")
    for column in [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]:
        values = table[column].dropna()
        if not all(isinstance(v, str) for v in values) and not all(_is_number(v) for v in values):
            table[column] = table[column].map(lambda v: v if v is None or _is_nan(v) else _text(v))
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401 (pandas writes parquet through it)
        except ImportError:
            raise StoreError("writing parquet needs pyarrow: pip install 'learnscope[parquet]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    else:
        atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
