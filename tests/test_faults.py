"""Fault injection: whatever stops a run (kill -9, Ctrl-C, SIGTERM, a torn file, a full or read-only disk),
running it again ends with a metrics.jsonl byte-identical to an uninterrupted run's, and every reader of the
store keeps working meanwhile. The store's invariant is written in `learnscope.store`'s docstring."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learnscope import load_runs, run
from learnscope.errors import DataError, StoreError
from learnscope.store import RunDir, encode_record, read_records, run_dirs
from tests.conftest import cli, mounted_tmpfs, tiny

TOML = """device = "cpu"
[model]
kind = "mlp"
width = 256
[train]
steps = 1500
checkpoint_every = {every}
[probes]
schedule = ["every"]
every = 30
"""  # 51 records, about 3 s on one thread: long enough to be killed at a chosen record


def _command(config: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "learnscope.cli", "run", str(config), "--quiet", "--store", str(store)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # runs in subprocesses compare equal whatever the cores


def default_signals() -> None:
    """In the child: SIGINT as a terminal delivers it. A pytest-xdist worker ignores SIGINT, and a child
    inherits an ignored signal (Python then keeps ignoring Ctrl-C), so the tests that send it restore it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, bytes]:
    """The config file of a 1,500-step run checkpointed every 250 steps, and its metrics.jsonl bytes."""
    return _uninterrupted(tmp_path_factory.mktemp("uninterrupted"), 250)


def _uninterrupted(tmp_path: Path, checkpoint_every: int) -> tuple[Path, bytes]:
    config = tmp_path / f"c{checkpoint_every}.toml"
    config.write_text(TOML.format(every=checkpoint_every))
    subprocess.run(_command(config, tmp_path / "whole"), check=True, env=ENV, capture_output=True)
    (metrics,) = (tmp_path / "whole").glob("*/metrics.jsonl")
    expected = metrics.read_bytes()
    shutil.rmtree(tmp_path / "whole")
    return config, expected


