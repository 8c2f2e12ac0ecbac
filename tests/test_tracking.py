"""Optional trackers (learnscope.tracking): a tracked run's TensorBoard events and MLflow metrics are the
records in its store, field by field and step by step; a tracker that fails does not fail the run."""

import json
import math

import pytest
import torch
from torch import nn

from learnscope.data import from_tensors
from learnscope.errors import ConfigError
from learnscope.runs.train import run
from learnscope.store import flatten_config, read_records
from learnscope.tracking import ENVIRONMENT, check_available, requested, scalars


def _stored(result) -> list[dict]:
    return read_records(result.path / "metrics.jsonl")


def _interrupted_then_resumed(cfg, store, monkeypatch, between=lambda: None):
    """Run `cfg`, interrupted (Ctrl-C) after logging step 50 (its last checkpoint at 40); call `between()`;
    run it again: the resumed run's result."""
    from learnscope.store import RunDir

    append = RunDir.append

    def interrupted_after_step_50(self, record):
        append(self, record)
        if record.get("step") == 50 and "train/loss" in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "append", interrupted_after_step_50)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, store=store, quiet=True)
    monkeypatch.setattr(RunDir, "append", append)
    between()
    return run(cfg, store=store, quiet=True)


def _expected(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{field: [(step, value), ...]} of every finite numeric field, as a tracker must receive them."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in scalars(record).items():
            series.setdefault(key, []).append((int(record["step"]), value))
    return series


def test_tensorboard_receives_every_record_of_the_store(tmp_path, monkeypatch, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(ENVIRONMENT, "tensorboard")
    result = run(tiny_config, store=tmp_path, quiet=True)
    expected = _expected(_stored(result))
    assert "batch_loss" in expected and any(k.startswith("train/") for k in expected)  # what tiny logs
    events = EventAccumulator(str(tmp_path / "tensorboard" / result.path.name))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in points]
        for (_, got), (_, want) in zip(logged, points, strict=True):
            assert got == pytest.approx(want, rel=1e-6)  # TensorBoard stores float32


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path, monkeypatch, tiny_config):
    """Interrupted after logging step 50 (its last checkpoint at 40), then run again: the resumed process
    logs steps 41.. again; TensorBoard must show each step once, with the store's values."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(ENVIRONMENT, "tensorboard")
    result = _interrupted_then_resumed(tiny_config, tmp_path, monkeypatch)
    assert result.status == "done"
    expected = _expected(_stored(result))
    events = EventAccumulator(str(tmp_path / "tensorboard" / result.path.name))
    events.Reload()
    for key, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in points], key
        for (_, got), (_, want) in zip(logged, points, strict=True):
            assert got == pytest.approx(want, rel=1e-6)
    assert any(step > 40 for step, _ in expected["train/loss"])  # logged by both processes


def test_mlflow_receives_every_record_of_the_store_in_a_local_sqlite_file(tmp_path, monkeypatch, tiny_config):
    pytest.importorskip("mlflow")
    import mlflow

    monkeypatch.setenv(ENVIRONMENT, "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run(tiny_config, store=tmp_path, quiet=True)
    expected = _expected(_stored(result))
    assert (tmp_path / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("learnscope").experiment_id])
    assert tracked.info.run_name == "tiny" and tracked.info.status == "FINISHED"  # the config's name
    assert tracked.data.tags["learnscope_hash"] == result.path.name
    assert tracked.data.tags["learnscope_state"] == "done"
    config = json.loads((result.path / "config.json").read_text())["config"]
    assert tracked.data.params["model.kind"] == str(config["model"]["kind"])
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, key))
        assert history == sorted(points)


def _mlflow_run(store):
    """The one MLflow run of the learnscope experiment in the store's SQLite file, read afresh."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("learnscope").experiment_id])
    return tracked


