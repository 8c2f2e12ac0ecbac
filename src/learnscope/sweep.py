"""Sweeps: a grid or a list of overrides expands to configs; an executor runs those not done.

Every run goes through the runner of its kind (registry.RUN_KINDS: `train.run` for training configs,
`online_sgd.run_online` for committee-machine simulations and ODEs), so a sweep skips what is done, resumes
what was killed, and a failed run (recorded as `failed` in its directory) does not stop the others. A run
asked for twice (the same run hash: configs that differ only in `name`, a seed listed twice) runs once, and a
run whose lock another process holds (a second sweep on the same store running it) is `busy`: reported as
running there, not as failed, and recorded nowhere.
Executors: `serial`, `local` (a bounded pool of worker processes), `slurm` (one submitit job array; a
preempted or timed-out job is requeued, and its run resumes from its own checkpoint) and `ensemble` (in this
process, runs that differ only in seed and optimiser trained together as one stacked model: ensemble.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from .config import Config
from .errors import ConfigError, LearnscopeError, RunBusy, RunningElsewhere, Terminated
from .online_sgd import OnlineConfig
from .registry import RUN_KINDS
from .store import FINAL, RunDir, load_runs, shown_state
from .ui import progress_bar

Executor = Literal["serial", "local", "slurm", "ensemble"]
EXECUTORS: tuple[str, ...] = ("serial", "local", "slurm", "ensemble")
SLURM_DEFAULTS: dict[str, Any] = {"timeout_min": 240, "name": "learnscope"}


BUSY = "busy"  # the outcome of a run that another process is running (it holds the run's lock)


@dataclass
class Outcome:
    """What became of one config of a sweep. `status`: `done` or `diverged` (final), `failed` (with its
    one-line `error`, recorded in the run's status.json), or `busy`: another process holds the run's lock and
    is running it, so this sweep neither ran it nor recorded anything of it (a rerun once that process is
    done collects it). `same_as`: the index, in the sweep's configs, of the first config of the same run (the
    same run hash) when this one repeats it; the run ran once, and this outcome is its outcome."""

    config: Config | OnlineConfig
    status: str  # done | diverged | failed | busy
    path: Path | None = None
    error: str = ""
    same_as: int | None = None


def grid(base, axes: dict[str, list], zipped: dict[str, list] | None = None) -> list:
    """The product of `axes` ({"model.depth": [4, 8], "data.label_noise": [0, 0.2]}) applied to `base`; the
    lists of `zipped` ({"optim.lr": [0.1, 0.01], "optim.weight_decay": [0, 5e-4]}) are walked together, as
    one more axis of the product (the same length, else a ConfigError)."""
    zipped = zipped or {}
    lengths = {key: len(values) for key, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} has {n}" for key, n in lengths.items())
        raise ConfigError(f"--zip axes are walked together and need as many values each: {shown}")
    both = sorted(set(axes) & set(zipped))
    if both:
        raise ConfigError(f"{both[0]} is both a --grid and a --zip axis")
    keys, zip_keys = list(axes), list(zipped)
    zip_rows = list(zip(*(zipped[k] for k in zip_keys), strict=True)) if zip_keys else [()]
    return [
        base.override(
            *(f"{k}={_literal(v)}" for k, v in zip(keys, values, strict=True)),
            *(f"{k}={_literal(v)}" for k, v in zip(zip_keys, row, strict=True)),
        )
        for values in itertools.product(*(axes[k] for k in keys))
        for row in zip_rows
    ]


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(_literal(v) for v in value) + "]"


def _run_one(cfg: Config | OnlineConfig, store: str, threads: int) -> Outcome:
    """One run of any kind, by its registered runner; an error is a `failed` outcome, not an exception, and a
    run held by another process a `busy` one."""
    if threads:
        torch.set_num_threads(threads)
    try:
        result = RUN_KINDS.builder(cfg.kind)(cfg, store, quiet=True)
        return Outcome(cfg, result.status, result.path)
    except RunBusy as exc:  # another process is running it: not a failure, and nothing of it to record here
        return Outcome(cfg, BUSY, RunDir(store, cfg).path, error=str(exc))
    except LearnscopeError as exc:
        return Outcome(cfg, "failed", _failed_run_dir(cfg, store, str(exc)), error=str(exc))
    except Exception as exc:  # a crash in one run is recorded in its status.json; the sweep goes on
        error = f"{type(exc).__name__}: {exc}"
        return Outcome(cfg, "failed", _failed_run_dir(cfg, store, error), error=error)


def _failed_run_dir(cfg: Config | OnlineConfig, store: str, error: str) -> Path | None:
    """The run directory of a failed run, where its status.json has the error. A run whose input was
    rejected before it wrote anything (bad data, a model that does not fit it) gets one here: in a sweep the
    store records every run's outcome, so a rerun reports it instead of trying it again (--retry-failed), and
    `sweep status` lists it."""
    try:
        run_dir = RunDir(store, cfg)
    except Exception:  # a config that cannot even be hashed (a missing moments file): nowhere to record it
        return None
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


def run_all(
    configs: list[Config] | list[OnlineConfig],
    store: str | Path = "runs",
    executor: Executor = "serial",
    workers: int = 2,
    quiet: bool = False,
    slurm: dict[str, Any] | None = None,
    retry_failed: bool = False,
) -> list[Outcome]:
    """Run every config not yet final; outcomes (`Outcome`) in the order of `configs`. `workers` bounds the
    `local` pool. A run recorded `failed` is reported with its error and not run again, unless
    `retry_failed`. Each distinct run (by run hash) runs once: a config that repeats one (it differs only in
    `name`, or is listed twice) gets that run's outcome, with `same_as` set (workers racing for one run would
    otherwise fail all but one). A run that another process is running (it holds the run's lock: a second
    sweep on the same store) is `busy`, not `failed`, under every executor; `sweep_error` turns the outcomes
    into the error that ends a sweep (exit code 2 for a failure, 3 for runs busy elsewhere).

    `slurm`: options of the `slurm` executor, which submits
    the configs not yet final as one job array of `submitit.AutoExecutor(folder=<store>/slurm)`; a job that
    raises or is lost is a `failed` outcome with its error on one line. They go to `update_parameters`
    (slurm_partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb, slurm_array_parallelism, ...) over
    `SLURM_DEFAULTS`, except `cluster` ("slurm"; "local": a subprocess per job; "debug": in this process, one
    after the other) and `slurm_max_num_timeout` (requeues after a timeout, default 3), which go to the
    executor. Where there is no Slurm (no `srun`), AutoExecutor runs every job at once as a local subprocess:
    on one machine, the `local` executor bounds them. A job uses `cpus_per_task` threads when given. On a
    cluster the store must be on a filesystem that the compute nodes share."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; available: {', '.join(EXECUTORS)}")
    store = str(store)
    first = _first_of_each_run(configs, store)
    distinct = [i for i, j in enumerate(first) if i == j]
    unique = [configs[i] for i in distinct]
    if executor == "slurm":
        ran = _run_on_slurm(unique, store, slurm, quiet, retry_failed)
    elif executor == "ensemble":
        ran = _run_as_ensembles(unique, store, quiet, retry_failed)
    else:
        ran = _run_here(unique, store, executor, workers, quiet, retry_failed)
    by_index = dict(zip(distinct, ran, strict=True))
    return [
        by_index[i] if j == i else dataclasses.replace(by_index[j], config=cfg, same_as=j)
        for i, (cfg, j) in enumerate(zip(configs, first, strict=True))
    ]


