"""A sweep's outcomes tell the truth (issue 26): the same run asked for twice runs once; a run held by another
process is reported as running there (exit code 3), never as failed; idle workers end quietly on SIGTERM and
Ctrl-C; and output a terminal cannot encode degrades to ASCII instead of a traceback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnscope import run
from learnscope.errors import LearnscopeError
from learnscope.store import RunDir
from learnscope.studies import get_study
from learnscope.sweep import grid, run_all, run_and_load
from tests.conftest import cli, tiny

try:
    import submitit
except ImportError:
    submitit = None

# the conftest's `tiny` config as a file: 60 steps of an MLP on digits, a second or two
TINY_TOML = """name = "tiny"
device = "cpu"
[model]
kind = "mlp"
width = 64
[train]
steps = 60
checkpoint_every = 20
log_every = 7
[probes]
schedule = ["every"]
every = 10
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def _command(*args) -> list[str]:
    return [sys.executable, "-m", "learnscope.cli", *map(str, args)]


# --- 1. the same run asked for twice runs once ----------------------------------------------------------


@pytest.mark.parametrize("executor", ["serial", "local", "ensemble"])
def test_a_run_asked_for_twice_runs_once_and_both_get_its_outcome(tmp_path, executor):
    """`name` is not part of the run hash: a and b are one run. Under `local` its two copies raced in two
    workers, and the one that lost the run's lock was reported failed."""
    a, b = grid(tiny(), {"name": ["a", "b"]})
    assert RunDir(tmp_path, a).hash == RunDir(tmp_path, b).hash
    outcomes = run_all([a, b], tmp_path, executor=executor, workers=2, quiet=True)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    assert [o.config.name for o in outcomes] == ["a", "b"]  # each outcome keeps its own config
    assert outcomes[0].path == outcomes[1].path == tmp_path / RunDir(tmp_path, a).hash
    assert len(list(tmp_path.glob("*/config.json"))) == 1
    assert run_and_load([a, b], tmp_path, quiet=True)["run"].nunique() == 1


def test_a_local_sweep_with_a_repeated_seed_prints_both_and_exits_0(tmp_path, config, capsys):
    store = tmp_path / "runs"
    args = ["sweep", config, "--grid", "seed=5,5", "--executor", "local", "--workers", "2", "-q"]
    code, out, err = cli(*args, "--store", store, capsys=capsys)
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert first.startswith("done: ") and second.startswith("done: ")
    assert first.split()[1] == second.split()[1]  # one run directory
    assert "same run as seed=5" in second and "same run" not in first


# --- 2. a run held by another process is running there, not failed -----------------------------------------


SLURM = pytest.param("slurm", marks=pytest.mark.skipif(submitit is None, reason="needs submitit"))


@pytest.mark.parametrize("executor", ["serial", "local", "ensemble", SLURM])
def test_a_run_held_by_another_process_is_reported_busy_not_failed(tmp_path, executor):
    """The lock of seed 1's run is held (as a second sweep on the store holds it while it runs it): this sweep
    runs the others and reports that one as running elsewhere, and writes no `failed` into its directory."""
    configs = grid(tiny(), {"seed": [0, 1, 2]})
    held = RunDir(tmp_path, configs[1])
    slurm = {"cluster": "debug"} if executor == "slurm" else None
    with held.lock():
        outcomes = run_all(configs, tmp_path, executor=executor, workers=2, quiet=True, slurm=slurm)
    assert [o.status for o in outcomes] == ["done", "busy", "done"], [o.error for o in outcomes]
    assert "another process" in outcomes[1].error and outcomes[1].path == held.path
    assert held.status().get("state") in ("new", "running")  # nothing recorded of a run it did not run


def test_run_and_load_says_how_many_runs_are_running_elsewhere(tmp_path):
    configs = grid(tiny(), {"seed": [0, 1]})
    with RunDir(tmp_path, configs[0]).lock(), pytest.raises(LearnscopeError) as info:
        run_and_load(configs, tmp_path, quiet=True)
    message = str(info.value)
    assert message.startswith("1 of 2 runs are running in another process")
    assert "failed" not in message and "--retry-failed" not in message and "\n" not in message
    assert getattr(info.value, "exit_code", None) == 3


