"""The run store: one directory per run, named by the config's hash.

    <root>/<hash>/config.json     the config (and, for a user-supplied model or data, its fingerprint and
                                  what they are: `supplied`)
                  metrics.jsonl   one strict-JSON record per probe step, appended and flushed
                  checkpoint.pt   model, optimiser, RNG states and the records through its step; written to a
                                  temporary file, synced, then renamed; loaded with weights_only=True
                  status.json     running | done | failed | diverged | interrupted, with the error or the
                                  step; a final one with its records' count and sha256
                  inputs.json     the files the run read (path, size, mtime, sha256), checked before it
                                  resumes or is read back (inputs.py)
                  records.npz     a final run's records as columns (`_write_copy`), keyed by the sha256 that
                                  status.json keeps: what tables of the store are built from while it is the
                                  copy of metrics.jsonl as it is now; a cache, never the truth
The directory itself is locked (flock) by the process running the run.

The invariant, kept under every fault (kill -9, Ctrl-C, SIGTERM, a full or read-only disk, a torn file):

- `metrics.jsonl` holds exactly the records of the steps up to the run's last durable point, each once, in
  order. Non-finite floats are written as the strings "NaN", "Infinity", "-Infinity" (strict JSON that any
  reader takes) and read back as floats.
- A checkpoint at step s carries the records through s. A run that starts (or resumes) first rewrites
  `metrics.jsonl` atomically to exactly its checkpoint's records, or to none without a checkpoint, then
  recomputes the rest: a torn or corrupt tail is replaced, never appended to, and no record is written twice.
- Readers ignore a torn last line (a writer killed mid-line: never a whole JSON object) and keep a last line
  that is a whole object without its newline (an editor stripped it). A run directory that cannot be read,
  or breaks the rules of a run (`read_run`: the types of config.json, status.json and the records), is
  listed as `corrupt` with the reason; it never breaks the reading of the rest of the store.
- `done` and `diverged` are final: running the config again returns the stored records without work, after
  checking them against the digest in status.json (`RunDir.final_records` repairs what it can, or refuses).
  `failed` and `interrupted` runs (and `running` ones whose process died) resume from their checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import io
import itertools
import json
import math
import operator
import os
import socket
import stat
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.scanner import make_scanner
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import orjson

from .atomic import TMP_SUFFIX, atomic_text, atomic_write, directory_lock, temporary_name
from .errors import RunBusy, StoreError, describe_os_error
from .inputs import changed, fingerprint
from .ui import notice

if TYPE_CHECKING:  # torch and pandas are imported where a checkpoint or a table is made: reading a store's
    import pandas as pd  # states (`runs ls`, `sweep status`) needs neither

# The store's layout beside its run directories (each named by its run hash), in one place:
STUDY_RECORDS = "studies"  # <store>/studies/<study>-<scale>[-<overrides hash>].json (studies/base.run_study)
JOB_FOLDER = "slurm"  # <store>/slurm: submitit's job files and logs (executors/slurm.py)

FINAL = ("done", "diverged")


class RecordSink(Protocol):
    """A view of a run's records outside its store (e.g. tracking's TensorBoard/MLflow mirrors): given each
    record after the store has written it, closed with the run's metrics file. It handles its own failures:
    the store has the record."""

    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


RECORD_SINKS: list[Callable[[RunDir], RecordSink | None]] = []
"""Called with the run each time a run opens its metrics file in this process; each returns a sink for it,
or None. Filled from above (`tracking` adds its mirrors when the package is imported), so the store imports
none of the layers that view its records."""

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


def records_digest(records: Iterable[dict[str, Any]]) -> str:
    """sha256 of the records as metrics.jsonl holds them: what a finished run's status.json keeps, so that a
    file changed or lost since is noticed (and, where its checkpoint still has them, restored)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(encode_record(record).encode())
    return digest.hexdigest()


# -- reading what the writer wrote: every file checked, streamed and bounded ---------------------------

MAX_LINE_BYTES = 64 << 20  # a record longer than this is not one the writer wrote (its largest are kB)
MAX_JSON_BYTES = 64 << 20  # config.json, status.json, a study record: kB to a few MB
_CHUNK_BYTES = 4 << 20
_SCAN = make_scanner(json.JSONDecoder())  # one JSON value at an offset: (value, end)
_MISSING = float("nan")  # the cell of a record that lacks a key (NaN, as pandas fills it; its own object)
_RECORD_VALUES = frozenset({int, float, str, bool, type(None), list})


def _open_regular(path: Path) -> io.BufferedReader:
    """`path` opened for reading, if it is a regular file (a symlink to one is): a device (/dev/zero), a
    pipe or a directory is a StoreError, refused before anything is read. O_NONBLOCK: opening a pipe does
    not wait for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path: Path, limit: int | None = None) -> Any:
    """The JSON value of a regular file of at most `limit` bytes (default MAX_JSON_BYTES); a StoreError
    names the file and what is wrong (missing, not a regular file, too large, not JSON)."""
    limit = MAX_JSON_BYTES if limit is None else limit
    try:
        with _open_regular(path) as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise StoreError(_os_error(path, exc)) from None
    if len(data) > limit:
        raise StoreError(f"{path} is larger than {_size(limit)}: not a file learnscope wrote")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"{path} is not valid JSON") from None


def _read_json(path: Path) -> dict[str, Any]:
    body = read_json(path)
    if not isinstance(body, dict):
        raise StoreError(f"{path} is not a JSON object")
    return body


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl, each checked (`record_columns`). A record is a line holding one JSON
    object. A last line without its newline is kept when it is a complete object (an editor that strips
    the final newline) and ignored when it is not (a writer killed mid-line: a torn write is never a
    complete object). Any other unreadable line is a StoreError naming it, and so is a file that is not a
    regular one or has a line longer than MAX_LINE_BYTES; the file is streamed, never read whole."""
    records = _parse_records(Path(path))
    record_columns(records, path)
    return records