def _first_of_each_run(configs: list[Config] | list[OnlineConfig], store: str) -> list[int]:
    """For each config, the index of the first config of the same run (its run hash, as `RunDir` names it).
    A config that cannot be hashed (a missing moments file) is its own run: running it reports the error."""
    seen: dict[str, int] = {}
    first = []
    for i, cfg in enumerate(configs):
        try:
            digest = RunDir(store, cfg).hash
        except Exception:
            first.append(i)
            continue
        first.append(seen.setdefault(digest, i))
    return first


def _run_here(
    configs: list[Config] | list[OnlineConfig],
    store: str,
    executor: Executor,
    workers: int,
    quiet: bool,
    retry_failed: bool,
) -> list[Outcome]:
    """The `serial` and `local` executors of `run_all`, on distinct runs."""
    outcomes, pending = _settled(configs, store, retry_failed)  # no worker to start for a settled run
    with progress_bar(len(configs), "sweep", quiet) as bar:
        bar.update(len(configs) - len(pending))
        if executor == "serial" or workers <= 1 or len(pending) <= 1:
            for done, i in enumerate(pending, start=len(configs) - len(pending) + 1):
                outcomes[i] = _run_one(configs[i], store, 0)
                bar.update(done)
        else:
            # spawn, not fork: a forked child of a process that has used torch's thread pool can hang.
            threads = max(1, torch.get_num_threads() // workers)
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
            )
            try:
                futures = {pool.submit(_run_in_worker, configs[i], store, threads): i for i in pending}
                for done, future in enumerate(as_completed(futures), start=len(configs) - len(pending) + 1):
                    outcomes[futures[future]] = future.result()
                    bar.update(done)
            except BaseException:  # Ctrl-C, SIGTERM: stop the workers (their runs become `interrupted`)
                _stop_workers(pool)
                raise
            pool.shutdown()
    return [o for o in outcomes if o is not None]


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
        raise Terminated()
    os._exit(143)


