"""Your own training loop, logged: `learnscope.track(config, store)` gives a loop that learnscope does not run
what every other run has (the store, resume, reports, trackers) without writing a run kind.

    with learnscope.track({"lr": 0.1, "width": 64, "seed": 0}, store="runs") as run:
        model, opt = ...                         # built as ever
        state = run.restore()                    # the last checkpointed state (RNGs set back), or None
        if state is not None:
            model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        for step in run.steps(1000):             # the steps still to do: none once the run is done
            ...
            run.log(step, loss=loss.item())
            if step % 100 == 99:
                run.checkpoint({"model": model.state_dict(), "opt": opt.state_dict()})

Why it exists: the run store's promises (a run named by its config's hash, done once, resumed exactly after
kill -9, one table of every run) are what researchers with their own loop lack, and a run kind is more than
they want to write. How it maps to the one lifecycle (runs/lifecycle.py): the `with` block is `execute`'s
`work`. Entering claims the run (`claimed`: the lock, a run final already is read back, the checkpoint as
the resume point) and marks it running (`running`: config.json, status); `metrics.jsonl` is rewritten to the
checkpoint's records (the store's invariant), so what the loop logged after its last checkpoint is dropped
and logged again. `run.log` appends a record (and so feeds the trackers, `store.RECORD_SINKS`);
`run.checkpoint` is the run's new durable point (`RunDir.save_checkpoint`: the user's state, the global
RNGs and the records through it, written atomically). A clean exit makes the run `done` with its records'
digest; an exception leaves it `failed` with the one-line error, Ctrl-C or SIGTERM `interrupted`, each
resumed from its last checkpoint when the same config is tracked again.

The config is the run's identity: plain JSON values (numbers, strings, booleans, None, lists, dicts) whose
canonical JSON, without `name`, is hashed as every run's is; it is stored as the run's config (under `kind`
"own_loop"), so `runs ls`, `report`, `runs collect` and `load_runs` show its keys as columns.
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import tracking
from .config import run_digest
from .errors import ConfigError, LearnscopeError, StoreError, Terminated, describe_os_error, raise_terminated
from .runs.lifecycle import claimed, finished, running
from .store import RunDir

KIND = "own_loop"  # the `kind` of a tracked run's stored config: no registered run kind computes it


def track(config: Mapping[str, Any], store: str | Path = "runs") -> Run:
    """The run of `config` in `store`, to be entered with `with`: a run done already is read back (no step
    left), one killed or failed resumes from its last checkpoint. `config` holds plain JSON values; anything
    else is a ConfigError naming its key, raised here, before anything is written."""
    return Run(config, store)


class OwnLoopConfig:
    """A user's config as the store's `RunSpec`: hashed (without `name`) and stored with kind "own_loop"."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **self.values}

    def run_hash(self) -> str:
        return run_digest({k: v for k, v in self.to_dict().items() if k != "name"})


