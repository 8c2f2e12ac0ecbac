"""A finished run's files are checked whenever it is read back (`RunDir.final_records`): what was lost or
changed is repaired from what the run knows (its config; its checkpoint's records) and said in one line, or
refused with one line; and the run's lock is on its directory, which no user deletes as a stale file."""

import json

import pytest

from learnscope import run
from learnscope.errors import RunBusy, StoreError
from learnscope.runs.committee.kinds import OnlineConfig
from learnscope.store import RunDir, read_records, run_dirs
from tests.conftest import REPO, cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def finished(tmp_path, tiny_config):
    """(store, config, run directory, its records, metrics.jsonl's bytes) of a finished tiny run."""
    store = tmp_path / "runs"
    result = run(tiny_config, store, quiet=True)
    assert result.status == "done"
    run_dir = RunDir(store, tiny_config)
    return store, tiny_config, run_dir, result.records, run_dir.metrics_path.read_bytes()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "not an object", "another hash type"])
def test_a_done_run_whose_config_json_is_damaged_gets_it_back_on_a_rerun(finished, damage, capsys):
    store, cfg, run_dir, records, _ = finished
    path = run_dir.path / "config.json"
    original = path.read_text()
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_text(original[: len(original) // 2])
    elif damage == "not an object":
        path.write_text("[1, 2]")
    else:
        path.write_text(json.dumps({**json.loads(original), "hash": 12345}))
    capsys.readouterr()
    again = run(cfg, store, quiet=True)
    assert again.status == "done" and again.records == records
    assert path.read_text() == original and run_dirs(store) == [run_dir.path]
    err = capsys.readouterr().err
    assert f"run {run_dir.hash}: config.json" in err and "rewrote it" in err and len(err.splitlines()) == 1


def test_a_config_json_of_another_run_is_refused_not_overwritten(finished):
    store, cfg, run_dir, _, _ = finished
    path = run_dir.path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "hash": "0123456789abcdef"}))
    with pytest.raises(StoreError, match="belongs to run '0123456789abcdef'"):
        run(cfg, store, quiet=True)
    assert "0123456789abcdef" in path.read_text()


def _drop_last_record(data: bytes) -> bytes:
    return b"".join(line + b"\n" for line in data.split(b"\n")[:-2])


def _change_a_value(data: bytes) -> bytes:
    lines = data.split(b"\n")
    record = json.loads(lines[2])
    record["train/loss"] = 0.5
    lines[2] = json.dumps(record).encode()
    return b"\n".join(lines)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: None, id="deleted"),
        pytest.param(lambda data: b"", id="emptied"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(_drop_last_record, id="last record removed"),
        pytest.param(_change_a_value, id="a value edited"),
        pytest.param(lambda data: data.replace(b'"step"', b'"stp"', 1), id="a key edited"),
    ],
)
def test_a_done_run_whose_records_are_lost_or_changed_gets_them_back_from_its_checkpoint(
    finished, damage, capsys
):
    store, cfg, run_dir, records, original = finished
    damaged = damage(original)
    if damaged is None:
        run_dir.metrics_path.unlink()
    else:
        run_dir.metrics_path.write_bytes(damaged)
    capsys.readouterr()
    again = run(cfg, store, quiet=True)
    assert again.status == "done" and again.records == records
    assert run_dir.metrics_path.read_bytes() == original
    err = capsys.readouterr().err
    assert f"run {run_dir.hash}: metrics.jsonl" in err and "restored its 7 records from the checkpoint" in err
    # repaired: the next read-back has nothing to say
    assert run(cfg, store, quiet=True).records == records and capsys.readouterr().err == ""


def test_a_final_newline_stripped_by_an_editor_loses_no_record(finished):
    store, cfg, run_dir, records, original = finished
    run_dir.metrics_path.write_bytes(original.rstrip(b"\n"))
    assert run(cfg, store, quiet=True).records == records