def _run_in_worker(cfg: Config | OnlineConfig, store: str, threads: int) -> Outcome:
    global _running
    try:
        _running = True
        return _run_one(cfg, store, threads)
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
    pool.shutdown(wait=False, cancel_futures=True)


def _run_as_ensembles(
    configs: list[Config] | list[OnlineConfig], store: str, quiet: bool, retry_failed: bool = False
) -> list[Outcome]:
    """The `ensemble` executor of `run_all`: configs that differ only in seed and optimiser train together, a
    group at a time, in this process (ensemble.py); a config that groups with no other, or whose model cannot
    be stacked, runs alone as under `serial`. An error stops its whole group (each member `failed`,
    resumable), not the sweep. The groups are those of all `configs`, whatever has run: the settled members
    of a group hold their places in its stack, so a rerun stacks (and sums) as the first run did."""
    from .ensemble import group_configs

    outcomes, pending = _settled(configs, store, retry_failed)
    waiting = set(pending)
    with progress_bar(len(configs), "sweep", quiet) as bar:
        completed = len(configs) - len(pending)
        bar.update(completed)
        for group in group_configs(configs):
            indices = [i for i in group if i in waiting]
            if not indices:
                continue
            members = [configs[i] for i in indices]
            held = [configs[i] for i in group if i not in waiting]
            results = _run_ensemble(members, held, store) if len(group) > 1 else None
            if results is None:
                results = [_run_one(cfg, store, 0) for cfg in members]
            for i, outcome in zip(indices, results, strict=True):
                outcomes[i] = outcome
            completed += len(indices)
            bar.update(completed)
    return [o for o in outcomes if o is not None]


def _run_ensemble(members: list[Config], held: list[Config], store: str) -> list[Outcome] | None:
    """The outcomes of `members` trained as one ensemble, stacked with the `held` rest of their group; None
    where it cannot be (said before anything was written: the members are to run one by one)."""
    from .ensemble import NotBatchable, run_ensemble

    try:
        results = run_ensemble(members, store, quiet=True, stacked_with=held)
    except NotBatchable:
        return None
    except Exception as exc:  # recorded in each member's status.json, as `_run_one` does; the sweep goes on
        error = str(exc) if isinstance(exc, LearnscopeError) else f"{type(exc).__name__}: {exc}"
        return [Outcome(cfg, "failed", _failed_run_dir(cfg, store, error), error=error) for cfg in members]
    return [Outcome(cfg, r.status, r.path) for cfg, r in zip(members, results, strict=True)]


def _settled(
    configs: list[Config] | list[OnlineConfig], store: str, retry_failed: bool
) -> tuple[list[Outcome | None], list[int]]:
    """(outcomes, pending): the outcome of every run this sweep will not run, read from the store (a final
    run; a failed one, with its recorded error, unless `retry_failed`), None for the others, whose indices are
    `pending`."""
    outcomes: list[Outcome | None] = [None] * len(configs)
    pending = []
    for i, cfg in enumerate(configs):
        try:
            run_dir = RunDir(store, cfg)
            state = run_dir.status().get("state")
        except LearnscopeError:  # an unreadable status or config: running it reports the error
            state = None
        if state in FINAL:
            outcomes[i] = _run_one(cfg, store, 0)
        elif state == "failed" and not retry_failed:
            error = str(run_dir.status().get("error", "")).strip().splitlines()
            outcomes[i] = Outcome(cfg, "failed", run_dir.path, error=error[0] if error else "failed")
        else:
            pending.append(i)
    return outcomes, pending


def plan(
    configs: list[Config] | list[OnlineConfig], store: str | Path = "runs"
) -> list[tuple[str, str, str]]:
    """(hash, state, name) of each config in `store` without running anything: what a sweep would do
    (`done`/`diverged` are reused, the others run)."""
    rows = []
    for cfg in configs:
        run_dir = RunDir(store, cfg)
        try:
            state = shown_state(run_dir.status())
        except LearnscopeError as exc:
            state = f"unreadable ({exc})"
        rows.append((run_dir.hash, state, cfg.name))
    return rows


