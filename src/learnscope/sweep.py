"""Sweeps: a grid or a list of overrides expands to configs; an executor runs those not done.

Every run goes through the runner of its kind (registry.RUN_KINDS: `runs/train.run` for training configs,
`runs/committee/kinds.run_online` for committee-machine simulations and ODEs) and so through the one run
lifecycle, so a sweep skips what is done, resumes what was killed, and a failed run (recorded as `failed` in
its directory) does not stop the others. A run asked for twice (the same run hash: configs that differ only in
`name`, a seed listed twice) runs once, and a run whose lock another process holds (a second sweep on the same
store running it) is `busy`: reported as running there, not as failed, and recorded nowhere.
Executors (`serial`, `local`, `ensemble`, `slurm`, or a plugin's) are a registry: see executors/.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, LearnscopeError, RunningElsewhere
from .executors import BUSY, ExecutionOptions
from .registry import EXECUTORS
from .runs.lifecycle import RunResult
from .store import RunDir, load_runs, read_run_or_corrupt, run_dirs, shown_state

if TYPE_CHECKING:
    import pandas as pd


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


def run_all(
    configs: list,
    store: str | Path = "runs",
    execution: ExecutionOptions | None = None,
    *,
    executor: str = "serial",
    workers: int | None = None,
    slurm: dict[str, Any] | None = None,
    quiet: bool = False,
    retry_failed: bool = False,
) -> list[RunResult]:
    """Run every config not yet final by the executor of `execution` (or, from Python, of the keywords:
    `workers` sizes the `local` pool, `slurm` holds the `slurm` executor's options; see executors/); one
    result per config, in order, each run's records left in the store. A run recorded `failed` is reported
    with its error and not run again, unless `retry_failed`. Each distinct run (by run hash) runs once: a
    config that repeats one (it differs only in `name`, or is listed twice) gets that run's result, with
    `same_as` set (workers racing for one run would otherwise fail all but one). A run that another process is
    running (it holds the run's lock: a second sweep on the same store) is `busy`, not `failed`, under every
    executor; `sweep_error` turns the results into the error that ends a sweep (exit code 2 for a failure, 3
    for runs busy elsewhere)."""
    if execution is None:
        execution = execution_options(executor, workers, slurm, quiet, retry_failed)
    store = str(store)
    first = _first_of_each_run(configs, store)
    distinct = [i for i, j in enumerate(first) if i == j]
    ran = EXECUTORS.builder(execution.executor)([configs[i] for i in distinct], store, execution)
    by_index = dict(zip(distinct, ran, strict=True))
    return [
        by_index[i] if j == i else dataclasses.replace(by_index[j], config=cfg, same_as=j)
        for i, (cfg, j) in enumerate(zip(configs, first, strict=True))
    ]


def execution_options(
    executor: str = "serial",
    workers: int | None = None,
    slurm: dict[str, Any] | None = None,
    quiet: bool = False,
    retry_failed: bool = False,
) -> ExecutionOptions:
    """`ExecutionOptions` from the keywords of the Python API, where `workers` and `slurm` apply to the
    executors that take them (the command line refuses them for the others: `ExecutionOptions.of`)."""
    fields = EXECUTORS.params(executor).model_fields
    given = {key: value for key, value in (("workers", workers), ("slurm", slurm)) if key in fields}
    return ExecutionOptions.of(executor, quiet=quiet, retry_failed=retry_failed, **given)


def _first_of_each_run(configs: list, store: str) -> list[int]:
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


def plan(configs: list, store: str | Path = "runs") -> list[tuple[str, str, str]]:
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


STATE_ORDER = ("done", "diverged", "failed", "interrupted", "running", "new", "corrupt")


def store_states(store: str | Path) -> tuple[list[tuple[str, int]], list[tuple[str, str, str, str]]]:
    """(state, count) of the runs of `store` (in STATE_ORDER, then any other state), and (hash, state, name,
    first line of the error) of each failed or corrupt run. Reads each run's config and status, not its
    records (`runs ls` and `report` check those too)."""
    if not Path(store).is_dir():
        raise LearnscopeError(f"{store}: no such run store")
    states: Counter[str] = Counter()
    failed = []
    for path in run_dirs(store):
        body, status, _ = read_run_or_corrupt(path, records=False)  # states need no records
        state = shown_state(status)
        states[state] += 1
        if state in ("failed", "corrupt"):
            name = body["config"].get("name", "") if isinstance(body.get("config"), dict) else ""
            error = str(status.get("error", "")).strip().splitlines()
            failed.append((path.name, state, name, error[0] if error else "no error recorded"))
    order = [*STATE_ORDER, *sorted(set(states) - set(STATE_ORDER))]
    return [(state, states[state]) for state in order if states[state]], failed


def run_and_load(
    configs: list,
    store: str | Path = "runs",
    execution: ExecutionOptions | None = None,
    **keywords: Any,
) -> pd.DataFrame:
    """What a study does with its sweep: run every config not yet final (`run_all`, with its `execution` or
    keywords; a failed run does not stop the others), then stop with one line naming the first failure (a
    LearnscopeError), or saying how many runs another process is running (`RunningElsewhere`, exit code 3:
    the table would lack them), or return the table of exactly these runs (a diverged run is in it, with its
    records up to the divergence)."""
    results = run_all(configs, store, execution, **keywords)
    retry_failed = execution.retry_failed if execution is not None else keywords.get("retry_failed", False)
    error = sweep_error(results, retry_failed, first=True)
    if error is not None:
        raise error
    return load_runs(store, {r.path.name for r in results if r.path is not None})


def sweep_error(
    outcomes: list[RunResult], retry_failed: bool = False, first: bool = False
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
