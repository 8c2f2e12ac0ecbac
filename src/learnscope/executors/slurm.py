"""The `slurm` executor: the runs not yet final as one submitit job array.

Options (`--slurm KEY=VALUE`) go to submitit's `update_parameters` (slurm_partition, timeout_min,
gpus_per_node, cpus_per_task, mem_gb, slurm_array_parallelism, ...) over `SLURM_DEFAULTS`, except `cluster`
("slurm"; "local": a subprocess per job; "debug": in this process, one after the other) and
`slurm_max_num_timeout` (requeues after a timeout, default 3), which go to the executor. A job that raises or
is lost is a `failed` result with its error on one line; a preempted or timed-out job is requeued, and its run
resumes from its own checkpoint. Where there is no Slurm (no `srun`), AutoExecutor runs every job at once as a
local subprocess: on one machine, the `local` executor bounds them. A job uses `cpus_per_task` threads when
given. On a cluster the store must be on a filesystem that the compute nodes share."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError, LearnscopeError
from ..registry import EXECUTORS
from ..runs.lifecycle import RunResult
from ..store import JOB_FOLDER
from ..ui import progress_bar
from .base import ExecutionOptions, run_one, settled

SLURM_DEFAULTS: dict[str, Any] = {"timeout_min": 240, "name": "learnscope"}


class SlurmOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slurm: dict[str, Any] = {}  # submitit's parameters (validated by submitit when the executor is made)


# submitit takes these (prefixed: slurm_max_num_timeout) in the executor's constructor, not update_parameters.
_CONSTRUCTOR_OPTIONS = ("max_num_timeout", "max_pickle_size_gb", "python")


class SlurmRun:
    """One run of a sweep as a submitit job. Slurm signals a job that is preempted or near its time limit;
    submitit then calls `checkpoint` and requeues the submission it returns: the same call, which resumes the
    run from the last checkpoint in its run directory, so nothing else needs saving. (Duck-typed like
    `submitit.helpers.Checkpointable`, which submitit recognises by its `checkpoint` method: subclassing it
    would import submitit with this module, and a class made later could not be unpickled by the job.)"""

    def __call__(self, cfg, store: str, threads: int) -> RunResult:
        return run_one(cfg, store, threads)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@EXECUTORS.register("slurm", SlurmOptions)
def run_slurm(configs: list, store: str, execution: ExecutionOptions) -> list[RunResult]:
    try:
        import submitit
    except ImportError:
        raise LearnscopeError("the slurm executor needs submitit: pip install 'learnscope[slurm]'") from None

    results, pending = settled(configs, store, execution.retry_failed)  # a settled run is not worth a job
    with progress_bar(len(configs), "sweep", execution.quiet) as bar:
        completed = len(configs) - len(pending)
        bar.update(completed)
        if pending:
            # Jobs get the store's absolute path: they need not start in this directory.
            absolute = Path(store).resolve()
            executor, threads = _slurm_executor(submitit, absolute, dict(execution.options.slurm))
            jobs = _submit(executor, [configs[i] for i in pending], str(absolute), threads)
            index = {id(job): i for job, i in zip(jobs, pending, strict=True)}
            on_slurm = executor.cluster == "slurm"
            if on_slurm:
                _follow_in_squeue_without_accounting(submitit, jobs)
            where = f"slurm array {jobs[0].job_id.split('_')[0]}" if on_slurm else executor.cluster
            bar.update(completed, probe=where)
            for job in submitit.helpers.as_completed(jobs, poll_frequency=10.0 if on_slurm else 0.5):
                i = index[id(job)]
                results[i] = _job_result(job, configs[i], store)
                completed += 1
                bar.update(completed)
    return [r for r in results if r is not None]


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
        executor = submitit.AutoExecutor(folder=store / JOB_FOLDER, cluster=cluster, **constructor)
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


def _job_result(job, cfg, store: str) -> RunResult:
    try:
        result = job.result()
    except Exception as exc:  # the job raised, or died without a result (time limit, memory, node failure)
        error = f"job {job.job_id}: {_job_error(exc)} (log: {job.paths.stderr})"
        return RunResult(cfg, "failed", error=error)
    # the caller's config object and store path, not the job's copies
    path = None if result.path is None else Path(store) / result.path.name
    return dataclasses.replace(result, config=cfg, path=path)


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