def run_and_load(
    configs: list[Config] | list[OnlineConfig],
    store: str | Path = "runs",
    executor: Executor = "serial",
    workers: int = 2,
    quiet: bool = False,
    slurm: dict[str, Any] | None = None,
    retry_failed: bool = False,
) -> pd.DataFrame:
    """What a study does with its sweep: run every config not yet final (a failed run does not stop the
    others), then stop with one line naming the first failure (a LearnscopeError), or saying how many runs
    another process is running (`RunningElsewhere`, exit code 3: the table would lack them), or return the
    table of exactly these runs (a diverged run is in it, with its records up to the divergence)."""
    outcomes = run_all(
        configs,
        store,
        executor=executor,
        workers=workers,
        quiet=quiet,
        slurm=slurm,
        retry_failed=retry_failed,
    )
    error = sweep_error(outcomes, retry_failed, first=True)
    if error is not None:
        raise error
    return load_runs(store, {o.path.name for o in outcomes if o.path is not None})


def sweep_error(
    outcomes: list[Outcome], retry_failed: bool = False, first: bool = False
) -> LearnscopeError | None:
    """The one-line error that ends a sweep whose runs are not all final, None when they are. Failed runs
    make a LearnscopeError (the CLI's exit code 2; with `first`, naming the first failure and its error);
    otherwise runs busy in another process make a `RunningElsewhere` (exit code 3): nothing failed, but not
    every run is here yet. Counts runs, not configs: a run asked for twice is one."""
    runs = [o for o in outcomes if o.same_as is None]
    failed = [o for o in runs if o.status == "failed"]
    busy = sum(o.status == BUSY for o in runs)
    if failed:
        named = f"; first ({failed[0].config.name or 'unnamed'}): {failed[0].error}" if first else ""
        retry = "" if retry_failed else " (--retry-failed runs them again)"
        elsewhere = f"; {busy} more running in another process" if busy else ""
        return LearnscopeError(f"{len(failed)} of {len(runs)} runs failed{named}{retry}{elsewhere}")
    if busy:
        return RunningElsewhere(
            f"{busy} of {len(runs)} runs are running in another process; run this again once they are done"
        )
    return None


# --- slurm: one submitit job array --------------------------------------------------------------------------

# submitit takes these (prefixed: slurm_max_num_timeout) in the executor's constructor, not update_parameters.
_CONSTRUCTOR_OPTIONS = ("max_num_timeout", "max_pickle_size_gb", "python")


class SlurmRun:
    """One run of a sweep as a submitit job. Slurm signals a job that is preempted or near its time limit;
    submitit then calls `checkpoint` and requeues the submission it returns: the same call, which resumes the
    run from the last checkpoint in its run directory, so nothing else needs saving. (Duck-typed like
    `submitit.helpers.Checkpointable`, which submitit recognises by its `checkpoint` method: subclassing it
    would import submitit with this module, and a class made later could not be unpickled by the job.)"""

    def __call__(self, cfg: Config | OnlineConfig, store: str, threads: int) -> Outcome:
        return _run_one(cfg, store, threads)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _run_on_slurm(
    configs: list[Config] | list[OnlineConfig],
    store: str,
    options: dict[str, Any] | None,
    quiet: bool,
    retry_failed: bool = False,
) -> list[Outcome]:
    """The `slurm` executor of `run_all`."""
    try:
        import submitit
    except ImportError:
        raise LearnscopeError("the slurm executor needs submitit: pip install 'learnscope[slurm]'") from None

    outcomes, pending = _settled(configs, store, retry_failed)  # a settled run is not worth a job
    with progress_bar(len(configs), "sweep", quiet) as bar:
        completed = len(configs) - len(pending)
        bar.update(completed)
        if pending:
            # Jobs get the store's absolute path: they need not start in this directory.
            absolute = Path(store).resolve()
            executor, threads = _slurm_executor(submitit, absolute, options or {})
            jobs = _submit(executor, [configs[i] for i in pending], str(absolute), threads)
            index = {id(job): i for job, i in zip(jobs, pending, strict=True)}
            on_slurm = executor.cluster == "slurm"
            if on_slurm:
                _follow_in_squeue_without_accounting(submitit, jobs)
            where = f"slurm array {jobs[0].job_id.split('_')[0]}" if on_slurm else executor.cluster
            bar.update(completed, probe=where)
            for job in submitit.helpers.as_completed(jobs, poll_frequency=10.0 if on_slurm else 0.5):
                i = index[id(job)]
                outcomes[i] = _job_outcome(job, configs[i], store)
                completed += 1
                bar.update(completed)
    return [o for o in outcomes if o is not None]


