"""The life of a run in the store, written once for every run kind, the ensemble and every executor.

    final already?  ── yes ──► its records read back, checked (`RunDir.final_records`)
        │ no
    lock ──► final meanwhile? ──► checkpoint (the resume point) ──► inputs checked / recorded
        ──► config.json ──► status `running` ──► the computation ──► records, status `done` | `diverged`
                                                     │ raises
                                                     ▼
                              status `interrupted` (Ctrl-C, SIGTERM) or `failed` (with the one-line error)

A run kind supplies only its computation (`execute`'s `work`: given the run directories still to run and their
checkpoints, return their results); the lock, the files and the states are here, so the store's invariant has
one keeper. A loop that is not ours (`own_loop.track`: the user's `with` block is the computation) goes
through `execute`'s two halves, `claimed` and `running`, and marks its run final itself. A run that is refused
before it writes anything (bad input in a sweep) is recorded `failed` here too (`record_refusal`), so a rerun
reports it instead of trying it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import INTERRUPTS, LearnscopeError, RunBusy, StoreError, describe_os_error, out_of_memory
from ..inputs import recording_inputs
from ..store import FINAL, RunDir
from ..ui import notice


@dataclass
class RunResult:
    """What running (or reading back) one run gives: its config, its final state and records, where it is
    stored, and for a training run the trained model when it was trained in this process. In a sweep the
    records stay in the store (`records` empty, `error` says why a run failed)."""

    config: Any
    status: str = "done"  # done | diverged | failed | busy (a sweep's run that another process holds)
    records: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    model: Any = None  # the trained nn.Module when trained in this process
    info: dict[str, Any] = field(default_factory=dict)  # status.json's extra fields (environment, ...)
    computed: bool = True  # False when read back from a finished run
    error: str | None = None
    same_as: int | None = None  # in a sweep: the index of the config of the same run that ran it


def run_state(run_dir: RunDir) -> str:
    """The run's state; an unreadable status.json counts as not final (the run is computed again)."""
    try:
        return run_dir.status()["state"]
    except StoreError:
        return "unreadable"


def finished(run_dir: RunDir, recompute_lost: bool = False) -> RunResult | None:
    """A final run read back, its files checked (and repaired where they can be: `RunDir.final_records`);
    None if it is not final. With `recompute_lost` (a run whose records are a function of its config alone),
    a final run whose records were lost is not an error: it counts as not final (`execute` says so)."""
    if run_state(run_dir) not in FINAL:
        return None
    try:
        status = run_dir.status()
        records = run_dir.final_records()
        return RunResult(run_dir.config, status["state"], records, run_dir.path, info=status, computed=False)
    except RunBusy:
        raise
    except StoreError:
        if not recompute_lost:
            raise
        return None


Work = Callable[[list[RunDir], list[dict[str, Any] | None]], Sequence[RunResult]]


def execute(
    run_dirs: Sequence[RunDir],
    work: Work,
    *,
    inputs: Sequence[Path] = (),
    doing: str = "running",
    recompute_lost: bool = False,
    unavailable: Callable[[StoreError], Exception] | None = None,
) -> list[RunResult]:
    """Run `run_dirs` through their lifecycle, together (an ensemble is several, one computation), and return
    their results in order: those final already are read back; the others, under their locks, resume from
    their checkpoints through `work(todo, checkpoints)`, which returns one result per run in `todo`.

    `inputs` are the files read before (the data), checked against those a resumed run started on; files
    read during `work` are recorded too. `doing` names the computation in an out-of-memory error.
    `unavailable` turns a run that cannot be started (held by another process, a foreign or unreadable
    checkpoint) into the caller's error before anything is written. An error of the operating system (full
    disk, read-only store) is a one-line StoreError; any failure leaves each run `failed` or `interrupted`,
    to resume from its last checkpoint when run again."""
    try:
        with claimed(run_dirs, inputs, recompute_lost, unavailable) as (results, todo, checkpoints):
            if todo:
                results.update(_run(todo, checkpoints, work, list(inputs), doing))
    except OSError as exc:
        raise StoreError(describe_os_error(exc)) from None
    return [results[run_dir.hash] for run_dir in run_dirs]


@contextlib.contextmanager
def claimed(
    run_dirs: Sequence[RunDir],
    inputs: Sequence[Path] = (),
    recompute_lost: bool = False,
    unavailable: Callable[[StoreError], Exception] | None = None,
) -> Iterator[tuple[dict[str, RunResult], list[RunDir], list[dict[str, Any] | None]]]:
    """`execute`'s first half, for a caller that drives the computation itself (`own_loop.track`): the runs
    locked while the block lasts, and (results of those final already, by hash; the runs still to compute;
    their checkpoints), each checkpoint loaded (failing early on a foreign one) and the inputs checked or
    recorded."""
    with contextlib.ExitStack() as locks:
        results: dict[str, RunResult] = {}
        todo: list[RunDir] = []
        checkpoints: list[dict[str, Any] | None] = []
        try:
            for run_dir in run_dirs:
                locks.enter_context(run_dir.lock())
            for run_dir in run_dirs:
                done = finished(run_dir, recompute_lost)  # by another process meanwhile
                if done is not None:
                    results[run_dir.hash] = done
                    continue
                if recompute_lost and run_state(run_dir) in FINAL:
                    lost = "is done but its records were lost or changed: computing it again"
                    notice(f"run {run_dir.hash} {lost}")
                checkpoint = run_dir.load_checkpoint()  # fails early (and harmlessly) on a foreign one
                run_dir.start_inputs(list(inputs), resuming=checkpoint is not None)
                todo.append(run_dir)
                checkpoints.append(checkpoint)
        except StoreError as exc:
            if unavailable is None:
                raise
            raise unavailable(exc) from None
        yield results, todo, checkpoints


