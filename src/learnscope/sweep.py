"""Sweeps: a grid or a list of overrides expands to configs; an executor runs those not done.

Every training run goes through `train.run` (an `OnlineConfig`, a committee simulation or ODE, through
`online_sgd.run_online`), so a sweep skips what is done, resumes what was killed, and a failed run
(recorded as `failed` in its directory) does not stop the others. Executors: `serial`, and `local` (a bounded
pool of worker processes). Slurm through submitit arrives with the first paper-scale study.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from .config import Config
from .errors import LearnscopeError
from .online_sgd import OnlineConfig, run_online
from .store import load_runs
from .ui import progress_bar


@dataclass
class Outcome:
    config: Config | OnlineConfig
    status: str  # done | diverged | failed
    path: Path | None = None
    error: str = ""


def grid(base: Config, axes: dict[str, list]) -> list[Config]:
    """The product of `axes` ({"model.depth": [4, 8], "data.label_noise": [0, 0.2]}) applied to `base`."""
    keys = list(axes)
    return [
        base.override(*(f"{k}={_literal(v)}" for k, v in zip(keys, values, strict=True)))
        for values in itertools.product(*(axes[k] for k in keys))
    ]


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value) if not isinstance(value, list) else "[" + ", ".join(_literal(v) for v in value) + "]"


def _run_one(cfg: Config | OnlineConfig, store: str, threads: int) -> Outcome:
    from .train import run

    if threads:
        torch.set_num_threads(threads)
    try:
        if isinstance(cfg, OnlineConfig):  # a simulation or ODE of committee machines: one computation
            return Outcome(cfg, "done", run_online(cfg, store).path)
        result = run(cfg, store, quiet=True)
        return Outcome(cfg, result.status, result.path)
    except LearnscopeError as exc:
        return Outcome(cfg, "failed", error=str(exc))
    except Exception as exc:  # a crash in one run is recorded in its status.json; the sweep goes on
        return Outcome(cfg, "failed", error=f"{type(exc).__name__}: {exc}")


def run_all(
    configs: list[Config] | list[OnlineConfig],
    store: str | Path = "runs",
    executor: Literal["serial", "local"] = "serial",
    workers: int = 2,
    quiet: bool = False,
) -> list[Outcome]:
    """Run every config not yet final; outcomes in the order of `configs`."""
    store = str(store)
    outcomes: list[Outcome | None] = [None] * len(configs)
    with progress_bar(len(configs), "sweep", quiet) as bar:
        if executor == "serial" or workers <= 1 or len(configs) <= 1:
            for i, cfg in enumerate(configs):
                outcomes[i] = _run_one(cfg, store, 0)
                bar.update(i + 1)
        else:
            # spawn, not fork: a forked child of a process that has used torch's thread pool can hang.
            threads = max(1, torch.get_num_threads() // workers)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(_run_one, cfg, store, threads): i for i, cfg in enumerate(configs)}
                for done, future in enumerate(as_completed(futures), start=1):
                    outcomes[futures[future]] = future.result()
                    bar.update(done)
    return [o for o in outcomes if o is not None]


def run_and_load(
    configs: list[Config] | list[OnlineConfig],
    store: str | Path = "runs",
    executor: Literal["serial", "local"] = "serial",
    workers: int = 2,
    quiet: bool = False,
) -> pd.DataFrame:
    """What a study does with its sweep: run every config not yet final (a failed run does not stop the
    others), then stop with one line naming the first failure, or return the table of exactly these runs
    (a diverged run is in it, with its records up to the divergence)."""
    outcomes = run_all(configs, store, executor=executor, workers=workers, quiet=quiet)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        name = failed[0].config.name or "unnamed"
        raise LearnscopeError(
            f"{len(failed)} of {len(outcomes)} runs failed; first ({name}): {failed[0].error}"
        )
    return load_runs(store, {o.path.name for o in outcomes if o.path is not None})