def test_mlflow_names_an_unnamed_run_by_its_data_model_and_hash_and_fails_a_diverged_one(
    tmp_path, monkeypatch, tiny_config
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv(ENVIRONMENT, "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_config.override("name=", "optim.lr=1e6", "optim.momentum=0.99")
    result = run(cfg, store=tmp_path, quiet=True)
    assert result.status == "diverged"
    tracked = _mlflow_run(tmp_path)
    assert tracked.info.run_name == f"digits mlp {result.path.name[:8]}"
    assert tracked.info.status == "FAILED" and tracked.data.tags["learnscope_state"] == "diverged"
    assert tracked.data.tags["learnscope_hash"] == result.path.name


def test_mlflow_marks_an_interrupted_run_killed_and_finishes_it_when_it_resumes(
    tmp_path, monkeypatch, tiny_config
):
    pytest.importorskip("mlflow")
    monkeypatch.setenv(ENVIRONMENT, "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen = []

    def interrupted():
        tracked = _mlflow_run(tmp_path)
        seen.append((tracked.info.run_id, tracked.info.status, tracked.data.tags["learnscope_state"]))

    result = _interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, between=interrupted)
    assert result.status == "done"
    tracked = _mlflow_run(tmp_path)  # one MLflow run: the resume went on in it
    assert seen == [(tracked.info.run_id, "KILLED", "interrupted")]
    assert tracked.info.status == "FINISHED" and tracked.data.tags["learnscope_state"] == "done"


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        return self.layers(x)


def test_a_supplied_model_and_data_show_as_what_they_are_in_mlflow(tmp_path, monkeypatch, tiny_config):
    pytest.importorskip("mlflow")
    monkeypatch.setenv(ENVIRONMENT, "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    data = from_tensors(x[:30], (x[:30, 0] > 0).long(), x[30:], (x[30:, 0] > 0).long())
    cfg = tiny_config.override("name=", "train.steps=10")
    result = run(cfg, store=tmp_path, model=Net(8), data=data, model_id="warm", quiet=True)
    tracked = _mlflow_run(tmp_path)
    model = f"{Net.__module__}.Net"
    assert tracked.info.run_name == f"tensors (30 train, 10 test) {model} {result.path.name[:8]}"
    params = tracked.data.params
    assert (params["model.kind"], params["model.id"], params["data.kind"]) == (
        model,
        "warm",
        "tensors (30 train, 10 test)",
    )


def test_tensorboard_gets_the_config_once_as_hparams_and_text_across_a_resume(
    tmp_path, monkeypatch, tiny_config
):
    """Two processes ran the run (interrupted, resumed): the config is written once, by the first, and the
    hparams session is ended once, by the one that finished it."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    monkeypatch.setenv(ENVIRONMENT, "tensorboard")
    result = _interrupted_then_resumed(tiny_config, tmp_path, monkeypatch)
    assert result.status == "done"
    written: dict[str, list] = {}  # every summary value as written, in every event file of the run
    files = sorted((tmp_path / "tensorboard" / result.path.name).glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per process
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                written.setdefault(value.tag, []).append(value)
    (start,) = written[metadata.SESSION_START_INFO_TAG]
    (end,) = written[metadata.SESSION_END_INFO_TAG]
    (text,) = written["config/text_summary"]

    config = flatten_config(json.loads((result.path / "config.json").read_text())["config"])
    hparams = HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info.hparams
    assert set(hparams) == {k for k, v in config.items() if v is not None}
    assert hparams["model.width"].number_value == 64 and hparams["model.kind"].string_value == "mlp"
    assert hparams["name"].string_value == "tiny"
    ended = HParamsPluginData.FromString(end.metadata.plugin_data.content).session_end_info
    assert ended.status == api_pb2.Status.Value("STATUS_SUCCESS")
    table = text.tensor.string_val[0].decode()
    assert "| model.width | 64 |" in table and "| data.kind | digits |" in table


def test_a_failing_tracker_leaves_the_run_and_its_store_intact(tmp_path, monkeypatch, tiny_config, capsys):
    pytest.importorskip("tensorboard")
    from learnscope import tracking

    def broken(self, record, step):
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(tracking.TensorBoardTracker, "log", broken)
    monkeypatch.setenv(ENVIRONMENT, "tensorboard")
    tracked = run(tiny_config, store=tmp_path / "tracked", quiet=True)
    monkeypatch.delenv(ENVIRONMENT)
    plain = run(tiny_config, store=tmp_path / "plain", quiet=True)
    assert tracked.status == "done"
    assert (tracked.path / "metrics.jsonl").read_bytes() == (plain.path / "metrics.jsonl").read_bytes()
    err = capsys.readouterr().err
    assert err.count("TensorBoardTracker stopped (OSError: disk quota exceeded)") == 1


def test_unknown_or_missing_trackers_are_one_line_errors(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, "tensorboard,wandb")
    with pytest.raises(ConfigError, match="unknown tracker 'wandb'"):
        requested()
    with pytest.raises(ConfigError, match="unknown tracker"):
        check_available(["neptune"])
    assert scalars({"step": 3, "loss": 0.5, "ok": True, "name": "x", "nan": math.nan}) == {"loss": 0.5}