def _parse_records(path: Path, data: bytes | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl's lines (non-finite strings as floats), unchecked otherwise; of
    `data`, the file's bytes already read, where given."""
    try:
        f = _open_regular(path) if data is None else io.BytesIO(data)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(_os_error(path, exc)) from None
    records: list[dict[str, Any]] = []
    pending = b""  # the start of a line whose newline is still to come
    line = 0  # lines before `pending`
    with f:
        while True:
            try:
                chunk = f.read(_CHUNK_BYTES)
            except OSError as exc:
                raise StoreError(_os_error(path, exc)) from None
            if not chunk:
                break
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            if len(pending) > MAX_LINE_BYTES:
                raise StoreError(f"{path}: line {line + 1} is longer than {_size(MAX_LINE_BYTES)}")
            if cut:
                line = _parse_lines(data[:cut], line, path, records)
    if pending.strip():  # the last line, without its newline: a record if it is a complete object
        try:
            record = json.loads(pending)
        except (ValueError, RecursionError):  # torn: the rest of the line was never written
            return records
        if not isinstance(record, dict):
            raise StoreError(f"{path}: line {line + 1} is not a JSON object")
        records.append(_finite(record))
    return records


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _os_error(path: Path, exc: OSError) -> str:
    """One line: the file and what the operating system said."""
    return describe_os_error(exc) if exc.filename is not None else f"{path}: {describe_os_error(exc)}"


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """The writer's strings for non-finite floats ("NaN", "Infinity", "-Infinity") as floats."""
    return {k: _NON_FINITE.get(v, v) if type(v) is str else v for k, v in record.items()}


def _parse_lines(data: bytes, line: int, path: Path, records: list[dict[str, Any]]) -> int:
    """Append the objects of `data` (whole lines, the first being line `line + 1`) to `records`; returns
    the number of the last line. One scanner walks the text line by line: as strict as `json.loads` of
    each line (a value must end at its line's end), at the speed of one parse of the whole text."""
    if len(data) > MAX_LINE_BYTES and max(map(len, data.split(b"\n"))) > MAX_LINE_BYTES:
        raise StoreError(f"{path}: a line after line {line} is longer than {_size(MAX_LINE_BYTES)}")
    # The fast path: the lines as one array, in orjson (C, ~6x json's speed); taken when every line is one
    # object (as many values as lines), as the writer writes them. Anything else (a blank or bad line, a
    # bare NaN of an old store, two values on a line) is read line by line below, which names the culprit.
    count = data.count(b"\n")
    try:
        parsed = orjson.loads(b"[" + data[:-1].replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        parsed = None
    if parsed is not None and len(parsed) == count and all(type(r) is dict for r in parsed):
        if b'"NaN"' in data or b'Infinity"' in data:  # the writer's non-finite floats as floats
            parsed = list(map(_finite, parsed))
        records.extend(parsed)
        return line + count
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        bad = line + data.count(b"\n", 0, exc.start) + 1
        raise StoreError(f"{path}: line {bad} is not valid JSON (not UTF-8)") from None
    first = len(records)
    append, scan, end = records.append, _SCAN, len(text)
    start = 0
    while start < end:
        stop = text.index("\n", start)
        try:
            record, at = scan(text, start)
            if at == stop and type(record) is dict:  # the object is the whole line
                append(record)
                start = stop + 1
                continue
        except (StopIteration, ValueError, RecursionError):
            pass
        # the slow path: blank lines, spaces around the object, and what is not a record
        piece = text[start:stop]
        if piece.strip():
            number = line + text.count("\n", 0, start) + 1
            try:
                record = json.loads(piece)  # also takes the bare NaN of stores written before strict JSON
            except (ValueError, RecursionError):
                raise StoreError(f"{path}: line {number} is not valid JSON") from None
            if not isinstance(record, dict):
                raise StoreError(f"{path}: line {number} is not a JSON object")
            append(record)
        start = stop + 1
    if '"NaN"' in text or 'Infinity"' in text:  # the writer's non-finite floats (strict JSON) as floats
        records[first:] = map(_finite, records[first:])
    return line + text.count("\n")


def record_columns(records: list[dict[str, Any]], where: str | Path = "records") -> dict[str, list[Any]]:
    """The records as columns (keys in order of first appearance, NaN where a record lacks a key), after
    checking the rules of a record: an object whose `step`, if it has one (a theory curve's records have
    `t` instead), is an integer (a bool is not) and whose values are numbers, strings, null or lists (what
    `encode_record` writes of a probe's values). A record that breaks them is a StoreError naming it."""
    return _record_columns(records, where)[0]


def _record_columns(
    records: list[dict[str, Any]], where: str | Path
) -> tuple[dict[str, list[Any]], dict[str, set[type]]]:
    """`record_columns`, and the types of the values of each column."""
    columns: dict[str, list[Any]] = {}
    types: dict[str, set[type]] = {}
    for key in _keys(records):
        try:
            column = list(map(operator.itemgetter(key), records))
        except KeyError:
            column = [r.get(key, _MISSING) for r in records]
        columns[key], types[key] = column, set(map(type, column))
        if key == "step" and types[key] != {int}:
            bad = [(i, v) for i, v in enumerate(column) if type(v) is not int and v is not _MISSING][:1]
            for i, value in bad:
                raise StoreError(f"{where}: record {i + 1} has step {_clip(value)}, not an integer")
        if not types[key] <= _RECORD_VALUES:
            i, value = next((i, v) for i, v in enumerate(column) if type(v) not in _RECORD_VALUES)
            raise StoreError(
                f"{where}: record {i + 1}: {_clip(key)} is {_clip(value)}, not a number, string, null or list"
            )
    return columns, types


def _keys(records: list[dict[str, Any]]) -> dict[str, None]:
    """The keys of the records in order of first appearance (as pandas orders the columns of records): the
    first record's, then any other where it first appears. A set union finds them (a few times faster than
    walking every key of every record in order)."""
    if not records:
        return {}
    keys = dict.fromkeys(records[0])
    others = set().union(*records).difference(keys)
    for record in records if others else ():
        if not others.isdisjoint(record):
            for key in record:
                if key in others:
                    keys[key] = None
                    others.discard(key)
            if not others:
                break
    return keys


def _clip(value: Any, width: int = 40) -> str:
    """A value as one short line of an error message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    """inputs.json: a list of {path: str, size: int, mtime_ns: int, sha256: str}, or a StoreError."""
    body = read_json(path)
    types = {"path": str, "size": int, "mtime_ns": int, "sha256": str}
    if not isinstance(body, list) or not all(
        isinstance(e, dict) and all(isinstance(e.get(k), t) for k, t in types.items()) for e in body
    ):
        raise StoreError(f"{path} is not a list of file fingerprints")
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
    """One run's directory. `identity` distinguishes runs of user-supplied models or data; `supplied` says
    what they are (`supplied_keys`), kept in config.json beside the config they stand in for."""

    def __init__(
        self, root: str | Path, cfg: RunSpec, identity: str = "", supplied: dict[str, str] | None = None
    ):
        self.config = cfg
        self.identity = identity
        self.supplied = dict(supplied or {})
        digest = cfg.run_hash()
        if identity:
            digest = hashlib.sha256(f"{digest}:{identity}".encode()).hexdigest()[:16]
        self.hash = digest
        self.path = Path(root) / digest
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_path = self.path / "checkpoint.pt"
        self.status_path = self.path / "status.json"
        self.inputs_path = self.path / "inputs.json"
        self._metrics_file = None
        self._sinks: list[RecordSink] = []  # from RECORD_SINKS while the metrics file is open
        self._locked = False  # this object holds the run's lock

    # -- lifecycle -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run: a second process gets a RunBusy error at once instead of a race. The
        lock is on the run directory itself (flock of its descriptor), so no file a user may delete as stale
        can let two processes write one run; where the filesystem refuses to lock a directory (NFS emulates
        flock with byte-range locks, which need a file open for writing) it falls back to a `lock` file.
        Temporary files left by a killed writer are removed (nobody else writes here while it is held)."""
        with contextlib.ExitStack() as held:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                held.enter_context(directory_lock(self.path, "lock"))
            except BlockingIOError:
                raise RunBusy(f"run {self.hash} is being run by another process ({self.path})") from None
            except OSError as exc:
                raise StoreError(f"cannot write the run store: {describe_os_error(exc)}") from None
            try:
                for stale in self.path.glob(f".*{TMP_SUFFIX}"):
                    stale.unlink(missing_ok=True)
                self._locked = True
                yield
            finally:
                self._locked = False
                self._close_metrics()

    def write_config(self) -> None:
        """config.json, unless one of this run is there; an unreadable one is rewritten, another run's is a
        StoreError."""
        if self._config_problem() is not None:
            self._rewrite_config()

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

    def finish(self, state: str, records: list[dict[str, Any]], **info: Any) -> None:
        """Mark the run final (`done` or `diverged`), with how many records it has and their digest, which
        `final_records` checks on every later read-back; then the columnar copy of its records that tables of
        the store are built from (`COLUMNAR`), made from metrics.jsonl where it holds exactly these records,
        as a reader would make it. The run is final whether or not the copy could be written."""
        digest = records_digest(records)
        self.set_status(state, **info, records=len(records), records_sha256=digest)
        with contextlib.suppress(StoreError, OSError):
            _run_columns(self.path, self.status())

    def final_records(self) -> list[dict[str, Any]]:
        """The records of a final run, after checking that its files are whole, as git checks an object
        against its name: a config.json lost, truncated or unreadable is rewritten from the config; a
        metrics.jsonl that no longer holds the records the run finished with (deleted, truncated, edited) is
        restored from the checkpoint where it has exactly them, else a StoreError says what is wrong and how
        to recompute the run. Each repair is said on stderr in one line."""
        status = self.status()
        self.check_inputs()
        repairs: list[tuple[str, Callable[[], None]]] = []
        config_problem = self._config_problem()
        if config_problem:
            repairs.append((f"config.json {config_problem}; rewrote it", self._rewrite_config))
        records, problem = self._records_problem(status)
        if problem:
            restored = self._checkpoint_records()
            expected = status.get("records_sha256")
            if restored is None or (expected is not None and records_digest(restored) != expected):
                raise StoreError(
                    f"run {self.hash} is {status.get('state')} but its metrics.jsonl {problem}, and its "
                    f"checkpoint does not hold them; delete {self.path} to run it again"
                )
            what = f"metrics.jsonl {problem}; restored its {len(restored)} records from the checkpoint"
            repairs.append((what, lambda: self.restart_metrics(restored)))
            records = restored
        if repairs:
            with contextlib.nullcontext() if self._locked else self.lock():
                for what, repair in repairs:
                    repair()
                    notice(f"run {self.hash}: {what}")
                self._close_metrics()
        return records

    def _config_problem(self) -> str | None:
        """What is wrong with config.json (None: nothing); another run's is a StoreError, left as it is."""
        path = self.path / "config.json"
        if not path.exists():
            return "was missing"
        try:
            stored = _read_json(path)
        except StoreError:
            return "could not be read"
        owner = stored.get("hash")
        if isinstance(owner, str) and owner != self.hash:
            raise StoreError(f"{path} belongs to run {owner!r}, not {self.hash!r}")
        problem = config_problem(stored, self.hash)  # the readers' rules of a config.json
        return None if problem is None else f"was not a config of this run ({problem})"

    def _records_problem(self, status: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        """metrics.jsonl's records, and what is wrong with them (None: nothing): not the records whose digest
        the final status keeps. A run finished before digests were kept has its checkpoint's records as a
        floor: fewer is a problem."""
        try:
            records = self.records()
        except StoreError as exc:
            return [], f"could not be read ({exc})"
        expected = status.get("records_sha256")
        if expected is not None:
            if records_digest(records) == expected:
                return records, None
            count = status.get("records")
            if len(records) == count:
                return records, "was changed since the run finished"
            return records, f"held {len(records)} records, not the {count} the run finished with"
        floor = self._checkpoint_records()
        if floor is not None and len(records) < len(floor):
            return records, f"held {len(records)} records, its checkpoint {len(floor)}"
        return records, None

    # -- the files it reads ----------------------------------------------------------------------------
    def start_inputs(self, read: list[Path], resuming: bool) -> None:
        """Before the run computes anything: a fresh start records the files it read (inputs.json); a resume
        first checks that they are those it started on (`check_inputs`), so no run mixes two data sets."""
        if resuming and self.inputs_path.exists():
            self.check_inputs()
        elif read:
            atomic_text(self.inputs_path, json.dumps(fingerprint(read), indent=2))

    def check_inputs(self) -> None:
        """A StoreError, in one line, where a file the run read has changed since it started."""
        if not self.inputs_path.exists():
            return
        recorded = _read_json_list(self.inputs_path)
        difference = changed(recorded)
        if difference is not None:
            raise StoreError(
                f"run {self.hash}: its input {difference} since it started; restore the file, or delete "
                f"{self.path} to run it on the new one"
            )

    def config_body(self) -> dict[str, Any]:
        """What config.json holds: the config, its hash, and for a model or data passed in Python its
        identity and what was supplied."""
        body = {"config": self.config.to_dict(), "hash": self.hash}
        if self.identity:
            body["identity"] = self.identity
        if self.supplied:
            body["supplied"] = self.supplied
        return body

    def _rewrite_config(self) -> None:
        atomic_text(self.path / "config.json", json.dumps(self.config_body(), indent=2, sort_keys=True))

    def _checkpoint_records(self) -> list[dict[str, Any]] | None:
        """The records the checkpoint carries, or None (no checkpoint, or one that cannot be read)."""
        try:
            checkpoint = self.load_checkpoint()
        except StoreError:
            return None
        records = checkpoint.get("records") if checkpoint is not None else None
        return list(records) if isinstance(records, list) else None

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
            self._sinks = [sink for make in RECORD_SINKS if (sink := make(self)) is not None]
        self._metrics_file.write(encode_record(record))
        self._metrics_file.flush()
        for sink in self._sinks:  # after the store has it: the store is the source of truth
            sink.log(record)

    def _close_metrics(self) -> None:
        if self._metrics_file is not None:
            with contextlib.suppress(OSError):  # a full disk: what was flushed stays, the rest is recomputed
                self._metrics_file.close()
            self._metrics_file = None
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close()

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """The training state at a step and the records through it: the run's new durable point. Serialised
        in memory first, so a full disk is an OSError (ENOSPC) from the write, not torch's RuntimeError."""
        if self._metrics_file is not None:
            os.fsync(self._metrics_file.fileno())
        import torch

        buffer = io.BytesIO()
        torch.save({"run": self.hash, **state, "records": records}, buffer)
        atomic_write(self.checkpoint_path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        import torch

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


# -- reading a store ---------------------------------------------------------------------------------------

STATES = ("running", *FINAL, "failed", "interrupted")  # what a status.json may say
SECTIONS = ("data", "model", "optim", "train", "probes")  # a training config's sections: objects


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
    """(config.json body, status, records) of one run directory, checked against the rules of a run
    (`config_problem`, `status_problem`, `record_columns`); a StoreError names what cannot be read or
    breaks them."""
    body, status, records, _, _ = _read_run(Path(path))
    return body, status, records


def _read_run(path: Path) -> tuple[dict, dict, list[dict], dict[str, list], dict[str, set[type]]]:
    """`read_run`, and the records as columns with the types of each column's values."""
    body, status = _read_config_and_status(path)
    metrics_path = path / "metrics.jsonl"
    records = _parse_records(metrics_path)
    columns = _record_columns(records, metrics_path)
    _check_count(metrics_path, status, len(records))
    return body, status, records, *columns


def _check_count(metrics_path: Path, status: dict[str, Any], rows: int) -> None:
    count = status.get("records")
    if status.get("state") in FINAL and type(count) is int and rows != count:
        # A finished run's file lost or cut since (its status says how many): shown, not silently short.
        raise StoreError(
            f"{metrics_path} holds {rows} of the {count} records the run finished with; running its "
            "config again restores them from its checkpoint, where it holds them"
        )


# -- the columnar copy of a final run's records --------------------------------------------------------------
# Parsing 1,000 runs' JSON takes seconds; their numbers as arrays load in a fraction of that. A final run's
# records never change, so a copy of them as columns is made once (`RunDir.finish`, or the first reader of a
# run finished before copies were made) and trusted only while it is the copy of metrics.jsonl as it is now:
# the file's sha256 is the one status.json keeps and the one the copy was made under. Anything else (no copy,
# a stale or foreign one, one that fails to load) means the JSON is read, as before: never an error.

COLUMNAR = "records.npz"
_COPY_FORMAT = 1
MAX_COPIED_BYTES = 256 << 20  # a final metrics.jsonl up to this size is read whole (hashed, then parsed)
_NUMBERS = {"float": np.dtype(np.float64), "int": np.dtype(np.int64), "bool": np.dtype(np.bool_)}
_KINDS = frozenset({*_NUMBERS, "str", "object"})


class _Column(NamedTuple):
    """One run's values of a record column: how pandas types them (`_kind`), the types of the values (None
    for a copy's, normalised when it was made: numbers as an array, NaN for a missing text) and the values."""

    kind: str
    types: set[type] | None
    values: list[Any] | np.ndarray


def _run_columns(path: Path, status: dict[str, Any]) -> tuple[int, dict[str, _Column]]:
    """The number of a run's records and their columns: from its columnar copy where the run is final and the
    copy is that of its metrics.jsonl as it is now, else parsed from the JSON, which then makes the copy of a
    final run whose file is still the one it finished with (where its directory is writable)."""
    metrics_path = path / "metrics.jsonl"
    key = status.get("records_sha256") if status.get("state") in FINAL else None
    data = _whole_file(metrics_path) if isinstance(key, str) and key else None
    final = data is not None and hashlib.sha256(data).hexdigest() == key
    copied = _read_copy(path / COLUMNAR, key) if final else None
    if copied is not None:
        _check_count(metrics_path, status, copied[0])
        return copied
    records = _parse_records(metrics_path, data)
    columns = _columns_of(records, metrics_path)
    _check_count(metrics_path, status, len(records))
    if final and records:
        _write_copy(path / COLUMNAR, key, len(records), columns)
    return len(records), columns


def _columns_of(records: list[dict[str, Any]], where: str | Path) -> dict[str, _Column]:
    """The records as checked columns (`record_columns`), each with how pandas types it."""
    columns, types = _record_columns(records, where)
    return {key: _Column(*_kind(values, types[key]), values) for key, values in columns.items()}


def _whole_file(path: Path) -> bytes | None:
    """The bytes of a regular file (b"" where it is missing), or None where it is larger than
    MAX_COPIED_BYTES (it is then streamed, and has no copy); a StoreError as `_parse_records` gives."""
    try:
        f = _open_regular(path)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise StoreError(_os_error(path, exc)) from None
    with f:
        try:
            return None if os.fstat(f.fileno()).st_size > MAX_COPIED_BYTES else f.read()
        except OSError as exc:
            raise StoreError(_os_error(path, exc)) from None


def _write_copy(path: Path, key: str, rows: int, columns: dict[str, _Column]) -> None:
    """Write the columnar copy of a final run's records, whose sha256 is `key`: the numbers as one 2-D array
    of 8-byte words (a row per column: an int64, a float64's bits, a bool as 0 or 1; one array, as each array
    of an .npz costs its reading a header of its own), the values of a text or other column as one JSON
    array (NaN a missing cell), and a header naming the columns in order with their kinds. Written to a
    temporary file and renamed; not synced: a copy that a crash damages fails to load and is made again.
    Where it cannot be written (a read-only store, a full disk) nothing is: the JSON goes on being read."""
    if not os.access(path.parent, os.W_OK):
        return
    numbers: list[np.ndarray] = []
    texts: list[bytes] = []
    entries: list[list[Any]] = []
    at = 0
    try:
        for name, (kind, _, values) in columns.items():
            if kind in _NUMBERS:  # ints and None of a float column as floats, as pandas holds them
                entries.append([name, kind, len(numbers), len(numbers) + 1])
                array = np.array(values, dtype=_NUMBERS[kind])
                numbers.append(array.astype(np.int64) if kind == "bool" else array.view(np.int64))
                continue
            if kind == "str":  # None and NaN are both a missing text
                values = [_MISSING if v is None else v for v in values]
            text = json.dumps(values).encode()  # NaN, Infinity and big ints kept exactly
            entries.append([name, kind, at, at + len(text)])
            texts.append(text)
            at += len(text)
    except (ValueError, TypeError, RecursionError):  # not values a copy holds: the JSON stays the only copy
        return
    header = {"format": _COPY_FORMAT, "records_sha256": key, "rows": rows, "columns": entries}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    if numbers:
        arrays["numbers"] = np.stack(numbers)
    if texts:
        arrays["text"] = np.frombuffer(b"".join(texts), dtype=np.uint8)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _read_copy(path: Path, key: str) -> tuple[int, dict[str, _Column]] | None:
    """The number of records and the columns of a run's columnar copy, if it is the copy of the records whose
    sha256 is `key`; None where there is none, or it is another's (stale or foreign), or it fails to load or
    to check. Loading runs no code (np.load without pickles) and inflates nothing (stored members only)."""
    try:
        with _open_regular(path) as f:
            if os.fstat(f.fileno()).st_size > MAX_COPIED_BYTES:
                return None
            with np.load(f, allow_pickle=False) as z:
                if any(i.compress_type != zipfile.ZIP_STORED for i in z.zip.infolist()):
                    return None
                header = json.loads(z["header"].tobytes())
                if header["format"] != _COPY_FORMAT or header["records_sha256"] != key:
                    return None
                arrays = {name: z[name] for name in z.files if name != "header"}
        rows, entries = header["rows"], header["columns"]
        text = arrays["text"].tobytes() if "text" in arrays else b""
        columns: dict[str, _Column] = {}
        for name, kind, start, stop in entries:
            if kind in _NUMBERS:
                block = arrays["numbers"]
                if block.dtype != np.int64 or block.shape[1:] != (rows,) or stop != start + 1:
                    return None
                values = block[start] != 0 if kind == "bool" else block[start].view(_NUMBERS[kind])
            else:
                values = json.loads(text[start:stop])
                if kind == "str" and not all(type(v) is str or v != v for v in values):
                    return None
            if kind not in _KINDS or not isinstance(name, str) or name in columns or len(values) != rows:
                return None
            columns[name] = _Column(kind, None, values)
        return rows, columns
    except Exception:  # whatever a damaged copy raises, the JSON is read instead
        return None


def _read_config_and_status(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json's body and the status of a run directory, each checked (`config_problem`,
    `status_problem`); a StoreError names what cannot be read or breaks them."""
    config_path = path / "config.json"
    body = _read_json(config_path)
    problem = config_problem(body, _dir_name(path))
    if problem:
        raise StoreError(f"{config_path}: {problem}")
    status_path = path / "status.json"
    status = _read_json(status_path) if status_path.exists() else {"state": "new"}
    problem = status_problem(status)
    if problem:
        raise StoreError(f"{status_path}: {problem}")
    return body, status


def config_problem(body: dict[str, Any], name: str) -> str | None:
    """What breaks the rules of a config.json (None: nothing): an object whose `config` is an object (a
    training config's sections objects, its `name` and `kind` strings) and whose `hash` is the name of the
    run's directory, with an optional `identity` string and an optional `supplied` object of strings."""
    config, digest = body.get("config"), body.get("hash")
    if not isinstance(config, dict):
        return "has no 'config' object: not a run config"
    if not isinstance(digest, str):
        return f"'hash' is {_clip(digest)}, not a string"
    if digest != name:
        return f"'hash' {_clip(digest)} is not the name of its run directory ({name!r})"
    if not isinstance(body.get("identity", ""), str):
        return f"'identity' is {_clip(body['identity'])}, not a string"
    supplied = body.get("supplied", {})
    if not isinstance(supplied, dict) or not all(isinstance(v, str) for v in supplied.values()):
        return f"'supplied' is {_clip(supplied)}, not an object of strings"
    for key in ("name", "kind"):
        if not isinstance(config.get(key, ""), str):
            return f"config.{key} is {_clip(config[key])}, not a string"
    if config.get("kind", "train") == "train":
        for section in SECTIONS:
            if not isinstance(config.get(section, {}), dict):
                return f"config.{section} is {_clip(config[section])}, not an object"
    return None


def status_problem(status: dict[str, Any]) -> str | None:
    """What breaks the rules of a status.json (None: nothing): an object whose `state` is one of STATES
    and whose `error`, if any, is a string."""
    state = status.get("state")
    if not isinstance(state, str) or state not in (*STATES, "new"):
        return f"state {_clip(state)} is not one of {', '.join(STATES)}"
    if not isinstance(status.get("error", ""), str | None):
        return f"'error' is {_clip(status['error'])}, not a string"
    return None


def _dir_name(path: Path) -> str:
    """The name of a run's directory, also when it is given as `.` (symlinks not followed)."""
    return Path(os.path.abspath(path)).name


def read_run_or_corrupt(
    path: Path, records: bool = True
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """`read_run`, except that an unreadable run is (its hash, status `corrupt` with the reason, no records):
    what readers of a whole store use, so one bad directory does not hide the others. `records=False`: its
    config and status only, checked as ever, and no records (what counting a store's states needs: the
    records are most of a store's bytes)."""
    try:
        if not records:
            return (*_read_config_and_status(Path(path)), [])
        return read_run(path)
    except (StoreError, OSError) as exc:
        return {"config": {}, "hash": _dir_name(path)}, {"state": "corrupt", "error": _reason(exc)}, []


def _reason(exc: Exception) -> str:
    """Why a run is corrupt, on one line."""
    text = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    return " ".join(text.split())


def load_runs(root: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """One table of every run under `root` (or only of the `runs` named by hash): a row per record, with the
    run's config as dotted columns. A run that cannot be read is one row with status `corrupt` and its
    `error`.

    The table is built a column at a time for the whole store (one array per column, its type the one that
    pandas gives a column of these values), not a frame per run, from the columnar copies of final runs
    (`COLUMNAR`) and the JSON of the others: 1,000 runs of 1,000 records load in a second or two."""
    import pandas as pd

    parts = _table_parts(root, runs)
    if not parts:
        return pd.DataFrame()
    order, live, rows = _layout(parts)
    columns = {key: _table_column(key, live, rows) for key in order}
    table = pd.DataFrame(columns, copy=False)
    table.attrs["config_columns"] = _config_columns(parts)
    return table


def _table_parts(root: str | Path, runs: Iterable[str] | None = None) -> list[_TablePart]:
    paths = run_dirs(root) if runs is None else [Path(root) / name for name in sorted(runs)]
    with _collector_paused():
        return [_table_part(path) for path in paths]


def _layout(parts: list[_TablePart]) -> tuple[dict[str, None], list[_TablePart], np.ndarray]:
    """The table's columns in order, the runs that have rows, and their numbers of rows."""
    order = dict.fromkeys(itertools.chain.from_iterable(p.order for p in parts))
    live = [p for p in parts if p.rows]  # a run without records names its columns, and has no rows
    return order, live, np.array([p.rows for p in live], dtype=np.int64)


def _config_columns(parts: list[_TablePart]) -> list[str]:
    """Which columns are the config's (constant per run by construction) and which are records that happen
    to be constant (a constant `lr`): legends and `runs ls` name runs by the former only."""
    keys = dict.fromkeys(itertools.chain.from_iterable(p.constants for p in parts))
    return [k for k in keys if k not in ("run", "status", "error")]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while records are parsed: they hold no cycles, and each of its
    passes would walk the millions of objects made so far for nothing (a tenth of the time of a big store)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _TablePart:
    """One run in `load_runs`: its rows, the values constant over them (hash, status, config keys) and its
    records' columns."""

    rows: int
    constants: dict[str, Any]
    columns: dict[str, _Column]
    order: list[str]  # its columns, in the order its table shows them


def _table_part(path: Path) -> _TablePart:
    try:
        body, status = _read_config_and_status(path)
        rows, columns = _run_columns(path, status)
        meta = {k: tuple(v) if isinstance(v, list) else v for k, v in config_columns(body).items()}
    except (StoreError, OSError, RecursionError) as exc:
        reason = "config.json nests too deeply" if isinstance(exc, RecursionError) else _reason(exc)
        constants = {"run": _dir_name(path), "status": "corrupt", "error": reason}
        return _TablePart(1, constants, {}, ["step", *constants])
    constants = {"run": body["hash"], "status": shown_state(status), **meta}  # they win over records
    columns = {k: v for k, v in columns.items() if k not in constants}
    step = [] if columns or "step" in constants else ["step"]  # a run without records has a step column
    return _TablePart(rows, constants, columns, [*step, *columns, *constants])


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config's dotted keys, as `pandas.json_normalize(config, sep=".")` names and orders them: the top
    level's plain values first, then each section's leaves, depth first; an empty section has none."""
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    nested: dict[str, Any] = {}

    def leaves(value: Any, key: str) -> None:
        if not isinstance(value, dict):
            nested[key] = value
            return
        for k, v in value.items():
            leaves(v, f"{key}.{k}" if key else k)

    for key, value in config.items():
        if isinstance(value, dict):
            leaves(value, key)
    return {**flat, **nested}


def config_columns(body: dict[str, Any]) -> dict[str, Any]:
    """A run's config as every reader shows it (`runs ls`, `load_runs`, the trackers), from its config.json
    `body`: the config's dotted keys, with what a model or data passed in Python was in place of the config's
    unused kinds (`supplied_keys`)."""
    config = body.get("config")
    return {**flatten_config(config if isinstance(config, dict) else {}), **supplied_keys(body)}


def supplied_keys(body: dict[str, Any]) -> dict[str, str]:
    """The dotted keys that a run's user-supplied model or data (config.json's `supplied`) replace where the
    run is shown (`runs ls`, the trackers), since the config's own kinds were not what ran: `model.kind` the
    model's class, `model.id` the caller's model_id, `data.kind` e.g. "tensors (150 train, 50 test)". A run
    stored before config.json said so shows "supplied" for the parts its identity names; {} for a run of the
    config's own model and data."""
    supplied = body.get("supplied")
    if isinstance(supplied, dict):
        names = {"model": "model.kind", "model_id": "model.id", "data": "data.kind"}
        return {names[k]: v for k, v in supplied.items() if k in names and isinstance(v, str)}
    identity = body.get("identity")
    parts = {p.partition(":")[0] for p in identity.split(",")} if isinstance(identity, str) else set()
    return {f"{k}.kind": "supplied" for k in ("data", "model") if k in parts}


# The type of a column is that of pandas.concat of per-run frames: each run's values typed as
# pd.DataFrame(records) types them (`_kind`), then the types of the runs combined as concat combines them
# (`_combined`, asked of pandas itself), a run without the column adding missing values.
_KIND_SAMPLES = {"int": [1], "float": [0.5], "bool": [True], "str": ["a"]}
_NONE = type(None)


def _kind(values: list[Any], types: set[type]) -> tuple[str, set[type]]:
    """How pandas types one run's values of a column (of these types): int, float, bool, str or object;
    and the types."""
    if types == {int}:
        return ("int" if _int64(values) else "object"), types
    if types == {bool}:
        return "bool", types
    if types <= {int, float, _NONE} and types != {_NONE}:
        ints = [v for v in values if type(v) is int] if int in types else []
        return ("float" if _int64(ints) else "object"), types
    if str in types and types <= {str, float, _NONE}:
        only_nan = all(v != v for v in values if type(v) is float)  # missing cells are NaN
        return ("str" if only_nan else "object"), types
    return "object", types


def _int64(values: list[int]) -> bool:
    return not values or (min(values) >= -(2**63) and max(values) < 2**63)


@functools.cache
def _combined(kinds: frozenset[str], missing: bool) -> Any:
    """The dtype of pandas.concat of columns of these kinds (and of frames without it, if `missing`)."""
    import pandas as pd

    frames = [pd.DataFrame({"c": _KIND_SAMPLES[k]}) for k in sorted(kinds - {"object"})]
    if "object" in kinds:
        frames.append(pd.DataFrame({"c": np.fromiter([("a",)], dtype=object, count=1)}))
    if missing:
        frames.append(pd.DataFrame({"other": [0]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.concat(frames, ignore_index=True)["c"].dtype


def _table_column(key: str, live: list[_TablePart], rows: np.ndarray) -> Any:
    """One column of `load_runs`'s table: an array of its rows' values (`rows` of each run), typed as pandas
    would type the concatenation of per-run frames."""
    _, values, per_run = _column(key, live, rows)
    if not per_run:
        return values
    if isinstance(values, np.ndarray):
        return np.repeat(values, rows)
    return values.take(np.repeat(np.arange(len(live)), rows))


def _column(key: str, live: list[_TablePart], rows: np.ndarray) -> tuple[Any, Any, bool]:
    """The dtype of a column of the table and its values: one per run (`per_run`: a config key's, the same
    over the run's rows) or one per row."""
    dtype, from_records = _column_type(key, live)
    if not from_records:
        return dtype, _array([part.constants.get(key, _MISSING) for part in live], dtype), True
    return dtype, _column_rows(key, live, dtype), False


def _column_type(key: str, live: list[_TablePart]) -> tuple[Any, bool]:
    """The dtype of a column of the table, and whether any run has it in its records (else it is a config
    key's, or no run's: NaN)."""
    kinds: dict[int, str] = {}
    from_records = False
    for i, part in enumerate(live):
        column = part.columns.get(key)
        if column is not None:
            kinds[i] = column.kind
            from_records = True
        elif key in part.constants:
            value = part.constants[key]
            kinds[i] = _kind([value], {type(value)})[0]
    if not kinds:
        return np.dtype(np.float64), False
    return _combined(frozenset(kinds.values()), len(kinds) < len(live)), from_records


def _column_rows(key: str, parts: list[_TablePart], dtype: Any) -> Any:
    """The values of a column over the rows of `parts`, as an array of `dtype`."""
    chunks: list[Any] = []  # each run's values: a list, or a copy's array of numbers
    for part in parts:
        column = part.columns.get(key)
        if column is None:
            chunks.append([part.constants.get(key, _MISSING)] * part.rows)
        elif column.types is not None and _is_object(dtype):
            chunks.append(_as_object(column.values, column.kind, column.types))
        else:
            chunks.append(column.values)
    if _is_numbers(dtype):  # an array per run, joined
        return np.concatenate([np.asarray(chunk, dtype=dtype) for chunk in chunks])
    values = [v for chunk in chunks for v in (chunk.tolist() if isinstance(chunk, np.ndarray) else chunk)]
    return _array(values, dtype)


def _as_object(values: list[Any], kind: str, types: set[type]) -> list[Any]:
    """One run's values as its own frame would hold them once its column is cast to object: a float column
    holds floats (ints as floats, None as NaN), a str column NaN for None."""
    if kind == "float" and types != {float}:
        return [math.nan if v is None else float(v) for v in values]
    if kind == "str" and _NONE in types:
        return [_MISSING if v is None else v for v in values]
    return values


def _is_object(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind == "O"


def _is_numbers(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind != "O"


def _array(values: list[Any], dtype: Any) -> Any:
    import pandas as pd

    if _is_object(dtype):  # fromiter: a tuple or list value stays one cell
        return np.fromiter(values, dtype=object, count=len(values))
    if isinstance(dtype, np.dtype):
        return np.array(values, dtype=dtype)
    return pd.array(values, dtype=dtype)


COLLECT_FORMATS = (".csv", ".parquet")


def collect_runs(root: str | Path, out: str | Path) -> pd.DataFrame:
    """Every run of a store as one file (`load_runs`: a row per record, the run's hash and status, its config
    as dotted columns), CSV or Parquet by the suffix of `out`, written atomically. Values that are not scalars
    (lists, tuples) are written as their JSON text, and so are the values of a column that mixes text with
    numbers (e.g. `optim.lr`, a number or "1/sharpness"), so that every column has one type.

    Returns the table written: for CSV the `load_runs` table, for Parquet the Arrow table (columns typed
    `pandas.ArrowDtype`), which is built from the runs without a pandas table in between, as
    `DataFrame.to_parquet` would have converted and written that table."""
    import pandas as pd

    out = Path(out)
    if out.suffix not in COLLECT_FORMATS:
        raise StoreError(f"--out {out}: must end in {' or '.join(COLLECT_FORMATS)}")
    if out.suffix == ".parquet":
        return _collect_parquet(root, out)
    table = load_runs(root)
    if table.empty:
        raise StoreError(f"no runs in {root}")
    for column in [c for c in table.columns if pd.api.types.is_object_dtype(table[c])]:
        values = table[column].to_numpy()
        shown = _one_type(values)
        if shown is not values:
            table[column] = pd.Series(shown, index=table.index, dtype=object)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    return table


def _collect_parquet(root: str | Path, out: Path) -> pd.DataFrame:
    """`collect_runs` to Parquet, each column of the table made straight into an Arrow array, with the pandas
    metadata and attrs that `DataFrame.to_parquet` writes: `pandas.read_parquet` gives back the frame that
    the pandas table would have written. A config column is its values per run, dictionary-encoded over the
    rows (as Parquet encodes it anyway) rather than repeated: new memory costs more than the writing (on a
    VM, ~2 ms a MB for its page faults). Its Arrow schema is not stored (it would make those columns
    categorical on reading), so pyarrow reads text as `string`, the parquet type, where pandas' `str` would
    have stored `large_string`."""
    import pandas as pd

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError("writing parquet needs pyarrow: pip install 'learnscope[parquet]'") from None
    parts = _table_parts(root)
    order, live, rows = _layout(parts)
    if not rows.sum():
        raise StoreError(f"no runs in {root}")
    runs = pa.array(np.repeat(np.arange(len(live), dtype=np.int32), rows))
    arrays, types, dtypes = [], {}, {}
    for key in order:
        dtypes[key], values, per_run = _column(key, live, rows)
        if _is_object(dtypes[key]):
            values = _one_type(values)
        array = pa.array(values, from_pandas=True)  # as pyarrow converts a pandas column: NaN is null
        types[key] = array.type
        arrays.append(_over_rows(array, runs) if per_run else array)
    table = pa.Table.from_arrays(arrays, names=list(order))
    empty = pd.DataFrame({key: pd.Series([], dtype=dtype) for key, dtype in dtypes.items()})
    schema = pa.schema(list(types.items()))
    metadata = pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema.metadata
    metadata[b"PANDAS_ATTRS"] = json.dumps({"config_columns": _config_columns(parts)}).encode()

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema, compression="snappy", store_schema=False) as writer:
            writer.write_table(table)
            writer.add_key_value_metadata(metadata)  # not stored with the schema

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, write)
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _over_rows(per_run: Any, runs: Any) -> Any:
    """A column of values per run over the rows (`runs`: each row's run): its distinct values once, and
    the index of its run's value for each row, in the narrowest integers that hold it."""
    import pyarrow as pa

    if pa.types.is_null(per_run.type):
        return pa.nulls(len(runs))
    encoded = per_run.dictionary_encode()
    size = len(encoded.dictionary)
    narrow = pa.int8() if size < 1 << 7 else pa.int16() if size < 1 << 15 else pa.int32()
    return pa.DictionaryArray.from_arrays(encoded.indices.cast(narrow).take(runs), encoded.dictionary)


def _one_type(values: np.ndarray) -> np.ndarray:
    """An object column as `collect_runs` writes it: as it is where its values (missing ones aside) are all
    text or all numbers, else each value as its JSON text (`_texts`)."""
    import pandas as pd

    present = [v for v in values.tolist() if v is not None and not _is_nan(v)]
    if all(isinstance(v, str) for v in present) or all(_is_number(v) for v in present):
        return values
    return _texts(pd.Series(values, dtype=object)).to_numpy()


def _texts(column: pd.Series) -> pd.Series:
    """`_text` of each value (None and NaN kept), computed once per distinct object: a config column holds
    one object per run, repeated over its rows."""
    import pandas as pd

    values = column.tolist()
    ids = list(map(id, values))
    distinct = dict(zip(ids, values, strict=True))  # every value is alive, so ids tell objects apart
    shown = {i: v if v is None or _is_nan(v) else _text(v) for i, v in distinct.items()}
    return pd.Series(list(map(shown.__getitem__, ids)), index=column.index, dtype=object)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
