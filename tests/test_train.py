"""The loop and the store: schedules, records, divergence, resume, locks, user-supplied models and data."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from learnscope import Config, from_tensors, load_runs, run
from learnscope.data import build_data
from learnscope.errors import StoreError
from learnscope.probes import log_spaced_steps, probe_steps
from learnscope.store import RunDir, read_records


def test_log_spaced_steps_are_unique_integers_with_zero_and_last():
    steps = log_spaced_steps(19550, 100)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 19550
    assert steps == sorted(set(steps)) and 80 < len(steps) <= 101
    cfg = Config().probes.model_copy(update={"schedule": ["log", "epochs"], "points": 10})
    combined = list(probe_steps(cfg, 95, 10))
    assert {0, 10, 20, 90, 95}.issubset(combined) and combined == sorted(set(combined))


def test_records_follow_the_schedule_and_match_a_direct_evaluation(tiny_config):
    result = run(tiny_config, store=None, quiet=True)
    assert result.status == "done"
    assert [r["step"] for r in result.records] == [0, 10, 20, 30, 40, 50, 60]
    last = result.records[-1]
    assert last["epoch"] == pytest.approx(60 / 10)  # ~1258 digits at batch 128: 10 batches, the last partial
    data = build_data(tiny_config.data)
    model = result.model.eval()
    with torch.no_grad():
        out = model(data.evals["test"].x)
    y = data.evals["test"].y
    assert last["test/acc"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert last["test/loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert "batch_loss" in result.records[1] and "batch_loss" not in result.records[0]


def test_training_is_deterministic_and_learns(tiny_config):
    a = run(tiny_config, store=None, quiet=True)
    b = run(tiny_config, store=None, quiet=True)
    assert a.records == b.records
    assert a.records[-1]["test/acc"] > 0.85 > a.records[0]["test/acc"]


def test_divergence_is_recorded_and_final(tmp_path, tiny_config):
    cfg = tiny_config.override("optim.lr=1e6", "optim.momentum=0.99")
    result = run(cfg, tmp_path, quiet=True)
    assert result.status == "diverged"
    status = json.loads((result.path / "status.json").read_text())
    assert status["state"] == "diverged" and 1 <= status["step"] < 60
    assert max(r["step"] for r in result.records) < status["step"]
    again = run(cfg, tmp_path, quiet=True)
    assert again.status == "diverged" and again.model is None


def test_done_run_returns_without_work(tmp_path, tiny_config):
    first = run(tiny_config, tmp_path, quiet=True)
    stamp = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    second = run(tiny_config, tmp_path, quiet=True)
    assert second.model is None and second.records == first.records
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == stamp
    table = load_runs(tmp_path)
    assert len(table) == len(first.records) and (table["run"] == first.path.name).all()
    assert table["model.width"].iloc[0] == 64 and table["status"].iloc[0] == "done"


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path, tiny_config):
    whole = run(tiny_config, tmp_path / "a", quiet=True)
    # A run killed after writing step 40's record and half of step 50's, its last checkpoint at step 20.
    killed = RunDir(tmp_path / "b", tiny_config)
    killed.path.mkdir(parents=True)
    killed.write_config()
    lines = (whole.path / "metrics.jsonl").read_text().splitlines()
    killed.metrics_path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])
    killed.set_status("running", pid=0)
    state = {k: v for k, v in _checkpoint_at(tiny_config, 20, tmp_path / "c").items() if k != "run"}
    records = state.pop("records")
    killed.save_checkpoint(state, records)
    resumed = run(tiny_config, tmp_path / "b", quiet=True)
    assert resumed.records == whole.records
    assert killed.metrics_path.read_text() == (whole.path / "metrics.jsonl").read_text()


def _global_rngs():
    import random

    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_a_run_draws_from_its_own_rng_and_leaves_the_callers_as_found(tmp_path):
    """A ViT with dropout draws from the RNG at every step. Its records depend on its seed alone, not on what
    the caller's global RNGs hold, which it leaves as found (torch, numpy, Python); a killed run resumes to
    the same records (the checkpoint holds the run's own stream)."""
    import random

    vit = {"kind": "vit", "patch": 4, "dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 16}
    cfg = Config.from_dict(
        {"data": {"kind": "digits"}, "model": vit, "train": {"steps": 30, "checkpoint_every": 10}}
    )
    records = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed), np.random.seed(caller_seed), random.seed(caller_seed)
        before = _global_rngs()
        records.append(run(cfg, None, quiet=True).records)
        after = _global_rngs()
        assert (
            torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
        )
    assert records[0] == records[1]
    no_dropout = run(cfg.override("model.dropout=0", "model.emb_dropout=0"), None, quiet=True).records
    assert no_dropout != records[0]  # the dropout draws are part of the records
    state = {k: v for k, v in _checkpoint_at(cfg, 10, tmp_path / "c").items() if k != "run"}
    killed = RunDir(tmp_path / "b", cfg)
    killed.path.mkdir(parents=True)
    killed.write_config()
    checkpoint_records = state.pop("records")
    killed.save_checkpoint(state, checkpoint_records)
    torch.manual_seed(99)
    assert run(cfg, tmp_path / "b", quiet=True).records == records[0]


def _checkpoint_at(cfg, step, root):
    """The checkpoint a run of `cfg` writes at `step` (taken from a run that checkpoints there)."""
    import shutil

    result = run(cfg.override(f"train.checkpoint_every={step}", f"train.steps={step}"), root, quiet=True)
    state = torch.load(result.path / "checkpoint.pt", weights_only=True)
    shutil.rmtree(result.path)
    return state


def test_foreign_checkpoint_is_refused_and_left_intact(tmp_path, tiny_config):
    other = run(tiny_config.override("seed=5"), tmp_path, quiet=True)
    target = RunDir(tmp_path, tiny_config)
    target.path.mkdir(parents=True)
    (target.path / "checkpoint.pt").write_bytes((other.path / "checkpoint.pt").read_bytes())
    with pytest.raises(StoreError, match="belongs to run"):
        run(tiny_config, tmp_path, quiet=True)
    assert (target.path / "checkpoint.pt").read_bytes() == (other.path / "checkpoint.pt").read_bytes()
    assert run(tiny_config.override("seed=5"), tmp_path, quiet=True).records == other.records


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_config):
    target = RunDir(tmp_path, tiny_config)
    target.path.mkdir(parents=True)
    target.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="cannot be read"):
        run(tiny_config, tmp_path, quiet=True)