class Run:
    """One run of a user's loop in the store (`track`). Attributes: `path`, `hash`, `config` (the checked
    config), `done` (final already when entered: nothing to do), `resume_step` (the first step `steps`
    gives), `records` (every record so far: the checkpoint's, then those logged; a finished run's all)."""

    def __init__(self, config: Mapping[str, Any], store: str | Path = "runs"):
        self.config = plain_config(config)
        self._dir = RunDir(store, OwnLoopConfig(self.config))
        self.path, self.hash = self._dir.path, self._dir.hash
        self.done = False
        self.resume_step = 0
        self.records: list[dict[str, Any]] = []
        self._checkpoint: dict[str, Any] | None = None
        self._session: contextlib.AbstractContextManager | None = None
        self._entered = False
        self._open = False  # inside the `with` block
        self._step: int | None = None  # the step `steps` is at
        self._envs: list[dict[str, Any]] = []
        self._own_sigterm = False
        self._started = 0.0

    # -- the lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if self._entered:
            raise LearnscopeError(f"run {self.hash}: a Run is entered once; call learnscope.track again")
        self._entered = True
        session = self._lifecycle()
        try:
            session.__enter__()
        except OSError as exc:  # the store cannot be written (full, read-only): one line
            raise StoreError(describe_os_error(exc)) from None
        self._session, self._open = session, True
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        session, self._session, self._open = self._session, None, False
        try:
            session.__exit__(kind, exc, tb)  # the loop's own exception, recorded, goes on unchanged
        except OSError as error:  # the store's, marking the run final: one line
            raise StoreError(describe_os_error(error)) from None
        if isinstance(exc, Terminated) and self._own_sigterm:
            # Recorded interrupted, the lock released: now end as SIGTERM would have ended the process
            # (its handler is the default again).
            signal.raise_signal(signal.SIGTERM)
        return False

    @contextlib.contextmanager
    def _lifecycle(self) -> Iterator[None]:
        done = finished(self._dir)  # a final run is read back without waiting for its lock
        if done is not None:
            self._read_back(done.records, done.info)
            yield
            return
        tracking.check_available(tracking.requested())  # LEARNSCOPE_TRACK's trackers, before any record
        with claimed([self._dir]) as (results, todo, checkpoints):
            if results:  # finished by another process meanwhile
                self._read_back(results[self.hash].records, results[self.hash].info)
                yield
                return
            with running(todo, "running the loop"), self._sigterm_interrupts():
                self._start(checkpoints[0])
                yield
            self._dir.finish("done", self.records, **self._final_info())

    def _read_back(self, records: list[dict[str, Any]], status: dict[str, Any]) -> None:
        self.done, self.records = True, records
        steps = status.get("steps")
        self.resume_step = steps if type(steps) is int else _after(records, 0)

    def _start(self, checkpoint: dict[str, Any] | None) -> None:
        """The resume point: the checkpoint's step and records (metrics.jsonl rewritten to exactly them),
        or a fresh start."""
        from .runs.train import environment_stretches

        self._started = time.perf_counter()
        env = _environment()
        if checkpoint is not None:
            if type(checkpoint.get("step")) is not int or "state" not in checkpoint:
                raise StoreError(f"checkpoint {self._dir.checkpoint_path} is not one of learnscope.track")
            self._checkpoint = checkpoint
            self.resume_step = checkpoint["step"]
            self.records = list(checkpoint.get("records", []))
            self._envs = list(checkpoint.get("envs", []))
        self._envs = environment_stretches(self._envs, env, self.resume_step)
        self._dir.restart_metrics(self.records)

    @contextlib.contextmanager
    def _sigterm_interrupts(self) -> Iterator[None]:
        """SIGTERM (a cluster's notice) raises `Terminated` in the loop, so the run is recorded `interrupted`
        as the CLI's runs are; only where nobody handles SIGTERM yet (its default would end the process with
        the status left `running`), and only in the main thread, where Python runs signal handlers."""
        own = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        )
        if own:
            signal.signal(signal.SIGTERM, raise_terminated)
        self._own_sigterm = own
        try:
            yield
        finally:
            if own:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _final_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "env": {k: v for k, v in self._envs[-1].items() if k != "from_step"},
            "steps": self._next_step(),
            "seconds": round(time.perf_counter() - self._started, 3),
        }
        if len(self._envs) > 1:
            info["env_history"] = self._envs
        return info

    # -- what the loop calls ----------------------------------------------------------------------------
    def restore(self) -> Any:
        """The state the run resumes from: what the last `checkpoint` was given (tensors on the CPU), with the
        global RNGs (torch, numpy, Python) set back to where they were then; None where the run has no
        checkpoint (a fresh start). Call it once the model and optimiser are built, just before the loop:
        their initialisation draws from the RNGs it sets back. On a finished run: its last checkpoint's state
        (e.g. to evaluate the trained model)."""
        self._require_open("restore")
        checkpoint = self._checkpoint
        if checkpoint is None and self.done:
            checkpoint = self._dir.load_checkpoint()
        if checkpoint is None:
            return None
        if "rng" in checkpoint:
            from .runs.train import set_rng_state

            set_rng_state(checkpoint["rng"])
        return checkpoint["state"]

    def steps(self, total: int) -> Iterator[int]:
        """resume_step, ..., total - 1: the steps still to do (none on a finished run). Put `total` in the
        config: it is part of what the run is."""
        self._require_open("steps")
        if type(total) is not int or total < 0:
            raise LearnscopeError(f"run.steps({total!r}): the number of steps must be an integer >= 0")
        return iter(()) if self.done else self._count(total)

    def _count(self, total: int) -> Iterator[int]:
        for step in range(self.resume_step, total):
            self._step = step
            yield step

    def log(self, step: int, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Append the record {"step": step, **values, **more} to the run (metrics.jsonl, and the trackers).
        A value is a number, a string, a bool, None or a list of them; a one-element tensor or numpy scalar
        is taken as its Python number. Keys such as "test/acc" go in `values`."""
        self._require_running("log")
        if values is not None and not isinstance(values, Mapping):
            raise LearnscopeError(f"run.log(step, values): values is a {type(values).__name__}, not a dict")
        if isinstance(step, bool) or not isinstance(step, int):
            step = _integer(step)
        record: dict[str, Any] = {"step": int(step)}
        for key, value in {**(values or {}), **more}.items():
            if not isinstance(key, str) or key == "step":
                raise LearnscopeError(f"run.log: key {key!r}: a record's keys are strings other than 'step'")
            record[key] = _record_value(key, value)
        try:
            self._dir.append(record)
        except OSError as exc:
            raise StoreError(describe_os_error(exc)) from None
        self.records.append(record)

    def checkpoint(self, state: Any) -> None:
        """Make the run's durable point the end of the current step (`steps`' step, else the last logged
        one): `state` (what `restore` gives back), the global RNGs and the records so far, written to a
        temporary file and renamed. A resume starts at the next step and drops the records logged after
        this. `state` may hold what torch.load(weights_only=True) reads back, checked here: tensors,
        numbers, strings, bytes, None, torch dtypes, devices and sizes, and lists, tuples, sets and dicts of
        them (a state_dict, an optimiser's, a torch.Generator's get_state()); not numpy arrays nor objects."""
        self._require_running("checkpoint")
        _check_loadable(state, "state", set())
        from .runs.train import get_rng_state

        body = {"step": self._next_step(), "state": state, "rng": get_rng_state(), "envs": self._envs}
        try:
            self._dir.save_checkpoint(body, self.records)
        except OSError as exc:
            raise StoreError(describe_os_error(exc)) from None

    def _next_step(self) -> int:
        """The step after the one the loop is at: `steps`' step, else the last record's, else the start."""
        if self._step is not None:
            return self._step + 1
        return _after(self.records, self.resume_step)

    def _require_open(self, what: str) -> None:
        if not self._open:
            raise LearnscopeError(f"run.{what}() is for inside `with learnscope.track(...) as run:`")

    def _require_running(self, what: str) -> None:
        self._require_open(what)
        if self.done:
            raise LearnscopeError(
                f"run {self.hash} is done already ({self.path}): its records are run.records, and "
                f"run.{what}() has nothing to add; delete the directory to run it again"
            )


# -- checks of what the user hands over ----------------------------------------------------------------


def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` as plain JSON values (tuples as lists, int and float subclasses as ints and floats), or a
    one-line ConfigError naming the first key that is not one: what a run's hash and config.json need."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"track: the config is a {type(config).__name__}, not a dict of plain values")
    if "kind" in config:
        raise ConfigError("config key 'kind' is learnscope's (the run kind, 'own_loop'): name it otherwise")
    if not isinstance(config.get("name", ""), str):
        raise ConfigError(f"config key 'name' is {config['name']!r}: a run's name is a string")
    return _plain(config, "")


def _plain(value: Any, key: str) -> Any:
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, int):  # a subclass (an IntEnum) as the int it is; numpy's integers are refused below
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} is {value}: JSON has no NaN or infinity")
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"config key {_dotted(key, repr(k))}: keys are strings")
            out[k] = _plain(v, _dotted(key, k))
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    shown = " ".join(repr(value).split())[:40]
    raise ConfigError(
        f"config key {key!r} is {shown} ({type(value).__name__}), not a plain JSON value: give a number, "
        "string, bool, None, list or dict (float(x) of a numpy or torch scalar)"
    )


def _dotted(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _integer(step: Any) -> int:
    """A step given as a numpy integer or a one-element integer tensor, as an int."""
    item = getattr(step, "item", None)
    try:
        value = item() if callable(item) else step
    except (ValueError, RuntimeError):  # more than one element
        value = None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LearnscopeError(f"run.log: the step {step!r} is not an integer")
    return value


def _record_value(key: str, value: Any) -> Any:
    """A value as the store writes it (a number, string, bool, None, or a list of them)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, list | tuple):
        return [_record_value(key, v) for v in value]
    for plain in (int, float, str):  # a subclass (numpy's float64, an IntEnum) as the plain value it is
        if isinstance(value, plain):
            return plain(value)
    item = getattr(value, "item", None)  # a one-element tensor or array, a numpy scalar
    if callable(item):
        try:
            number = item()
        except (ValueError, RuntimeError):  # more than one element
            number = None
        if type(number) in (bool, int, float):
            return number
    shown = " ".join(repr(value).split())[:40]
    raise LearnscopeError(
        f"run.log: {key!r} is {shown} ({type(value).__name__}): a record holds numbers, strings, bools, None "
        "and lists of them (loss.item() of a tensor)"
    )


