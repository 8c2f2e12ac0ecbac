"""Your own loop, logged (learnscope.track, own_loop.py): a plain deterministic PyTorch loop is the trusted
reference; the same loop through `track` writes exactly its records, and so does a run killed with SIGKILL
after a checkpoint and run again. A done run does no work, a failed one resumes, bad input is one line, the
lock holds against a second process, and the run is one of the store's for the commands that read it."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import learnscope
from learnscope import store as store_module
from learnscope.errors import ConfigError, LearnscopeError
from learnscope.store import load_runs, read_records, shown_state
from tests.conftest import REPO, cli

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {
    "name": "mlp",
    "lr": 0.05,
    "width": 16,
    "seed": 3,
    "steps": 40,
    "every": 10,
    "opt": {"momentum": 0.9},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the killed process computes as this one does


def _build(config):
    """Model, optimiser, data and the batches' own generator, all from the config's seed."""
    torch.manual_seed(config["seed"])
    width = config["width"]
    model = nn.Sequential(nn.Linear(5, width), nn.Tanh(), nn.Dropout(0.2), nn.Linear(width, 1))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["opt"]["momentum"])
    batches = torch.Generator().manual_seed(config["seed"] + 1)
    x = torch.randn(64, 5, generator=batches)
    return model, opt, x, x.sum(1, keepdim=True).sin(), batches


def _step(model, opt, x, y, batches) -> dict:
    """One update: the batch from the loop's own generator, dropout from the global RNG."""
    index = torch.randint(0, len(x), (16,), generator=batches)
    loss = F.mse_loss(model(x[index]), y[index])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return {"loss": loss.item(), "norm": model[0].weight.norm().item()}


def plain_loop(config) -> list[dict]:
    """The reference: the loop without learnscope."""
    model, opt, x, y, batches = _build(config)
    return [{"step": step, **_step(model, opt, x, y, batches)} for step in range(config["steps"])]


def tracked_loop(store, config, die_at=None, fail_at=None, interrupt_at=None):
    """The same loop through `track`, checkpointing every `every` steps; it can die (SIGKILL), raise or be
    interrupted after logging a step."""
    model, opt, x, y, batches = _build(config)
    with learnscope.track(config, store=store) as run:
        state = run.restore()
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            batches.set_state(state["batches"])
        for step in run.steps(config["steps"]):
            run.log(step, _step(model, opt, x, y, batches))
            if step % config["every"] == config["every"] - 1:
                run.checkpoint(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "batches": batches.get_state()}
                )
            if step == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if step == fail_at:
                raise RuntimeError("boom")
            if step == interrupt_at:
                raise KeyboardInterrupt
    return run


def _status(run) -> dict:
    return json.loads((run.path / "status.json").read_text())


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_run_killed_after_a_checkpoint_ends_with_the_records_of_the_plain_loop(tmp_path):
    reference = plain_loop(CONFIG)
    whole = tracked_loop(tmp_path / "whole", CONFIG)
    assert whole.records == reference
    assert read_records(whole.path / "metrics.jsonl") == reference  # floats exact through the JSON
    assert _status(whole)["state"] == "done" and _status(whole)["env"]["torch"] == torch.__version__

    store = tmp_path / "killed"
    code = (
        f"from tests.test_track import CONFIG, tracked_loop; tracked_loop({str(store)!r}, CONFIG, die_at=24)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (path,) = [p for p in store.iterdir() if p.is_dir()]
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "running" and shown_state(status) == "interrupted"
    assert len(read_records(path / "metrics.jsonl")) == 25  # steps 20..24 logged after the checkpoint at 19

    resumed = tracked_loop(store, CONFIG)
    assert resumed.resume_step == 20
    assert resumed.records == reference
    assert read_records(path / "metrics.jsonl") == reference
    assert _status(resumed)["state"] == "done"


def test_a_done_run_does_no_work_and_refuses_more_records(tmp_path):
    first = tracked_loop(tmp_path, CONFIG)
    before = _snapshot(tmp_path)
    with learnscope.track(CONFIG, store=tmp_path) as run:
        assert run.done and run.resume_step == CONFIG["steps"]
        assert list(run.steps(CONFIG["steps"])) == []
        assert run.records == first.records
        state = run.restore()  # the last checkpoint's: the trained model
        assert set(state) == {"model", "opt", "batches"}
        with pytest.raises(LearnscopeError, match="done already"):
            run.log(40, loss=0.0)
        with pytest.raises(LearnscopeError, match="done already"):
            run.checkpoint({})
    assert _snapshot(tmp_path) == before


def test_a_failed_run_resumes_and_an_interrupted_one_says_so(tmp_path):
    reference = plain_loop(CONFIG)
    with pytest.raises(RuntimeError, match="boom"):
        tracked_loop(tmp_path, CONFIG, fail_at=25)
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    status = json.loads((path / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == "RuntimeError: boom"

    with pytest.raises(KeyboardInterrupt):
        tracked_loop(tmp_path, CONFIG, interrupt_at=33)  # resumed at 20, stopped again after 33
    assert json.loads((path / "status.json").read_text())["state"] == "interrupted"

    resumed = tracked_loop(tmp_path, CONFIG)
    assert resumed.resume_step == 30
    assert resumed.records == reference


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"lr": np.float32(0.1)}, "'lr'"),
        ({"opt": {"betas": (0.9, object())}}, "'opt.betas[1]'"),
        ({"lr": float("nan")}, "'lr'"),
        ({"kind": "mlp"}, "'kind'"),
        ({"name": 3}, "'name'"),
        ({"opt": {1: 2}}, "opt.1"),
    ],
)
def test_a_config_value_that_is_not_plain_json_is_one_line_naming_its_key(tmp_path, config, key):
    with pytest.raises(ConfigError) as error:
        learnscope.track(config, store=tmp_path / "runs")
    assert key in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_bad_records_and_states_are_refused_before_anything_is_written(tmp_path):
    with learnscope.track({"seed": 0}, store=tmp_path) as run:
        run.log(0, loss=torch.tensor(0.5), acc=np.float64(0.25), n=np.int64(3))
        with pytest.raises(LearnscopeError, match="'weights'"):
            run.log(1, weights=torch.ones(3))
        with pytest.raises(LearnscopeError, match=r"state\['extra'\]\[0\] is a numpy.ndarray"):
            run.checkpoint({"model": {"w": torch.ones(2)}, "extra": [np.zeros(2)]})
        assert not run.path.joinpath("checkpoint.pt").exists()
    assert read_records(run.path / "metrics.jsonl") == [{"step": 0, "loss": 0.5, "acc": 0.25, "n": 3}]
    with pytest.raises(LearnscopeError, match="inside `with"):
        run.log(2, loss=0.0)