def _start_and_stop_at(config: Path, store: Path, records: int, sig: int) -> int:
    """Start the run, send `sig` once its metrics.jsonl holds at least `records` records; its exit code
    (None if it finished first)."""
    proc = subprocess.Popen(
        _command(config, store), env=ENV, stderr=subprocess.PIPE, preexec_fn=default_signals
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(store.glob("*/metrics.jsonl"))
        try:
            if found and len(read_records(found[0])) >= records:
                break
        except StoreError:  # read while being rewritten is fine; never a corrupt middle line
            raise
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stderr.close()
    return proc.returncode


def _kill_series(config: Path, expected: bytes, store: Path, points: list[int]) -> None:
    for records in points:
        code = _start_and_stop_at(config, store, records, signal.SIGKILL)
        (metrics,) = store.glob("*/metrics.jsonl")
        if code == -signal.SIGKILL:
            assert expected.startswith(_complete_lines(metrics.read_bytes())), "a record differs or repeats"
            assert load_runs(store)["status"].iloc[0] == "interrupted"  # running, its pid gone
    subprocess.run(_command(config, store), check=True, env=ENV, capture_output=True)
    (metrics,) = store.glob("*/metrics.jsonl")
    assert metrics.read_bytes() == expected
    assert json.loads((metrics.parent / "status.json").read_text())["state"] == "done"


def _complete_lines(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def test_kill_9_in_and_after_the_first_checkpoint_interval(tmp_path, uninterrupted):
    # record 3 (step 90) is before the first checkpoint (step 250); 20 (step 600) after two of them
    _kill_series(*uninterrupted, tmp_path / "killed", [3, 20])


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", [250, 0])  # 0: a checkpoint only at the end
def test_kill_9_at_ten_random_points(tmp_path, checkpoint_every):
    points = sorted(random.Random(checkpoint_every).sample(range(0, 51), 10))
    _kill_series(*_uninterrupted(tmp_path, checkpoint_every), tmp_path / "killed", points)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_exit_with_their_codes_and_leave_the_run_resumable(
    tmp_path, uninterrupted, sig, code
):
    config, expected = uninterrupted
    store = tmp_path / "stopped"
    assert _start_and_stop_at(config, store, 12, sig) == code
    (metrics,) = store.glob("*/metrics.jsonl")
    assert json.loads((metrics.parent / "status.json").read_text())["state"] == "interrupted"
    subprocess.run(_command(config, store), check=True, env=ENV, capture_output=True)
    assert metrics.read_bytes() == expected


@pytest.mark.parametrize("when", ["config", "status"])
def test_a_stop_while_the_run_starts_leaves_it_resumable_not_running(
    tmp_path, tiny_config, monkeypatch, when
):
    """Ctrl-C landing while the lifecycle writes config.json or the `running` status (in the status file's
    rename or the directory's fsync after it): the run is `interrupted` where it has a status, never left
    `running` (CI saw that once, from a SIGTERM in a sweep's worker), and the next call finishes it."""
    write_config, set_status = RunDir.write_config, RunDir.set_status

    def stopped_config(self):
        write_config(self)
        raise KeyboardInterrupt

    def stopped_status(self, state, **info):
        set_status(self, state, **info)
        if state == "running":
            raise KeyboardInterrupt

    if when == "config":
        monkeypatch.setattr(RunDir, "write_config", stopped_config)
    else:
        monkeypatch.setattr(RunDir, "set_status", stopped_status)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config, tmp_path, quiet=True)
    monkeypatch.undo()
    run_dir = RunDir(tmp_path, tiny_config)
    assert (
        not run_dir.status_path.exists() if when == "config" else run_dir.status()["state"] == "interrupted"
    )
    assert run(tiny_config, tmp_path, quiet=True).status == "done"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_local_sweeps_workers_end_with_their_parent(tmp_path, sig):
    config = tmp_path / "long.toml"
    config.write_text(TOML.format(every=250).replace("steps = 1500", "steps = 100000"))
    store = tmp_path / "runs"
    command = [sys.executable, "-m", "learnscope.cli", "sweep", str(config), "--grid", "seed=0,1"]
    command += ["--executor", "local", "--workers", "2", "--quiet", "--store", str(store)]
    parent = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=default_signals
    )
    pids: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and len(pids) < 2:
        statuses = [json.loads(p.read_text()) for p in store.glob("*/status.json")]
        pids = [s["pid"] for s in statuses if s["state"] == "running"]
        time.sleep(0.05)
    assert len(pids) == 2, "the workers never started their runs"
    parent.send_signal(sig)
    parent.wait(timeout=60)
    assert parent.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its parent"
    states = [json.loads(p.read_text())["state"] for p in store.glob("*/status.json")]
    assert states == ["interrupted", "interrupted"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is not alive
        return f.read().split()[2] != "Z"


# --- in-process faults on the tiny config: 60 steps, records every 10, checkpoints every 20 ----------------


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The tiny run's metrics.jsonl bytes and its checkpoint at step 20 (what a run killed after step 20
    leaves), taken from a 20-step run of the same config: the same state at step 20."""
    root = tmp_path_factory.mktemp("whole")
    result = run(tiny(), root / "whole", quiet=True)
    at20 = run(tiny().override("train.steps=20"), root / "at20", quiet=True)
    state = torch.load(at20.path / "checkpoint.pt", weights_only=True)
    return (result.path / "metrics.jsonl").read_bytes(), state


def _killed_run(root: Path, cfg, metrics: bytes, checkpoint: dict | None) -> RunDir:
    """A run directory as a writer killed mid-run leaves it."""
    run_dir = RunDir(root, cfg)
    run_dir.path.mkdir(parents=True)
    run_dir.write_config()
    run_dir.metrics_path.write_bytes(metrics)
    run_dir.set_status("running", pid=999_999_999)
    if checkpoint is not None:
        state = {k: v for k, v in checkpoint.items() if k not in ("run", "records")}
        run_dir.save_checkpoint(state, checkpoint["records"])
    return run_dir


def _readers_work(root: Path, capsys, report: bool = True) -> None:
    """Every reader of the store: load_runs, runs ls, runs show, report (a figure: the slowest)."""
    table = load_runs(root)
    assert not table.empty
    assert cli("runs", "ls", "--store", root, capsys=capsys)[0] == 0
    for path in run_dirs(root):
        assert cli("runs", "show", path.name, "--store", root, capsys=capsys)[0] == 0
    if report:
        assert cli("report", "--store", root, "--out", root.parent / "r.html", capsys=capsys)[0] == 0


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_a_torn_last_line_at_any_offset_is_read_around_and_replaced(
    tmp_path, tiny_config, whole, capsys, with_checkpoint
):
    expected, at20 = whole
    lines = expected.splitlines(keepends=True)
    # cuts inside the record of step 20 (the checkpoint's own) and inside that of step 40, from its first
    # byte to all but its newline (a whole object: a record, kept by readers, as after an editor's save)
    for record in (2, 4):
        start = sum(map(len, lines[:record]))
        for cut in (1, len(lines[record]) // 2, len(lines[record]) - 1):
            root = tmp_path / f"torn{record}-{cut}"
            checkpoint = at20 if with_checkpoint else None
            run_dir = _killed_run(root, tiny_config, expected[: start + cut], checkpoint)
            assert len(run_dir.records()) == record + (cut == len(lines[record]) - 1)
            _readers_work(root, capsys, report=cut == 1)
            assert run(tiny_config, root, quiet=True).status == "done"
            assert run_dir.metrics_path.read_bytes() == expected
            _readers_work(root, capsys, report=cut == 1)


def test_records_before_any_checkpoint_are_not_duplicated(tmp_path, tiny_config, whole):
    expected, _ = whole
    run_dir = _killed_run(tmp_path, tiny_config, expected[: expected.index(b"\n", 200) + 1], None)
    run(tiny_config, tmp_path, quiet=True)
    assert run_dir.metrics_path.read_bytes() == expected


def test_a_checkpoint_restores_records_missing_from_the_file(tmp_path, tiny_config, whole):
    """The records through a checkpoint live in it: even a metrics.jsonl lost or emptied is rebuilt."""
    expected, at20 = whole
    run_dir = _killed_run(tmp_path, tiny_config, b"", at20)
    run(tiny_config, tmp_path, quiet=True)
    assert run_dir.metrics_path.read_bytes() == expected


def test_a_corrupt_run_is_listed_and_does_not_break_the_store(tmp_path, tiny_config, capsys):
    good = run(tiny_config, tmp_path, quiet=True)
    bad = run(tiny_config.override("seed=1"), tmp_path, quiet=True)
    lines = bad.path.joinpath("metrics.jsonl").read_text().splitlines(keepends=True)
    bad.path.joinpath("metrics.jsonl").write_text("".join([lines[0], "{garbage\n", *lines[2:]]))
    broken = tmp_path / "0000broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    table = load_runs(tmp_path)
    states = table.groupby("run")["status"].first()
    assert states[good.path.name] == "done"
    assert states[bad.path.name] == states["0000broken"] == "corrupt"
    assert "line 2" in table.loc[table["run"] == bad.path.name, "error"].iloc[0]
    code, out, _ = cli("runs", "ls", "--store", tmp_path, capsys=capsys)
    assert code == 0 and "corrupt" in out and good.path.name in out
    code, _, err = cli("runs", "show", bad.path.name[:6], "--store", tmp_path, capsys=capsys)
    assert code == 2 and "line 2 is not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert cli("report", "--store", tmp_path, "--out", tmp_path / "r.html", capsys=capsys)[0] == 0


# --- the operating system says no: a full disk, a read-only store, a store that is a file ------------------


def test_injected_enospc_is_one_line_and_the_run_resumes_identically(
    tmp_path, tiny_config, whole, monkeypatch, capsys
):
    expected, _ = whole
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config.to_json())
    real_append = RunDir.append
    calls = []

    def append_until_the_disk_fills(self, record):
        calls.append(record["step"])
        if len(calls) == 5:  # half a line reaches the disk, then it is full
            with open(self.metrics_path, "a") as f:
                f.write(encode_record(record)[:20])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.metrics_path))
        real_append(self, record)

    monkeypatch.setattr(RunDir, "append", append_until_the_disk_fills)
    store = tmp_path / "store"
    code, _, err = cli("run", config, "--quiet", "--store", store, capsys=capsys)
    assert code == 2
    assert err.startswith("error: ") and "No space left on device" in err and "metrics.jsonl" in err
    assert len(err.strip().splitlines()) == 1
    (path,) = run_dirs(store)
    assert json.loads((path / "status.json").read_text())["state"] == "failed"
    monkeypatch.setattr(RunDir, "append", real_append)
    assert cli("run", config, "--quiet", "--store", store, capsys=capsys)[0] == 0
    assert (path / "metrics.jsonl").read_bytes() == expected


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (needs root and mount(2)); skipped with the reason where there is none."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=320k") as mount:
        yield mount


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_a_real_full_disk_then_space_freed_resumes_identically(tmp_path, tiny_config, whole, tmpfs, capsys):
    expected, _ = whole
    config = tmp_path / "big.json"  # a wider MLP: its checkpoints (~0.5 MB) do not fit in 320k
    cfg = tiny_config.override("model.width=256")
    config.write_text(cfg.to_json())
    reference = run(cfg, tmp_path / "reference", quiet=True)
    code, _, err = cli("run", config, "--quiet", "--store", tmpfs / "runs", capsys=capsys)
    assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    (path,) = run_dirs(tmpfs / "runs")
    assert not list(path.glob(".*.tmp")), "a temporary file was left on the full disk"
    assert load_runs(tmpfs / "runs")["status"].iloc[0] in ("failed", "interrupted")
    _remount(tmpfs, "size=8m")
    assert cli("run", config, "--quiet", "--store", tmpfs / "runs", capsys=capsys)[0] == 0
    assert (path / "metrics.jsonl").read_bytes() == (reference.path / "metrics.jsonl").read_bytes()
    del expected


def test_a_read_only_store_is_one_line_and_a_finished_run_still_reads(tmp_path, tiny_config, tmpfs, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config.to_json())
    store = tmpfs / "runs"
    assert cli("run", config, "--quiet", "--store", store, capsys=capsys)[0] == 0
    _remount(tmpfs, "ro")
    code, out, _ = cli("run", config, "--quiet", "--store", store, capsys=capsys)
    assert code == 0 and out.startswith("done")  # finished: read back, nothing written
    code, _, err = cli("run", config, "seed=1", "--quiet", "--store", store, capsys=capsys)
    assert code == 2 and "Read-only file system" in err and len(err.strip().splitlines()) == 1
    assert cli("runs", "ls", "--store", store, capsys=capsys)[0] == 0
    _remount(tmpfs, "rw")
    assert cli("run", config, "seed=1", "--quiet", "--store", store, capsys=capsys)[0] == 0


def test_a_store_path_that_is_a_file_is_one_line(tmp_path, tiny_config, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config.to_json())
    (tmp_path / "store").write_text("not a directory")
    code, _, err = cli("run", config, "--quiet", "--store", tmp_path / "store", capsys=capsys)
    assert code == 2 and str(tmp_path / "store") in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "store").read_text() == "not a directory"


# --- bad data is bad input: nothing is written --------------------------------------------------------------


@pytest.mark.parametrize(("key", "bad"), [("x_train", np.nan), ("x_test", np.inf), ("y_train", None)])
def test_non_finite_or_empty_data_is_a_data_error_before_anything_is_written(tmp_path, key, bad, capsys):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 5)).astype(np.float32),
        "y_train": rng.integers(0, 2, 40),
        "x_test": rng.normal(size=(10, 5)).astype(np.float32),
        "y_test": rng.integers(0, 2, 10),
    }
    if bad is None:  # an empty training split
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:0], arrays["y_train"][:0]
    else:
        arrays[key][3, 2] = bad
    np.savez(tmp_path / "d.npz", **arrays)
    config = tmp_path / "c.toml"
    config.write_text(
        f'device = "cpu"\n[data]\nkind = "npz"\npath = "{tmp_path / "d.npz"}"\n[train]\nsteps = 5\n'
    )
    code, _, err = cli("run", config, "--quiet", "--store", tmp_path / "runs", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("1 non-finite" in err and ("train" if key == "x_train" else "test") in err) or "empty" in err
    assert not (tmp_path / "runs").exists()


def test_non_finite_user_tensors_are_refused(tiny_config):
    from learnscope import from_tensors

    x = torch.randn(30, 64)
    x[0, 0] = float("nan")
    y = torch.randint(0, 10, (30,))
    with pytest.raises(DataError, match="non-finite"):
        run(tiny_config, None, data=from_tensors(x, y, x.nan_to_num(), y), quiet=True)


# --- the smaller defects -----------------------------------------------------------------------------


def test_metrics_are_strict_json_and_non_finite_values_round_trip(tmp_path):
    record = {"step": 3, "loss": float("nan"), "up": float("inf"), "down": -float("inf"), "acc": 0.5}
    path = tmp_path / "m.jsonl"
    path.write_text(encode_record(record))

    def refuse(name):
        raise ValueError(f"bare {name} is not JSON")

    json.loads(path.read_text(), parse_constant=refuse)  # what a strict reader does
    (back,) = read_records(path)
    assert np.isnan(back["loss"]) and back["up"] == np.inf and back["down"] == -np.inf and back["acc"] == 0.5


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path, tiny_config, whole):
    expected, at20 = whole
    run_dir = _killed_run(tmp_path, tiny_config, expected[:100], at20)
    stale = run_dir.path / ".checkpoint.pt.12345.tmp"
    stale.write_bytes(b"")
    run(tiny_config, tmp_path, quiet=True)
    assert not stale.exists()


def test_the_callers_model_is_not_trained_in_place(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = run(tiny_config, None, model=model, quiet=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    second = run(tiny_config, None, model=model, quiet=True)
    assert first.records == second.records


def test_the_environment_is_recorded_and_a_resume_elsewhere_is_flagged(tmp_path, tiny_config, whole):
    expected, at20 = whole
    whole_run = run(tiny_config, tmp_path / "plain", quiet=True)
    env = whole_run.info["env"]
    assert env["threads"] == torch.get_num_threads() and env["torch"] == str(torch.__version__)
    assert env["device"] == "cpu" and "numpy" in env
    other = dict(at20)
    other["envs"] = [{**env, "threads": env["threads"] + 7, "from_step": 0}]
    _killed_run(tmp_path / "mixed", tiny_config, expected[:100], other)
    resumed = run(tiny_config, tmp_path / "mixed", quiet=True)
    status = json.loads((resumed.path / "status.json").read_text())
    assert [e["from_step"] for e in status["env_history"]] == [0, 20]
    assert "env_history" not in json.loads((whole_run.path / "status.json").read_text())


def test_version_and_ambiguous_prefixes(tmp_path, tiny_config, capsys):
    from learnscope import __version__

    code, out, _ = cli("--version", capsys=capsys)
    assert code == 0 and out.strip() == f"learnscope {__version__}"
    hashes = set()
    for seed in range(40):  # enough runs for two to share a first hex digit
        cfg = tiny_config.override(f"seed={seed}", "train.steps=1", "probes.use=[]")
        hashes.add(RunDir(tmp_path, cfg).hash)
        run(cfg, tmp_path, quiet=True)
    first = sorted(hashes)[0][0]
    sharing = sorted(h for h in hashes if h.startswith(first))
    assert len(sharing) > 1
    code, _, err = cli("runs", "show", first, "--store", tmp_path, capsys=capsys)
    assert code == 2 and all(h in err for h in sharing[:8])