def test_a_sweep_with_a_run_held_elsewhere_exits_3_without_a_retry_hint(tmp_path, config, capsys):
    store = tmp_path / "runs"
    cfg = tiny().override("seed=1")
    args = ["sweep", config, "--grid", "seed=0,1", "-q", "--store", store]
    with RunDir(store, cfg).lock():
        code, out, err = cli(*args, capsys=capsys)
    assert code == 3, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("done: ") and lines[1].startswith("busy: ") and "seed=1" in lines[1]
    (line,) = err.strip().splitlines()
    assert line.startswith("error: 1 of 2 runs are running in another process")
    assert "failed" not in line and "--retry-failed" not in line
    again = cli(*args, capsys=capsys)  # the other process is gone: the same sweep now runs it
    assert again[0] == 0 and again[1].count("done: ") == 2


def test_a_study_with_a_run_held_elsewhere_exits_3_and_is_not_recorded_failed(tmp_path, capsys):
    overrides = ["D=20", "N=50", "L=2", "t_max=1.0", "points=4", "replicas=2", "n_test=500"]
    overrides.append("moments=analytic")
    configs = get_study("gaussian_equivalence")("tiny", overrides).configs()
    store = tmp_path / "runs"
    args = ["study", "gaussian_equivalence", *overrides, "--store", store, "--out", tmp_path / "fig", "-q"]
    with RunDir(store, configs[0]).lock():
        code, _, err = cli(*args, capsys=capsys)
    assert code == 3, err
    assert err.startswith(f"error: 1 of {len(configs)} runs are running in another process")
    assert "failed" not in err and not (store / "studies").exists()  # no study recorded as failed
    assert cli(*args, capsys=capsys)[0] == 0  # once that process is done, the study completes


@pytest.mark.slow
def test_two_identical_local_sweeps_at_once_both_end_without_a_failure(tmp_path, config):
    """Two identical sweeps on one store: each run is run by one of them; the other finds it done, or
    reports it as running elsewhere (exit 3), and nothing is recorded failed."""
    store = tmp_path / "runs"
    command = _command("sweep", config, "--grid", "seed=0,1,2,3", "--executor", "local", "--workers", "2")
    command += ["-q", "--store", store]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    for code, out, err in results:
        assert code in (0, 3), err
        assert "failed" not in out + err
    states = [json.loads(p.read_text())["state"] for p in store.glob("*/status.json")]
    assert states == ["done"] * 4


# --- 3. idle workers end quietly ---------------------------------------------------------------------------


def _default_signals() -> None:
    """SIGINT as a terminal delivers it (a pytest-xdist worker ignores it, and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_a_local_sweep_with_an_idle_worker_prints_no_traceback(tmp_path, config, sig, code):
    """Three runs on two workers: one long, two short. Once the short ones are done one worker is idle;
    stopping the sweep then stops the long run (`interrupted`) and ends the idle worker without a word."""
    store = tmp_path / "runs"
    command = _command("sweep", config, "--zip", "seed=0,1,2", "--zip", "train.steps=100000,20,20")
    command += ["--executor", "local", "--workers", "2", "-q", "--store", store]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    sweep = subprocess.Popen(command, env=ENV, preexec_fn=_default_signals, **pipes)
    states: list[str] = []
    deadline = time.time() + 120
    while time.time() < deadline and sweep.poll() is None and sorted(states) != ["done", "done", "running"]:
        states = []
        for path in store.glob("*/status.json"):
            try:
                states.append(json.loads(path.read_text())["state"])
            except (OSError, ValueError):  # replaced between the glob and the read
                continue
        time.sleep(0.05)
    assert sorted(states) == ["done", "done", "running"], states
    time.sleep(0.5)  # the idle worker is back waiting for work
    sweep.send_signal(sig)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == code, err
    assert "Traceback" not in err and "Terminated" not in err, err
    assert len(err.strip().splitlines()) == 1 and "run the same command again to resume" in err
    states = sorted(json.loads(p.read_text())["state"] for p in store.glob("*/status.json"))
    assert states == ["done", "done", "interrupted"]


WORKER_UNDER_REPEATED_SIGTERM = """
import json, os, signal, sys, threading, time
from pathlib import Path
from learnscope.config import load_run_config
from learnscope.executors import local
from learnscope.store import RunDir

