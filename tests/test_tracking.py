"""Optional trackers (learnscope.tracking): a tracked run's TensorBoard events and MLflow metrics are the
records in its store, field by field and step by step; a tracker that fails does not fail the run."""

import json
import math

import pytest

from learnscope.errors import ConfigError
from learnscope.runs.train import run
from learnscope.store import read_records
from learnscope.tracking import ENVIRONMENT, check_available, requested, scalars


def _stored(result) -> list[dict]:
    return read_records(result.path / "metrics.jsonl")


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

    from learnscope.store import RunDir

    monkeypatch.setenv(ENVIRONMENT, "tensorboard")
    append = RunDir.append

    def interrupted_after_step_50(self, record):
        append(self, record)
        if record.get("step") == 50 and "train/loss" in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "append", interrupted_after_step_50)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config, store=tmp_path, quiet=True)
    monkeypatch.setattr(RunDir, "append", append)
    result = run(tiny_config, store=tmp_path, quiet=True)
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
    assert tracked.info.run_name == result.path.name and tracked.info.status == "FINISHED"
    config = json.loads((result.path / "config.json").read_text())["config"]
    assert tracked.data.params["model.kind"] == str(config["model"]["kind"])
    for key, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, key))
        assert history == sorted(points)


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
