"""Optional experiment trackers: TensorBoard and MLflow receive the records a run writes to its store, as it
writes them. The store stays the source of truth (resume, sweeps, reports read it); a tracker is a view for
people who already watch their runs in one of these tools.

Which trackers are on travels in the environment variable LEARNSCOPE_TRACK (`tensorboard`, `mlflow`, or both
comma-separated), so that a sweep's worker processes and Slurm jobs inherit it; `learnscope run/sweep/study
--track NAME` sets it. Each tracker writes beside the run directories:
- tensorboard: `<store>/tensorboard/<run hash>/` (`tensorboard --logdir <store>/tensorboard`);
- mlflow: the tracking URI in MLFLOW_TRACKING_URI if set, else a local SQLite file `<store>/mlflow.db`
  (`mlflow ui --backend-store-uri sqlite:///<store>/mlflow.db`), experiment "learnscope", one MLflow run per
  learnscope run, named by its hash, with the config's scalars as parameters.
Every numeric field of a record is logged at the record's `step` (its index in the run where a record has no
step). A resumed run logs again the records after its checkpoint, as the store rewrites them: TensorBoard is
told to purge what the interrupted process logged from that step on (SummaryWriter's `purge_step`), so each
step shows once; MLflow keeps no such mark, and its history holds those steps twice, with equal values (a
resumed run recomputes the same records).

The store knows nothing of trackers: this module adds `record_sink` to `store.RECORD_SINKS` when it is
imported (the package's `__init__` imports it, so every process that runs a run has it), and the store hands
each run's records to the sinks there after writing them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError
from .store import RECORD_SINKS, RunDir, flatten_config

ENVIRONMENT = "LEARNSCOPE_TRACK"
TRACKERS = ("tensorboard", "mlflow")


class Tracker(Protocol):
    def log(self, record: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def requested() -> tuple[str, ...]:
    """The trackers named in LEARNSCOPE_TRACK (ConfigError for an unknown one)."""
    names = tuple(n.strip() for n in os.environ.get(ENVIRONMENT, "").split(",") if n.strip())
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"{ENVIRONMENT}: unknown tracker {unknown[0]!r}; available: {', '.join(TRACKERS)}")
    return names


def check_available(names: tuple[str, ...] | list[str]) -> None:
    """A clear one-line error, before any run starts, for a tracker whose package is not installed."""
    packages = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--track {name}: unknown tracker; available: {', '.join(TRACKERS)}")
        try:
            __import__(packages[name])
        except ImportError:
            raise ConfigError(
                f"--track {name} needs the {packages[name]} package: pip install 'learnscope[track]'"
            ) from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's finite numeric fields (booleans and the step itself left out)."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardTracker:
    def __init__(self, run_path: Path, config: dict[str, Any], first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after the first step this process logs, left by an interrupted one, are
        # dropped when TensorBoard reads the directory (a fresh run's first step is 0: nothing to drop)
        self.writer = SummaryWriter(
            log_dir=str(run_path.parent / "tensorboard" / run_path.name), purge_step=first_step
        )

    def log(self, record: dict[str, Any], step: int) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, run_path: Path, config: dict[str, Any], first_step: int) -> None:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_path.parent.resolve() / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("learnscope")
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment("learnscope")
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.learnscope_hash = '{run_path.name}'", max_results=1
        )
        if found:  # a resumed run goes on in its MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                experiment_id, run_name=run_path.name, tags={"learnscope_hash": run_path.name}
            )
            self.run_id = run.info.run_id
            for key, value in flatten_config(config).items():
                self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, record: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


_BUILDERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


class RunTrackers:
    """The trackers of one run directory, a record sink of the store: opened at its first record in this
    process (whose step is where a resumed run takes up again), closed with the run's metrics file."""

    def __init__(self, run_path: Path, config: dict[str, Any], names: tuple[str, ...]) -> None:
        self.run_path, self.config, self.names = run_path, config, names
        self.trackers: list[Tracker] | None = None
        self.count = 0

    def log(self, record: dict[str, Any]) -> None:
        step = record.get("step", self.count)
        self.count += 1
        step = int(step) if isinstance(step, int | float) and math.isfinite(step) else self.count - 1
        if self.trackers is None:
            self.trackers = []
            for name in self.names:
                try:
                    self.trackers.append(_BUILDERS[name](self.run_path, self.config, step))
                except Exception as exc:  # as a failing log: the run goes on without it
                    _say_stopped(_BUILDERS[name].__name__, exc)
        for tracker in list(self.trackers):
            try:
                tracker.log(record, step)
            except Exception as exc:  # a tracker's failure must not fail the run: the store has the record
                self._drop(tracker, exc)

    def close(self) -> None:
        for tracker in list(self.trackers or ()):
            try:
                tracker.close()
            except Exception as exc:
                self._drop(tracker, exc)

    def _drop(self, tracker: Tracker, exc: Exception) -> None:
        self.trackers.remove(tracker)
        _say_stopped(type(tracker).__name__, exc)


def _say_stopped(name: str, exc: Exception) -> None:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(
        f"learnscope: {name} stopped ({type(exc).__name__}: {message}); the run goes on, its store has "
        "every record",
        file=sys.stderr,
    )


def record_sink(run: RunDir) -> RunTrackers | None:
    """The store's record sink for `run` (store.RECORD_SINKS): its trackers, while LEARNSCOPE_TRACK names any
    when the run opens its metrics file."""
    names = requested()
    return RunTrackers(run.path, run.config.to_dict(), names) if names else None


if record_sink not in RECORD_SINKS:
    RECORD_SINKS.append(record_sink)