cfg = load_run_config(sys.argv[1], ["train.steps=100000"])
store = sys.argv[2]
status = RunDir(store, cfg).status_path

def signal_until_gone():
    while not status.exists() or json.loads(status.read_text())["state"] != "running":
        time.sleep(0.01)
    while True:  # as a stopped sweep's pool does: one SIGTERM, then another once an idle worker ends
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.0005)

local._worker_init(os.getppid())
threading.Thread(target=signal_until_gone, daemon=True).start()
local._run_in_worker(cfg, store, 1)
"""


def test_a_worker_signalled_again_while_it_stops_still_leaves_its_run_interrupted(tmp_path, config):
    """A sweep stopped while one worker is idle: the idle worker ends, the pool sees it broken and SIGTERMs
    the others again (concurrent.futures' `terminate_broken`), which can land while a worker marks its run
    `interrupted` (CI saw it left `running`; `lifecycle.interrupts_held`). Here a worker is sent SIGTERM every
    half millisecond from its run's start to its end."""
    store = tmp_path / "runs"
    worker = subprocess.run(
        [sys.executable, "-c", WORKER_UNDER_REPEATED_SIGTERM, str(config), str(store)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 143, worker.stderr
    assert "Traceback" not in worker.stderr, worker.stderr
    states = [json.loads(p.read_text())["state"] for p in store.glob("*/status.json")]
    assert states == ["interrupted"]


# --- 4. output that cannot be encoded degrades to ASCII ----------------------------------------------------

ASCII_ENV = {**ENV, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
ASCII_ENV.pop("PYTHONIOENCODING", None)


def test_a_run_name_an_ascii_terminal_cannot_show_is_listed_with_replacements(tmp_path):
    store = tmp_path / "runs"
    run(tiny().override("name=ε-run ✓"), store, quiet=True)
    listed = subprocess.run(
        _command("runs", "ls", "--store", store), env=ASCII_ENV, capture_output=True, timeout=120
    )
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr, listed.stderr.decode()
    out = listed.stdout.decode("ascii")  # ASCII through and through
    assert "-run" in out and RunDir(store, tiny().override("name=ε-run ✓")).hash in out


def test_help_with_characters_an_ascii_terminal_cannot_show_is_printed(tmp_path):
    helped = subprocess.run(_command("theory", "--help"), env=ASCII_ENV, capture_output=True, timeout=120)
    assert helped.returncode == 0 and b"Traceback" not in helped.stderr, helped.stderr.decode()
    out = helped.stdout.decode("ascii")
    assert "double-descent" in out and "Closed forms" in out


def test_a_demo_whose_studies_run_in_another_process_says_so_and_exits_3(tmp_path, capsys, monkeypatch):
    """A second `learnscope demo` on the same store while the first runs: its studies find their runs busy,
    which is not a failure (exit 3, each study's line says so), where it was counted as failed (exit 2)."""
    from learnscope import demo
    from learnscope.errors import RunningElsewhere

    def busy(name, *args, **kwargs):
        raise RunningElsewhere("2 of 2 runs are running in another process")

    monkeypatch.setattr(demo, "run_study", busy)
    code, out, err = cli("demo", "--store", tmp_path / "demo", "--quiet", capsys=capsys)
    assert code == 3, err
    assert out.count("not all here yet") == len(demo.DEMO_STUDIES) and "FAILED" not in out
    assert "studies have runs in another process" in err and "failed" not in err
