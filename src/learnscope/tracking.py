"""Optional experiment trackers: TensorBoard and MLflow receive the records a run writes to its store, as it
writes them. The store stays the source of truth (resume, sweeps, reports read it); a tracker is a view for
people who already watch their runs in one of these tools.

Which trackers are on travels in the environment variable LEARNSCOPE_TRACK (`tensorboard`, `mlflow`, or both
comma-separated), so that a sweep's worker processes and Slurm jobs inherit it; `learnscope run/sweep/study
--track NAME` sets it. Each tracker writes beside the run directories:
- tensorboard: `<store>/tensorboard/<run hash>/` (`tensorboard --logdir <store>/tensorboard`). Once per run,
  when it starts from no checkpoint, the config's dotted keys as hyper-parameters (the hparams plugin's
  session start: the HPARAMS dashboard puts them beside the last value of each scalar) and as a text table
  `config`; a run that ends done or diverged ends its hparams session as a success or a failure.
- mlflow: the tracking URI in MLFLOW_TRACKING_URI if set, else a local SQLite file `<store>/mlflow.db`
  (`mlflow ui --backend-store-uri sqlite:///<store>/mlflow.db`), experiment "learnscope", one MLflow run per
  learnscope run, named by its config's name (a study's runs: `study/scale key=value ...`), else by its data,
  model and the start of its hash, tagged `learnscope_hash` (the whole hash: how it is found again) and, once
  it stops, `learnscope_state`; the config's dotted keys are its parameters. Its status follows the run's:
  done is FINISHED, diverged or failed FAILED, interrupted KILLED.
A model or data passed to `run()` in Python is shown as what it is (`store.supplied_keys`: the model's class,
`tensors (...)`), not as the config's kinds it stood in for.
Every numeric field of a record is logged at the record's `step` (its index in the run where a record has no
step). A resumed run logs again the records after its checkpoint, as the store rewrites them: TensorBoard is
told to purge what the interrupted process logged from that step on (SummaryWriter's `purge_step`), so each
step shows once; MLflow keeps no such mark, and its history holds those steps twice, with equal values (a
resumed run recomputes the same records).

The store knows nothing of trackers: this module adds `record_sink` to `store.RECORD_SINKS` when it is
imported (the package's `__init__` imports it, so every process that runs a run has it), and the store hands
each run's records to the sinks there after writing them. It closes them with the run's metrics file, when
the lifecycle lets go of the run's lock, after status.json says how the run stopped; the trackers are told
that state there (`RunTrackers.close`), so the store needs no other hook.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Protocol

from .errors import ConfigError, StoreError
from .store import FINAL, RECORD_SINKS, RunDir, config_columns

ENVIRONMENT = "LEARNSCOPE_TRACK"
TRACKERS = ("tensorboard", "mlflow")


class Tracker(Protocol):
    def log(self, record: dict[str, Any], step: int) -> None: ...

    def close(self, state: str) -> None: ...


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
    def __init__(self, run: RunDir, first_step: int, fresh: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after the first step this process logs, left by an interrupted one, are
        # dropped when TensorBoard reads the directory (a fresh run's first step is 0: nothing to drop)
        self.writer = SummaryWriter(
            log_dir=str(run.path.parent / "tensorboard" / run.path.name), purge_step=first_step
        )
        self.step = first_step
        if fresh:  # once per run: a resumed process finds them, older than its purge step, kept
            config = shown_config(run)
            self.writer.file_writer.add_summary(_session_start(config), global_step=first_step)
            self.writer.add_text("config", _markdown_table(config), global_step=first_step)

    def log(self, record: dict[str, Any], step: int) -> None:
        self.step = step
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self, state: str) -> None:
        # Only a final state ends the session: TensorBoard keeps the first session end it reads, so an
        # interrupted or failed run (which resumes) must not write one.
        if state in FINAL:
            self.writer.file_writer.add_summary(_session_end(state), global_step=self.step)
        self.writer.close()


def _hparams_summary(tag: str, **content: Any) -> Any:
    """A summary of TensorBoard's hparams plugin (its session start or end), built from its protos as
    torch's `add_hparams` does; not `add_hparams` itself, which writes a sub-run and an experiment summary
    per run, of which the dashboard reads only one for all runs (one run's keys for a whole sweep)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    data = HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def _session_start(config: dict[str, Any]) -> Any:
    """The run's hyper-parameters (its flattened config) as the hparams plugin's session start; the
    dashboard finds the metrics itself, from the run's scalars, and shows their last values."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    start = SessionStartInfo(start_time_secs=time.time())
    for key, value in config.items():
        if isinstance(value, bool):  # before int: a bool is one
            start.hparams[key].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[key].number_value = value
        elif value is not None:
            start.hparams[key].string_value = _text(value)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start)


def _session_end(state: str) -> Any:
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    status = api_pb2.Status.Value("STATUS_SUCCESS" if state == "done" else "STATUS_FAILURE")
    end = SessionEndInfo(status=status, end_time_secs=time.time())
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end)


def _markdown_table(config: dict[str, Any]) -> str:
    """The config as TensorBoard's text dashboard shows a table (markdown)."""
    cells = {key: _text(value).replace("|", "\\|") for key, value in config.items()}  # | ends a cell
    rows = [f"| {key} | {value} |" for key, value in cells.items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# learnscope's final state of a run -> MLflow's; a state left `running` (its status could not be written)
# counts as failed
MLFLOW_STATUS = {"done": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "interrupted": "KILLED"}


class MLflowTracker:
    def __init__(self, run: RunDir, first_step: int, fresh: bool) -> None:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run.path.parent.resolve() / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("learnscope")
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment("learnscope")
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.learnscope_hash = '{run.hash}'", max_results=1
        )
        if found:  # a resumed run goes on in its MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            config = shown_config(run)
            title = run_title(run.hash, config)
            created = self.client.create_run(
                experiment_id, run_name=title, tags={"learnscope_hash": run.hash}
            )
            self.run_id = created.info.run_id
            for key, value in config.items():
                self.client.log_param(self.run_id, key, str(value)[:500])

    def log(self, record: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, state: str) -> None:
        self.client.set_tag(self.run_id, "learnscope_state", state)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS.get(state, "FAILED"))