def test_records_reach_the_record_sinks_and_an_unknown_tracker_is_refused(tmp_path, monkeypatch):
    from learnscope import tracking

    assert tracking.record_sink in store_module.RECORD_SINKS  # --track and LEARNSCOPE_TRACK reach the run
    seen = []

    class Sink:
        def log(self, record):
            seen.append(record)

        def close(self):
            seen.append("closed")

    monkeypatch.setattr(store_module, "RECORD_SINKS", [lambda run: Sink()])
    run = tracked_loop(tmp_path, {**CONFIG, "steps": 12})
    assert seen == [*run.records, "closed"]

    monkeypatch.setenv(tracking.ENVIRONMENT, "nosuch")
    with pytest.raises(ConfigError, match="nosuch"):
        tracked_loop(tmp_path, {**CONFIG, "steps": 13})
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_a_second_process_on_a_running_run_is_refused(tmp_path):
    config = {"seed": 1, "name": "held"}
    code = (
        "import json, sys, learnscope\n"
        "from learnscope.errors import RunBusy\n"
        "try:\n"
        "    with learnscope.track(json.loads(sys.argv[1]), store=sys.argv[2]): pass\n"
        "except RunBusy as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    with learnscope.track(config, store=tmp_path) as run:
        run.log(0, loss=1.0)
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(config), str(tmp_path)],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 3, proc.stderr
        assert f"run {run.hash} is being run by another process" in proc.stdout
        assert _status(run)["state"] == "running" and _status(run)["pid"] == os.getpid()
    assert _status(run)["state"] == "done" and run.records == [{"step": 0, "loss": 1.0}]


def test_sigterm_leaves_the_run_interrupted_and_ends_the_process_as_sigterm_does(tmp_path):
    code = (
        "import os, signal, sys, learnscope\n"
        "with learnscope.track({'seed': 2}, store=sys.argv[1]) as run:\n"
        "    for step in run.steps(10):\n"
        "        run.log(step, loss=float(step))\n"
        "        if step == 3:\n"
        "            run.checkpoint({'step': step})\n"
        "        if step == 5:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout, proc.stderr
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((path / "status.json").read_text())["state"] == "interrupted"
    with learnscope.track({"seed": 2}, store=tmp_path) as run:
        assert run.restore() == {"step": 3} and run.resume_step == 4
        for step in run.steps(10):
            run.log(step, loss=float(step))
    assert run.records == [{"step": s, "loss": float(s)} for s in range(10)]


def test_the_run_is_one_of_the_store_for_every_command_that_reads_it(tmp_path, capsys):
    store = tmp_path / "runs"
    done = tracked_loop(store, CONFIG)
    with pytest.raises(RuntimeError):
        tracked_loop(store, {**CONFIG, "seed": 4}, fail_at=5)

    code, out, err = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if done.hash in line]
    assert "done" in line and " 39 " in line and " mlp " in line
    assert sum(" failed " in line for line in out.splitlines()) == 1

    code, out, err = cli("sweep", "status", store, capsys=capsys)
    assert code == 0, err
    assert f"{store}: 2 runs: 1 done, 1 failed" in out and "RuntimeError: boom" in out

    code, out, err = cli("report", store, "--metric", "loss", "--out", tmp_path / "report.png", capsys=capsys)
    assert code == 0, err
    assert "2 runs, loss against step" in out and (tmp_path / "report.png").stat().st_size > 0

    code, out, err = cli("runs", "collect", "--store", store, "--out", tmp_path / "runs.csv", capsys=capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "runs.csv")
    finished = table[table["run"] == done.hash]
    assert finished["loss"].tolist() == [r["loss"] for r in plain_loop(CONFIG)]
    assert set(finished["lr"]) == {0.05} and set(finished["opt.momentum"]) == {0.9}
    assert set(finished["kind"]) == {"own_loop"} and set(finished["status"]) == {"done"}

    loaded = load_runs(store)
    assert set(loaded["status"]) == {"done", "failed"} and len(loaded) == 40 + 6
