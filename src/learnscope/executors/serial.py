"""The `serial` executor: one run after the other, in this process."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..registry import EXECUTORS
from ..runs.lifecycle import RunResult
from ..ui import progress_bar
from .base import ExecutionOptions, run_one, settled


class SerialOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@EXECUTORS.register("serial", SerialOptions)
def run_serial(configs: list, store: str, execution: ExecutionOptions) -> list[RunResult]:
    results, pending = settled(configs, store, execution.retry_failed)
    with progress_bar(len(configs), "sweep", execution.quiet) as bar:
        bar.update(len(configs) - len(pending))
        for done, i in enumerate(pending, start=len(configs) - len(pending) + 1):
            results[i] = run_one(configs[i], store)
            bar.update(done)
    return [r for r in results if r is not None]