def _after(records: list[dict[str, Any]], default: int) -> int:
    step = records[-1].get("step") if records else None
    return step + 1 if type(step) is int else default


_LOADABLE_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray)
_LOADABLE_MAPPINGS = (dict, OrderedDict, Counter)


def _check_loadable(value: Any, where: str, seen: set[int]) -> None:
    """A one-line error naming the first part of `value` that torch.load(weights_only=True) would refuse to
    read back: found now, not when a killed run tries to resume. The types are those of torch's weights-only
    unpickler (exact types: a subclass, such as numpy's float64, is pickled by its own class)."""
    kind = type(value)
    if kind in _LOADABLE_LEAVES:
        return
    torch = sys.modules.get("torch")
    if torch is not None and (
        kind in (torch.Tensor, torch.nn.Parameter, torch.Size, torch.device, torch.dtype)
    ):
        return
    if kind in (*_LOADABLE_MAPPINGS, list, tuple, set):
        if id(value) in seen:
            return
        seen.add(id(value))
        if kind in _LOADABLE_MAPPINGS:
            for key, item in value.items():
                _check_loadable(key, f"{where} key {key!r}", seen)
                _check_loadable(item, f"{where}[{key!r}]", seen)
        else:
            for i, item in enumerate(value):
                _check_loadable(item, f"{where}[{i}]", seen)
        return
    raise LearnscopeError(
        f"run.checkpoint: {where} is a {kind.__module__}.{kind.__qualname__}, which torch.load("
        "weights_only=True) does not read back: keep to tensors, numbers, strings, None and lists, tuples "
        "and dicts of them (torch.from_numpy(a) for a numpy array)"
    )


def _environment() -> dict[str, Any]:
    """What decides the numbers of a run beside its config: a training run's (its device is the loop's own,
    unknown here) and Python's version, whose `random` the loop's RNG state holds."""
    from .runs.train import environment

    return {**environment(None), "python": platform.python_version()}