def test_records_that_no_file_holds_any_more_are_refused_in_one_line(finished, capsys):
    """Nothing to restore them from: the run is not returned as done with what is left, nor recomputed over
    what the user may still want; the one line says how to recompute it."""
    store, cfg, run_dir, _, original = finished
    run_dir.metrics_path.write_bytes(original[: len(original) // 2])
    run_dir.checkpoint_path.unlink()
    with pytest.raises(
        StoreError, match=r"held 3 records, not the 7 the run finished with.*delete .* to run"
    ):
        run(cfg, store, quiet=True)
    config = run_dir.path / "cfg.json"
    config.write_text(json.dumps(cfg.to_dict()))
    code, _, err = cli("run", config, "--store", store, "--quiet", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "delete" in err
    assert run_dir.metrics_path.read_bytes() == original[: len(original) // 2]  # left as it was found


def test_a_diverged_run_keeps_the_records_after_its_last_checkpoint_and_refuses_when_they_are_lost(
    tmp_path, tiny_config
):
    store = tmp_path / "runs"
    cfg = tiny_config.override("optim.lr=1e6", "optim.momentum=0.99")
    first = run(cfg, store, quiet=True)
    assert first.status == "diverged"
    assert run(cfg, store, quiet=True).records == first.records
    RunDir(store, cfg).metrics_path.unlink()
    with pytest.raises(StoreError, match=r"is diverged but its metrics\.jsonl"):
        run(cfg, store, quiet=True)


def test_a_finished_computation_whose_records_are_lost_is_computed_again(tmp_path, capsys):
    from learnscope.runs.committee.kinds import run_online

    cfg = OnlineConfig.model_validate(
        {"D": 20, "N": 50, "t_max": 1.0, "points": 4, "n_test": 200, "method": "ode"}
    )
    store = tmp_path / "runs"
    first = run_online(cfg, store, quiet=True)
    path = RunDir(store, cfg).metrics_path
    original = path.read_bytes()
    path.unlink()
    capsys.readouterr()
    again = run_online(cfg, store, quiet=True)
    assert again.records == first.records and path.read_bytes() == original
    assert "computing it again" in capsys.readouterr().err


def test_a_run_written_before_digests_is_checked_against_its_checkpoint(finished):
    """Stores written by earlier versions have no digest in status.json: the checkpoint's records are the
    floor below which metrics.jsonl is restored."""
    store, cfg, run_dir, records, original = finished
    status = json.loads(run_dir.status_path.read_text())
    del status["records"], status["records_sha256"]
    run_dir.status_path.write_text(json.dumps(status))
    run_dir.metrics_path.unlink()
    assert run(cfg, store, quiet=True).records == records
    assert run_dir.metrics_path.read_bytes() == original


def test_a_deleted_lock_file_does_not_let_a_second_process_run_the_run(tmp_path, tiny_config):
    """The lock is the run directory's own (flock of its descriptor); a `lock` file left by earlier
    versions may be deleted as stale without effect."""
    store = tmp_path / "runs"
    holder = RunDir(store, tiny_config)
    holder.path.mkdir(parents=True)
    (holder.path / "lock").write_text("")
    with holder.lock():
        (holder.path / "lock").unlink()
        with pytest.raises(RunBusy, match="being run by another process"):
            run(tiny_config, store, quiet=True)
        assert not (holder.path / "metrics.jsonl").exists()
    assert run(tiny_config, store, quiet=True).status == "done"  # free again once released
    assert not (holder.path / "lock").exists()


def test_the_lock_of_another_process_holds_after_its_lock_file_is_deleted(tmp_path):
    """The issue's reproduction through the CLI: a run in progress, every `lock` file deleted, the same run
    started again: the second is refused and the first ends with all its records."""
    import subprocess
    import sys
    import time

    store = tmp_path / "runs"
    config = REPO / "configs" / "digits_mlp.toml"
    args = [sys.executable, "-m", "learnscope.cli", "run", str(config), "train.steps=3000", "--quiet"]
    first = subprocess.Popen([*args, "--store", str(store)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(store.glob("*/metrics.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.1)
        for lock in store.glob("*/lock"):
            lock.unlink()
        second = subprocess.run([*args, "--store", str(store)], capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "being run by another process" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    (path,) = run_dirs(store)
    records = read_records(path / "metrics.jsonl")
    assert records[-1]["step"] == 3000
    assert json.loads((path / "status.json").read_text())["state"] == "done"


# --- the files a run reads are part of what it is ----------------------------------------------------------


def _write_npz(path, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.normal(size=(200, 12)).astype(np.float32),
        y_train=rng.integers(0, 3, 200),
        x_test=rng.normal(size=(60, 12)).astype(np.float32),
        y_test=rng.integers(0, 3, 60),
    )


@pytest.fixture
def npz_run(tmp_path, tiny_config):
    """A config training on an .npz file, and its store."""
    _write_npz(tmp_path / "d.npz", 0)
    cfg = tiny_config.override("data=npz", f"data.path={tmp_path / 'd.npz'}")
    return cfg, tmp_path / "runs", tmp_path / "d.npz"


def test_a_data_file_replaced_before_a_resume_is_refused_not_mixed_in(npz_run, monkeypatch):
    """The issue's reproduction: a run interrupted after its first checkpoint, the file replaced at the same
    path, the run again: refused in one line, nothing written; the old file back: it resumes to the records
    of an uninterrupted run."""
    from learnscope.runs import train

    cfg, store, path = npz_run
    clean = run(cfg, None, quiet=True).records
    original = path.read_bytes()
    real_at_step = train.RunLoop.at_step

    def stop_after_first_checkpoint(loop):
        record = real_at_step(loop)
        if loop.step == 20:
            raise KeyboardInterrupt
        return record

    monkeypatch.setattr(train.RunLoop, "at_step", stop_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, store, quiet=True)
    monkeypatch.undo()
    run_dir = RunDir(store, cfg)
    assert run_dir.status()["state"] == "interrupted"
    before = run_dir.metrics_path.read_bytes()

    _write_npz(path, 1)
    with pytest.raises(StoreError, match=r"d\.npz changed \(sha256 .* then, .* now\).*restore the file"):
        run(cfg, store, quiet=True)
    assert run_dir.metrics_path.read_bytes() == before and run_dir.status()["state"] == "interrupted"

    path.write_bytes(original)  # the same content, a new modification time: the same file
    assert run(cfg, store, quiet=True).records == clean


def test_a_done_run_is_not_returned_after_its_data_file_changed(npz_run, capsys):
    cfg, store, path = npz_run
    first = run(cfg, store, quiet=True)
    path.touch()  # touched, not changed: still the run's file
    assert run(cfg, store, quiet=True).records == first.records
    _write_npz(path, 1)
    with pytest.raises(StoreError, match=r"changed .* delete .* to run it on the new one"):
        run(cfg, store, quiet=True)
    config = tmp = store.parent / "cfg.json"
    tmp.write_text(json.dumps(cfg.to_dict()))
    code, _, err = cli("run", config, "--store", store, "--quiet", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "d.npz changed" in err


def test_the_data_files_of_a_run_are_recorded_with_their_content_hash(npz_run):
    import hashlib

    cfg, store, path = npz_run
    run(cfg, store, quiet=True)
    (entry,) = json.loads((RunDir(store, cfg).inputs_path).read_text())
    assert entry["path"] == str(path.resolve()) and entry["size"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_readers_show_a_done_run_whose_records_were_lost_as_corrupt_until_it_is_run_again(finished, capsys):
    """Not `done ... step -` with zero records: the reason, and what restores them."""
    from learnscope import load_runs

    store, cfg, run_dir, records, _ = finished
    run_dir.metrics_path.unlink()
    table = load_runs(store)
    assert list(table["status"]) == ["corrupt"]
    assert (
        "holds 0 of the 7 records" in table["error"].iloc[0]
        and "running its config again" in table["error"].iloc[0]
    )
    code, out, _ = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0 and "corrupt" in out
    run(cfg, store, quiet=True)
    table = load_runs(store)
    assert set(table["status"]) == {"done"} and len(table) == len(records)


def test_sweep_status_counts_states_from_config_and_status_without_reading_records(finished, capsys):
    """Counting states reads two small files per run, not the records (most of a store's bytes): a records
    file that cannot be read does not change the count, and `runs ls` still says it is corrupt."""
    import os

    store, _, run_dir, _, _ = finished
    run_dir.metrics_path.unlink()
    os.mkfifo(run_dir.metrics_path)  # reading it would block or be refused
    code, out, _ = cli("sweep", "status", store, capsys=capsys)
    assert code == 0 and out.strip() == f"{store}: 1 runs: 1 done"
    code, out, _ = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0 and "corrupt" in out