def _run(
    todo: list[RunDir], checkpoints: list, work: Work, inputs: list[Path], doing: str
) -> dict[str, RunResult]:
    with running(todo, doing):
        with recording_inputs() as read:
            computed = list(work(todo, checkpoints))
        for run_dir, checkpoint in zip(todo, checkpoints, strict=True):
            if read and checkpoint is None:  # files the computation itself read (a moments file)
                run_dir.start_inputs([*inputs, *read], resuming=False)
    # Final only now, every member of an ensemble too: killed before here, every run resumes.
    for run_dir, result in zip(todo, computed, strict=True):
        run_dir.finish(result.status, result.records, **result.info)
        result.path = run_dir.path
    return {run_dir.hash: result for run_dir, result in zip(todo, computed, strict=True)}


@contextlib.contextmanager
def running(todo: Sequence[RunDir], doing: str) -> Iterator[None]:
    """The block is the computation of `todo` (claimed runs): config.json and status `running` first; a
    block that raises leaves each run `failed` or `interrupted` (`mark_stopped`; an allocation that failed
    becomes the one-line out-of-memory error, naming `doing`). Marking a run final is the caller's, after
    the block. A stop while the status is being written counts too: the status may say `running` already."""
    try:
        for run_dir in todo:
            run_dir.write_config()
            run_dir.set_status("running", pid=os.getpid())
        yield
    except BaseException as exc:
        with interrupts_held():
            error = out_of_memory(exc, doing) if isinstance(exc, Exception) else None
            for run_dir in todo:
                if run_dir.status_path.exists():  # not one that stopped before it had any status
                    mark_stopped(run_dir, error or exc)
        if error is not None:
            raise error from None
        raise


def computed_run(root: str | Path, spec: Any, compute: Callable[[], Any]) -> RunResult:
    """A run that is one computation without a training loop (a simulation, an ODE): a finished one is read
    back; otherwise `compute()` (an iterable of records) runs through `execute` and its records are written at
    once. A computation that raises leaves no records; a rerun computes it again. A finished one whose records
    were lost is computed again (its records are a function of its config alone), and says so."""
    run_dir = RunDir(root, spec)
    done = finished(run_dir, recompute_lost=True)
    if done is not None:
        return done

    def work(todo: list[RunDir], _checkpoints: list) -> list[RunResult]:
        records = list(compute())
        todo[0].restart_metrics(records)
        return [RunResult(spec, "done", records)]

    return execute([run_dir], work, doing="computing", recompute_lost=True)[0]


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the block runs (in the main thread, where Python runs signal handlers):
    a run that is stopping already marks itself whole, where a second Ctrl-C would leave it `running`. A
    signal that came meanwhile is dropped: the run is stopping anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler installed outside Python, which it cannot restore
                signal.signal(sig, handler)


def mark_stopped(run_dir: RunDir, exc: BaseException) -> None:
    """Record in its status why a run stopped before its end (call it where `exc` is being handled):
    `interrupted` after Ctrl-C or SIGTERM, `failed` with the one-line error (and the traceback of a crash).
    Either resumes from the last checkpoint when run again."""
    if isinstance(exc, INTERRUPTS):
        run_dir.set_status_if_possible("interrupted")
    elif isinstance(exc, OSError):
        run_dir.set_status_if_possible("failed", error=describe_os_error(exc))
    elif isinstance(exc, LearnscopeError):
        run_dir.set_status_if_possible("failed", error=str(exc))
    elif isinstance(exc, Exception):
        run_dir.set_status_if_possible(
            "failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )


def record_refusal(run_dir: RunDir, error: str) -> Path | None:
    """A run whose input was rejected before it wrote anything (bad data, a model that does not fit it), in
    a sweep: its directory with config.json and a `failed` status naming the error, so a rerun reports it
    instead of trying it again (--retry-failed) and `sweep status` lists it. A run that already has a status
    keeps it. Returns the directory (None where nothing could be written)."""
    if run_dir.status_path.exists():
        return run_dir.path
    try:
        with run_dir.lock():
            run_dir.write_config()
            if not run_dir.status_path.exists():
                lines = error.strip().splitlines()
                run_dir.set_status("failed", error=lines[0] if lines else "failed")
    except (LearnscopeError, OSError):  # busy, or an unwritable store: the outcome still has the error
        return run_dir.path if run_dir.path.is_dir() else None
    return run_dir.path