def shown_config(run: RunDir) -> dict[str, Any]:
    """The run's config as the trackers show it (parameters, hparams), as every reader does
    (`store.config_columns`)."""
    return config_columns(run.config_body())


def run_title(digest: str, config: dict[str, Any]) -> str:
    """A run's name in a tracker: its config's name (a study names its runs `study/scale key=value ...`), else
    its data and model and the start of its hash (kept whole as a tag)."""
    name = config.get("name")
    if isinstance(name, str) and name.strip():
        return name[:MAX_TITLE]
    parts = [
        _first(config, "data.kind", "data", "generator"),
        _first(config, "model.kind", "model", "method"),
    ]
    return " ".join([*(str(p) for p in parts if p is not None), digest[:8]])[:MAX_TITLE]


MAX_TITLE = 250  # MLflow's longest run name


def _first(config: dict[str, Any], *keys: str) -> Any:
    """The first of `keys` the config has (a run kind without a data section has a generator, ...)."""
    return next((config[k] for k in keys if config.get(k) is not None), None)


_BUILDERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


class RunTrackers:
    """The trackers of one run directory, a record sink of the store: opened at its first record in this
    process (whose step is where a resumed run takes up again), closed with the run's metrics file, which
    the lifecycle closes after the run's status says how it ended, so each tracker is told that state."""

    def __init__(self, run: RunDir, names: tuple[str, ...]) -> None:
        self.run, self.names = run, names
        self.trackers: list[Tracker] | None = None
        self.count = 0

    def log(self, record: dict[str, Any]) -> None:
        step = record.get("step", self.count)
        self.count += 1
        step = int(step) if isinstance(step, int | float) and math.isfinite(step) else self.count - 1
        if self.trackers is None:
            self.trackers = []
            # a run that starts from no checkpoint: what is written once per run (config, hparams) is due
            fresh = not self.run.checkpoint_path.exists()
            for name in self.names:
                try:
                    self.trackers.append(_BUILDERS[name](self.run, step, fresh))
                except Exception as exc:  # as a failing log: the run goes on without it
                    _say_stopped(_BUILDERS[name].__name__, exc)
        for tracker in list(self.trackers):
            try:
                tracker.log(record, step)
            except Exception as exc:  # a tracker's failure must not fail the run: the store has the record
                self._drop(tracker, exc)

    def close(self) -> None:
        if not self.trackers:
            return
        try:
            state = self.run.status().get("state", "running")
        except (StoreError, OSError):
            state = "running"  # unreadable: told as a run that ended without a final state
        for tracker in list(self.trackers):
            try:
                tracker.close(state)
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
    return RunTrackers(run, names) if names else None


if record_sink not in RECORD_SINKS:
    RECORD_SINKS.append(record_sink)
