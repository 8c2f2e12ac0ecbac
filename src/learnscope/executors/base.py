"""What every executor shares: the options of an execution, one run in this process, and the runs a sweep
need not run."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError, LearnscopeError, RunBusy
from ..registry import EXECUTORS, RUN_KINDS
from ..runs.lifecycle import RunResult, record_refusal
from ..store import FINAL, RunDir, RunSpec

BUSY = "busy"  # the status of a run that another process is running (it holds the run's lock)


class ExecutionOptions(BaseModel):
    """How a sweep is executed, in one object from the command line to the executor: the executor's name,
    its own typed options (`options`, an instance of the class it registered), the progress bar, and whether
    runs recorded `failed` are run again."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    executor: str = "serial"
    options: BaseModel | None = None
    quiet: bool = False
    retry_failed: bool = False

    @classmethod
    def of(
        cls, executor: str = "serial", *, quiet: bool = False, retry_failed: bool = False, **given: Any
    ) -> ExecutionOptions:
        """The options of `executor` from named values (`workers=4`, `slurm={...}`; None = not given): a value
        that the executor does not take is refused in one line, not ignored."""
        params = EXECUTORS.params(executor)  # a ConfigError naming an unknown executor
        fields = params.model_fields
        for key, value in given.items():
            if value is not None and key not in fields:
                owners = [name for name in EXECUTORS.kinds() if key in EXECUTORS.params(name).model_fields]
                which = f"the {'/'.join(owners)} executor (--executor {owners[0]})" if owners else "none"
                raise ConfigError(f"--{key.replace('_', '-')} is an option of {which}, not of {executor}")
        try:
            options = params(**{key: value for key, value in given.items() if value is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ConfigError(f"{executor} executor option {where}: {error['msg']}") from None
        return cls(executor=executor, options=options, quiet=quiet, retry_failed=retry_failed)


def run_one(cfg: RunSpec, store: str, threads: int = 0) -> RunResult:
    """One run of any kind, by its registered runner, in this process; an error is a `failed` result (recorded
    in the run's status.json), not an exception, and a run held by another process a `busy` one. Its records
    stay in the store (results cross processes)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        result = RUN_KINDS.builder(cfg.kind)(cfg, store, quiet=True)
        return RunResult(cfg, result.status, path=result.path)
    except RunBusy as exc:  # another process is running it: not a failure, and nothing of it to record here
        return RunResult(cfg, BUSY, path=RunDir(store, cfg).path, error=str(exc))
    except LearnscopeError as exc:
        return failed(cfg, store, str(exc))
    except Exception as exc:  # a crash in one run is recorded in its status.json; the sweep goes on
        return failed(cfg, store, f"{type(exc).__name__}: {exc}")


def failed(cfg: RunSpec, store: str, error: str) -> RunResult:
    """The result of a run that failed with `error`; one rejected before it wrote anything is recorded in the
    store too (`lifecycle.record_refusal`), so a rerun reports it instead of trying it again."""
    try:
        run_dir = RunDir(store, cfg)
    except Exception:  # a config that cannot even be hashed (a missing moments file): nowhere to record it
        return RunResult(cfg, "failed", error=error)
    return RunResult(cfg, "failed", path=record_refusal(run_dir, error), error=error)


def settled(configs: list, store: str, retry_failed: bool) -> tuple[list[RunResult | None], list[int]]:
    """(results, pending): the result of every run the sweep will not run, read from the store (a final run; a
    failed one, with its recorded error, unless `retry_failed`), None for the others, whose indices are
    `pending`. An executor starts no worker or job for a settled run."""
    results: list[RunResult | None] = [None] * len(configs)
    pending = []
    for i, cfg in enumerate(configs):
        try:
            run_dir = RunDir(store, cfg)
            status = run_dir.status()
            state = status.get("state")
        except LearnscopeError:  # an unreadable status or config: running it reports the error
            state = None
        if state in FINAL:
            results[i] = run_one(cfg, store)
        elif state == "failed" and not retry_failed:
            error = str(status.get("error", "")).strip().splitlines()
            results[i] = RunResult(cfg, "failed", path=run_dir.path, error=error[0] if error else "failed")
        else:
            pending.append(i)
    return results, pending
