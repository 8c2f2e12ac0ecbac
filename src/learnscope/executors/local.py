"""The `local` executor: a bounded pool of worker processes on this machine.

Workers are spawned, not forked (a forked child of a process that has used torch's thread pool can hang),
share the machine's threads, end with their parent (even one killed with -9), and a run a worker is running
when the sweep is stopped (Ctrl-C, SIGTERM) is left `interrupted`, to resume."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

from pydantic import BaseModel, ConfigDict, PositiveInt

from ..errors import Terminated
from ..registry import EXECUTORS
from ..runs.lifecycle import RunResult
from ..ui import progress_bar
from .base import ExecutionOptions, run_one, settled


class LocalOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: PositiveInt = 2  # worker processes


@EXECUTORS.register("local", LocalOptions)
def run_local(configs: list, store: str, execution: ExecutionOptions) -> list[RunResult]:
    workers = execution.options.workers
    results, pending = settled(configs, store, execution.retry_failed)  # no worker to start for a settled run
    with progress_bar(len(configs), "sweep", execution.quiet) as bar:
        bar.update(len(configs) - len(pending))
        if workers <= 1 or len(pending) <= 1:
            for done, i in enumerate(pending, start=len(configs) - len(pending) + 1):
                results[i] = run_one(configs[i], store)
                bar.update(done)
            return [r for r in results if r is not None]
        import torch

        threads = max(1, torch.get_num_threads() // workers)
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
        )
        try:
            futures = {pool.submit(_run_in_worker, configs[i], store, threads): i for i in pending}
            for done, future in enumerate(as_completed(futures), start=len(configs) - len(pending) + 1):
                results[futures[future]] = future.result()
                bar.update(done)
        except BaseException:  # Ctrl-C, SIGTERM: stop the workers (their runs become `interrupted`)
            _stop_workers(pool)
            raise
        pool.shutdown()
    return [r for r in results if r is not None]


# In a pool worker: whether it is running a run now (what SIGTERM does depends on it: `_worker_sigterm`).
_running = False


def _worker_init(parent: int) -> None:
    """A pool worker ends with its parent, even a parent killed with -9 (Linux: PR_SET_PDEATHSIG), and
    turns SIGTERM into `Terminated` while it runs a run, so that run is left `interrupted`, to resume."""
    signal.signal(signal.SIGTERM, _worker_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(143)


def _worker_sigterm(signum, frame) -> None:
    """SIGTERM in a pool worker: stop the run it is running (`Terminated`: the run records `interrupted`),
    or, idle, end at once and quietly (raised in the pool's wait for work, `Terminated` would end the worker
    with a traceback on stderr)."""
    if _running:
        # Once: the run is stopping. A second SIGTERM comes when a sweep is stopped with a worker idle (that
        # worker ends, and the pool, broken, terminates the others again: concurrent.futures'
        # `terminate_broken`); raised while the run marks itself `interrupted`, it would leave it `running`.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()
    os._exit(143)


def _run_in_worker(cfg, store: str, threads: int) -> RunResult:
    global _running
    try:
        _running = True
        return run_one(cfg, store, threads)
    except Terminated:  # the run is marked interrupted; take no further work from the pool's queue
        os._exit(143)
    finally:
        _running = False


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to every worker, then wait for them to mark their runs and exit. (concurrent.futures has no
    public way to stop running workers: `_processes` is its table of them.)"""
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():  # stuck in a native call past its grace: its run will be shown interrupted
            with contextlib.suppress(OSError, ValueError):
                process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
