"""The `ensemble` executor: configs that differ only in seed and optimiser train together, a group at a
time, in this process, as one stacked model (learnscope/ensemble.py); a config that groups with no other, or
whose model cannot be stacked, runs alone as under `serial`. An error stops its whole group (each member
`failed`, resumable), not the sweep. The groups are those of all the configs, whatever has run: the settled
members of a group hold their places in its stack, so a rerun stacks (and sums) as the first run did."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..errors import LearnscopeError
from ..registry import EXECUTORS
from ..runs.lifecycle import RunResult
from ..ui import progress_bar
from .base import ExecutionOptions, failed, run_one, settled


class EnsembleOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_members: int = Field(16, ge=1)  # the largest stack (members beyond it form another group)


@EXECUTORS.register("ensemble", EnsembleOptions)
def run_ensembles(configs: list, store: str, execution: ExecutionOptions) -> list[RunResult]:
    from ..runs.ensemble import group_configs

    results, pending = settled(configs, store, execution.retry_failed)
    waiting = set(pending)
    with progress_bar(len(configs), "sweep", execution.quiet) as bar:
        completed = len(configs) - len(pending)
        bar.update(completed)
        for group in group_configs(configs, execution.options.max_members):
            indices = [i for i in group if i in waiting]
            if not indices:
                continue
            members = [configs[i] for i in indices]
            held = [configs[i] for i in group if i not in waiting]
            ran = _run_group(members, held, store) if len(group) > 1 else None
            if ran is None:
                ran = [run_one(cfg, store) for cfg in members]
            for i, result in zip(indices, ran, strict=True):
                results[i] = result
            completed += len(indices)
            bar.update(completed)
    return [r for r in results if r is not None]


def _run_group(members: list, held: list, store: str) -> list[RunResult] | None:
    """The results of `members` trained as one ensemble, stacked with the `held` rest of their group; None
    where it cannot be (said before anything was written: the members are to run one by one)."""
    from ..runs.ensemble import NotBatchable, run_ensemble

    try:
        trained = run_ensemble(members, store, quiet=True, stacked_with=held)
    except NotBatchable:
        return None
    except Exception as exc:  # recorded in each member's status.json, as `run_one` does; the sweep goes on
        error = str(exc) if isinstance(exc, LearnscopeError) else f"{type(exc).__name__}: {exc}"
        return [failed(cfg, store, error) for cfg in members]
    return [RunResult(cfg, r.status, path=r.path) for cfg, r in zip(members, trained, strict=True)]