def _slurm_executor(submitit, store: Path, options: dict[str, Any]):
    """The AutoExecutor of `options`, and the threads each job uses (0: torch's default)."""
    options = {**SLURM_DEFAULTS, **options}
    # Jobs are requeueable (sbatch --requeue) even where the cluster's default is not (JobRequeue=0): submitit
    # requeues a preempted or timed-out job with `scontrol requeue`, which Slurm refuses for such a job.
    extra = options.get("slurm_additional_parameters", {})
    if isinstance(extra, dict):
        options["slurm_additional_parameters"] = {"requeue": True, **extra}
    cluster = options.pop("cluster", None)
    constructor = {
        key: options.pop(key)
        for key in list(options)
        if "_" in key and key.split("_", 1)[1] in _CONSTRUCTOR_OPTIONS
    }
    try:
        executor = submitit.AutoExecutor(folder=store / "slurm", cluster=cluster, **constructor)
        executor.update_parameters(**options)
    except (AssertionError, NameError, ValueError, TypeError) as exc:
        # submitit lists every valid parameter over many lines: its first line names the culprit.
        raise ConfigError(f"slurm option: {_first_line(exc)}") from None
    return executor, int(options.get("cpus_per_task", 0))


def _submit(executor, configs: list, store: str, threads: int) -> list:
    try:
        return executor.map_array(SlurmRun(), configs, [store] * len(configs), [threads] * len(configs))
    except Exception as exc:  # sbatch refused the array (unknown partition, account, limits)
        raise LearnscopeError(f"slurm submission failed: {type(exc).__name__}: {_first_line(exc)}") from None


# Slurm's states of a job that is over, and the state of one that squeue no longer lists.
_OVER = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
_LEFT = "ENDED"


def _follow_in_squeue_without_accounting(submitit, jobs: list) -> None:
    """Where Slurm keeps no accounting (`sacct` fails: a Slurm without slurmdbd, such as the one-node cluster
    of .ci/slurm), submitit cannot learn a job's state: it warns at every poll, and waits forever for a job
    that ended without a result (cancelled, killed for its memory). The jobs then follow their states in
    squeue instead, where a job that has left the queue is over (its result, if any, is in its folder)."""
    import subprocess

    try:
        sacct = ["sacct", "-n", "-X", "-j", jobs[0].job_id.split("_")[0]]
        if subprocess.run(sacct, capture_output=True, timeout=60).returncode == 0:
            return
    except (OSError, subprocess.TimeoutExpired):
        pass
    watcher = _squeue_watcher(submitit)
    for job in jobs:
        job.watcher = watcher  # the job's own, over submitit's watcher of every Slurm job (a class attribute)
        watcher.register_job(job.job_id)


def _squeue_watcher(submitit):
    class SqueueWatcher(submitit.slurm.slurm.SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            if not self._registered - self._finished:
                return None
            command = ["squeue", "--user", str(os.getuid()), "--states", "all", "--array", "--noheader"]
            return [*command, "--format", "%i|%T"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            listed = dict(line.split("|", 1) for line in text.split() if "|" in line)
            return {job: {"JobID": job, "State": listed.get(job, _LEFT)} for job in self._registered}

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            state = self.get_state(job_id, mode=mode)
            return state in _OVER or state == _LEFT  # PENDING, RUNNING, SUSPENDED, REQUEUED...: not over

    return SqueueWatcher(delay_s=600)


def _job_outcome(job, cfg: Config | OnlineConfig, store: str) -> Outcome:
    try:
        outcome = job.result()
    except Exception as exc:  # the job raised, or died without a result (time limit, memory, node failure)
        return Outcome(cfg, "failed", error=f"job {job.job_id}: {_job_error(exc)} (log: {job.paths.stderr})")
    # the caller's config object and store path, not the job's copies
    path = None if outcome.path is None else Path(store) / outcome.path.name
    return dataclasses.replace(outcome, config=cfg, path=path)


def _job_error(exc: Exception) -> str:
    """One line of submitit's report: the raised exception (the line before the trace's closing rule), or the
    head of a job that left no result ("... has not produced any output (state: TIMEOUT)")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    if len(rules) >= 2 and rules[1] > rules[0] + 1:
        return lines[rules[1] - 1]
    return f"{type(exc).__name__}: {' '.join(lines[:2])}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