def test_lock_stops_a_second_process(tmp_path, tiny_config):
    run_dir = RunDir(tmp_path, tiny_config)
    with run_dir.lock(), pytest.raises(StoreError, match="another process"):
        run(tiny_config, tmp_path, quiet=True)


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"st')
    assert read_records(path) == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\n{"st\n{"step": 1}\n')
    with pytest.raises(StoreError, match="line 2"):
        read_records(path)


def test_user_model_and_tensors(tmp_path, tiny_config):
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    data = from_tensors(x[:150], y[:150], x[150:], y[150:])
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    result = run(tiny_config, tmp_path, model=model, data=data, quiet=True)
    assert result.records[-1]["test/acc"] > 0.9
    assert result.path.name != RunDir(tmp_path, tiny_config).hash
    body = json.loads((result.path / "config.json").read_text())
    assert body["identity"].startswith("model:")


def test_sigkill_mid_run_then_rerun_gives_identical_metrics(tmp_path):
    """The acceptance check through the CLI: kill -9 half-way, run again, compare with a clean run."""
    config = tmp_path / "c.toml"
    config.write_text(
        'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 256\n'
        '[train]\nsteps = 600\ncheckpoint_every = 50\n[probes]\nschedule = ["every"]\nevery = 20\n'
    )
    cmd = [sys.executable, "-m", "learnscope.cli", "run", str(config), "--quiet", "--store"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL)
    metrics = None
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if found and (found[0].parent / "checkpoint.pt").exists() and len(read_records(found[0])) > 10:
            metrics = found[0]
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert metrics is not None, "the run finished or never checkpointed before the kill"
    assert json.loads((metrics.parent / "status.json").read_text())["state"] == "running"
    assert len(read_records(metrics)) < 31
    subprocess.run([*cmd, str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    (whole,) = (tmp_path / "whole").glob("*/metrics.jsonl")
    assert metrics.read_text() == whole.read_text()
    assert json.loads((metrics.parent / "status.json").read_text())["state"] == "done"


REGRESSION_PLUGIN = """
from typing import Literal

import torch

from learnscope import DATA, from_tensors
from learnscope.sections import DataConfig


class ToyLinearConfig(DataConfig):
    kind: Literal["toy_linear"] = "toy_linear"
    n: int = 200
    d: int = 5
    noise: float = 0.1
    seed: int = 0


@DATA.register("toy_linear", ToyLinearConfig)
def toy_linear(cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(2 * cfg.n, cfg.d, generator=g)
    w = torch.randn(cfg.d, 2, generator=g)
    y = x @ w + cfg.noise * torch.randn(2 * cfg.n, 2, generator=g)
    return from_tensors(x[: cfg.n], y[: cfg.n], x[cfg.n :], y[cfg.n :])
"""


def test_a_toy_regression_dataset_from_a_plugin_trains_to_the_least_squares_solution(
    tmp_path, plugin, capsys
):
    """Real-valued targets of width 2, a linear model, full-batch GD on the mean squared error: the test loss
    converges to that of the least-squares fit (numpy's lstsq), the trusted reference."""
    import numpy as np

    from learnscope.data import build_data
    from tests.conftest import cli

    plugin("toy_regression", REGRESSION_PLUGIN)
    config = tmp_path / "reg.toml"
    config.write_text(
        'device = "cpu"\n[data]\nkind = "toy_linear"\n[model]\nkind = "linear"\n'
        '[optim]\nkind = "sgd"\nlr = 0.5\nmomentum = 0.0\nweight_decay = 0.0\n'
        '[train]\nsteps = 400\nbatch_size = "full"\nloss = "mse"\n'
        '[probes]\nschedule = ["every"]\nevery = 100\n'
    )
    store = tmp_path / "runs"
    code, _, err = cli(
        "run", config, "--plugin", "toy_regression", "--quiet", "--store", store, capsys=capsys
    )
    assert code == 0, err
    records = load_runs(store)
    assert "test/acc" not in records and records["test/loss"].iloc[-1] < records["test/loss"].iloc[0] / 10
    data = build_data(Config.load(config).data)
    x, y = data.train.x.double().numpy(), data.train.y.double().numpy()
    design = np.hstack([x, np.ones((len(x), 1))])  # the linear model has a bias
    w, *_ = np.linalg.lstsq(design, y, rcond=None)
    xt, yt = data.evals["test"].x.double().numpy(), data.evals["test"].y.double().numpy()
    best = ((np.hstack([xt, np.ones((len(xt), 1))]) @ w - yt) ** 2).mean()
    assert records["test/loss"].iloc[-1] == pytest.approx(best, rel=1e-3)
    # cross-entropy cannot take real targets: one line, nothing written
    ce = ("run", config, "train.loss=ce", "--plugin", "toy_regression", "--store", tmp_path / "ce")
    code, _, err = cli(*ce, capsys=capsys)
    assert code == 2 and "loss=mse" in err and not (tmp_path / "ce").exists()


ANGLE_PLUGIN = """
from typing import Literal

import torch

from learnscope import PROBES
from learnscope.sections import ProbeConfig


class AngleConfig(ProbeConfig):
    kind: Literal["angle"] = "angle"


class Angle:
    '''The angle (radians) the flattened weights turned since the previous probe step: state across steps.'''

    def __init__(self):
        self.previous = None

    def __call__(self, ctx):
        now = torch.cat([p.detach().flatten() for p in ctx.model.parameters()]).double().cpu()
        angle = float("nan") if self.previous is None else float(
            torch.arccos(torch.clamp(now @ self.previous / (now.norm() * self.previous.norm()), -1, 1))
        )
        self.previous = now
        return {"angle": angle}

    def state_dict(self):
        return {"previous": self.previous}

    def load_state_dict(self, state):
        self.previous = state["previous"]


@PROBES.register("angle", AngleConfig)
def angle(cfg):
    return Angle()
"""


def test_a_probe_with_state_across_steps_resumes_to_identical_records(tmp_path, tiny_config, plugin):
    """A resumed run's probe must start from the state it had at the checkpoint, not afresh: the angle turned
    since the previous probe step, first at step 30 after a resume at step 20."""
    import importlib

    plugin("angle_probe", ANGLE_PLUGIN)
    importlib.import_module("angle_probe")
    cfg = tiny_config.override("probes.use=[evaluation, angle]")
    whole = run(cfg, tmp_path / "a", quiet=True)
    assert np.isnan(whole.records[0]["angle"]) and all(r["angle"] > 0 for r in whole.records[1:])
    state = {k: v for k, v in _checkpoint_at(cfg, 20, tmp_path / "c").items() if k != "run"}
    assert state["probes"][1]["previous"] is not None
    killed = RunDir(tmp_path / "b", cfg)
    killed.path.mkdir(parents=True)
    killed.write_config()
    killed.save_checkpoint(state, state.pop("records"))
    resumed = run(cfg, tmp_path / "b", quiet=True)
    assert killed.metrics_path.read_bytes() == (whole.path / "metrics.jsonl").read_bytes()
    assert resumed.records[3]["angle"] == whole.records[3]["angle"]
