"""Seed ensembles (ensemble.py): members trained as one stacked model give the records of their separate runs,
are stored as ordinary runs, resume to identical records, and what cannot be stacked says so or runs alone.

Exactness. A stacked step sums in another order than a single model's (batched matmuls, BatchNorm over the
stacked channels), so an ensemble's records differ from the separate runs' by rounding, amplified over the
steps. It is proven where it is exact, in float64: every model family, BatchNorm included, gives each member
the records, weights and running statistics of its separate float64 run to FLOAT64_RTOL = 1e-12 (measured at
most 2.2e-15), while a real fault (a wrong batch, seed, learning rate, momentum or BatchNorm statistic) moves
them by 1e-3 or more.

Float32 bounds hold where the dynamics do not amplify rounding. Without BatchNorm (the MLPs below) a run is
not chaotic over a few tens of steps: losses agree to LOSS_RTOL = 1e-5 (about 100 float32 ulps; measured at
most 2.2e-7 on an AVX2-only EPYC, 2e-7 on AVX-512 before), and the ensemble is no further from its float64
run than the separate float32 run is (within a factor 2). With BatchNorm no rounding-scale bound holds in
float32: a channel whose batch values are (nearly) all equal is normalised by
sqrt(var + eps) ~ 3e-3, so a difference of one rounding in x - mean, which one summation order cancels exactly
and another does not, is amplified ~300-fold per step (measured on an AVX2-only EPYC: seed 1 of the BatchNorm
convnet below 4.9e-2 apart by step 18, at the default lr; seed 5 of the BatchNorm MLP at lr 0.1, 5.7e-4). Its
float32 ensemble is checked for what does not depend on the order of sums (the stacking, below); its
arithmetic, in float64.
Accuracies count argmaxes: a prediction flips only on a near-tie within rounding, so they may differ by one
sample at most (they have not, so far).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from learnscope import Config, load_runs, run
from learnscope.data import Split, build_data
from learnscope.runs.committee.kinds import OnlineConfig
from learnscope.runs.ensemble import (
    MAX_MEMBERS,
    NotBatchable,
    _Stack,
    check_batchable,
    group_configs,
    run_ensemble,
    train_ensemble,
)
from learnscope.runs.train import build_model
from learnscope.store import RunDir, read_records
from learnscope.sweep import grid, run_all
from tests.conftest import cli

pytestmark = pytest.mark.usefixtures("one_thread")

LOSS_RTOL = 1e-5
FLOAT64_RTOL = 1e-12


def assert_records_close(ensemble, separate, label="", data=None, rtol=LOSS_RTOL):
    """Same steps and keys; accuracies to one sample of the smallest evaluation set of `data` (default: the
    bundled digits), every other float but the epoch (losses, norms, angles, CDNVs) to `rtol`, the rest
    exactly."""
    data = data or build_data(Config().data)
    one_sample = 1 / min(len(split) for split in data.evals.values())
    assert [r["step"] for r in ensemble] == [r["step"] for r in separate], label
    for a, b in zip(ensemble, separate, strict=True):
        assert a.keys() == b.keys(), label
        for key, value in b.items():
            where = (label, a["step"], key)
            if key.endswith("acc"):
                assert abs(a[key] - value) <= one_sample + 1e-12, where
            elif isinstance(value, float) and key != "epoch":  # lr too: sphere_sgd's comes from the weights
                assert a[key] == pytest.approx(value, rel=rtol, abs=rtol * 1e-7, nan_ok=True), where
            else:
                assert a[key] == value, where


def in_float64(data):
    """`data` with float64 inputs (the labels as they are)."""
    return dataclasses.replace(
        data,
        train=Split(data.train.x.double(), data.train.y),
        evals={name: Split(split.x.double(), split.y) for name, split in data.evals.items()},
    )


def float64_run(cfg, data):
    """`cfg` run apart in float64: the same initial weights (float32 values are float64 values), batches and
    updates in exact-enough arithmetic."""
    return run(cfg, None, model=build_model(cfg, data).double(), data=in_float64(data), quiet=True)


def worst_deviation(runs, references):
    """The largest relative deviation of any loss at any probe step."""
    return max(
        abs(a[key] - b[key]) / abs(b[key])
        for x, y in zip(runs, references, strict=True)
        for a, b in zip(x.records, y.records, strict=True)
        for key in b
        if key.endswith("loss")
    )


def check_against_separate_runs(cfgs, float64_members):
    ensemble = run_ensemble(cfgs, None, quiet=True)
    separate = [run(cfg, None, quiet=True) for cfg in cfgs]
    data = build_data(cfgs[0].data)
    for e, s in zip(ensemble, separate, strict=True):
        assert e.status == s.status == "done"
        assert_records_close(e.records, s.records, f"seed {e.config.seed}", data)
    # BatchNorm running statistics (and every weight) at the end, member by member
    for e, s in zip(ensemble, separate, strict=True):
        for (name, a), (_, b) in zip(e.model.state_dict().items(), s.model.state_dict().items(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), name
    exact = [float64_run(cfg, data) for cfg in cfgs[:float64_members]]
    rounding = worst_deviation(separate[:float64_members], exact)
    assert rounding > 0  # float32 rounds: the reference is not the float32 computation itself
    assert worst_deviation(ensemble[:float64_members], exact) <= 2 * rounding
    return ensemble, separate


# --- the ensemble gives the separate runs' records ---------------------------------------------------------

# The MLP of Refinetti et al. on MNIST-1D as the increasing-complexity study configures them (12,000 samples,
# 10,000 train; SGD 0.05, momentum 0.9, wd 5e-4; batch 128), two hidden layers of 512: 40-512-512-10.
MNIST1D_MLP = {
    "device": "cpu",
    "data": {"kind": "mnist1d", "num_samples": 12000, "train_split": 10000 / 12000},
    "model": {"kind": "mlp", "depth": 2, "width": 512},
    "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {"steps": 30, "batch_size": 128, "checkpoint_every": 0, "log_every": 7},
    "probes": {"schedule": ["log"], "points": 8, "batch_size": 2000},
}


@pytest.mark.slow
def test_eight_mnist1d_mlps_as_one_ensemble_give_the_records_of_eight_separate_runs():
    base = Config.from_dict(MNIST1D_MLP)
    ensemble, _ = check_against_separate_runs([base.override(f"seed={s}") for s in range(8)], 2)
    assert (
        len(ensemble[0].records) >= 8
        and {"train/acc", "test/loss", "batch_loss"} <= ensemble[0].records[-1].keys()
    )
    assert ensemble[0].info["env"]["ensemble"] == 8  # how many were stacked: part of what decides the numbers


def test_mlp_ensemble_on_mnist1d_gives_the_records_of_separate_runs():
    """The quick version of the test above: 3 members, the package's default MNIST-1D (4,000 train)."""
    base = Config.from_dict({**MNIST1D_MLP, "data": {"kind": "mnist1d"}})
    check_against_separate_runs([base.override(f"seed={s}") for s in (0, 3, 11)], 2)


@pytest.fixture
def float64_default():
    """Models built in this test are float64 (torch's default dtype): initial weights drawn in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "conv", "depth": 2, "width": 8},
        {"kind": "mlp", "width": 32, "batchnorm": True},
        {"kind": "mlp", "width": 32},
    ],
    ids=["conv-bn", "mlp-bn", "mlp"],
)
def test_in_float64_members_equal_their_separate_runs_to_rounding(model, float64_default):
    """The ensemble's exactness, where arithmetic is exact enough to show it: records, every weight and the
    BatchNorm running statistics of each member equal those of its separate run to FLOAT64_RTOL, seed 1 of
    the BatchNorm convnet too (whose float32 runs drift 5% apart, see the module's docstring)."""
    base = Config.from_dict(
        {
            "device": "cpu",
            "data": {"kind": "digits"},
            "model": model,
            "train": {"steps": 40, "batch_size": 64, "checkpoint_every": 0, "log_every": 9},
            "probes": {"schedule": ["log"], "points": 10},
        }
    )
    cfgs = [base.override(f"seed={s}") for s in range(3)]
    data = in_float64(build_data(base.data))
    ensemble = train_ensemble(cfgs, data, quiet=True)
    separate = [run(cfg, None, data=data, quiet=True) for cfg in cfgs]
    for e, s in zip(ensemble, separate, strict=True):
        assert e.status == s.status == "done"
        assert_records_close(e.records, s.records, f"seed {e.config.seed}", data, rtol=FLOAT64_RTOL)
        for (name, a), (_, b) in zip(e.model.state_dict().items(), s.model.state_dict().items(), strict=True):
            assert a.dtype == b.dtype == (torch.float64 if a.is_floating_point() else a.dtype), name
            assert torch.allclose(a, b, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL), name
    # the comparison can fail: the members differ from each other far beyond FLOAT64_RTOL
    assert ensemble[0].records[-1]["train/loss"] != pytest.approx(
        ensemble[1].records[-1]["train/loss"], rel=1e-3
    )


def test_members_may_differ_in_optimiser_settings_and_one_may_diverge_alone(tiny_config):
    """lr, weight decay, momentum, schedule and even the optimiser kind are each member's own; a member that
    diverges stops at the step its separate run does, and the others are not disturbed."""
    cfgs = [
        tiny_config.override("optim.lr=0.1", "optim.weight_decay=0"),
        tiny_config.override("seed=1", "optim.lr=0.02", "optim.momentum=0.5"),
        tiny_config.override("seed=2", "optim=adam", "optim.lr=0.003"),
        tiny_config.override("seed=3", "optim.lr=1e6", "optim.momentum=0.99"),  # diverges
    ]
    ensemble = run_ensemble(cfgs, None, quiet=True)
    separate = [run(cfg, None, quiet=True) for cfg in cfgs]
    assert [r.status for r in ensemble] == [r.status for r in separate] == ["done"] * 3 + ["diverged"]
    assert ensemble[3].info["step"] == separate[3].info["step"]
    for e, s in zip(ensemble, separate, strict=True):
        assert_records_close(e.records, s.records, e.config.optim.kind)
    assert {r["lr"] for r in ensemble[1].records} == {0.02}


def test_per_member_optimiser_state_and_stateful_probes_on_the_sphere(float64_default):
    """Projected SGD on the sphere (its radii and step statistics are each member's optimiser state) at a
    different ELR per member, with the probes that read the optimiser, keep state across steps, hook layers or
    take Hessian-vector products: each member's records are those of its separate run (in float64: the
    scale-invariant MLP normalises with BatchNorm, see the module's docstring)."""
    base = Config.from_dict(
        {
            "device": "cpu",
            "data": {"kind": "digits", "flatten": True},
            "model": {"kind": "mlp_si", "depth": 2, "width": 64, "head_norm": 10.0},
            "optim": {"kind": "sphere_sgd", "elr": 0.01},
            "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 0},
            "probes": {
                "schedule": ["log"],
                "points": 6,
                "use": ["evaluation", "sphere", "norms", "collapse", "sharpness"],
            },
        }
    )
    cfgs = [base.override(f"seed={s}", f"optim.elr={elr}") for s, elr in ((0, 0.01), (1, 0.003), (2, 0.03))]
    data = in_float64(build_data(base.data))
    ensemble = train_ensemble(cfgs, data, quiet=True)
    assert {"sphere/angle", "sharpness/top_eig", "train/ncc/2"} <= ensemble[0].records[-1].keys()
    for e, cfg in zip(ensemble, cfgs, strict=True):
        separate = run(cfg, None, data=data, quiet=True)
        assert_records_close(e.records, separate.records, f"elr {cfg.optim.elr}", data, rtol=FLOAT64_RTOL)


def test_a_member_does_not_depend_on_which_others_it_is_stacked_with(tiny_config):
    """Bit for bit: what makes a resume with fewer members (a diverged one dropped, a catch-up) exact."""
    cfgs = [tiny_config.override(f"seed={s}") for s in range(3)]
    two = run_ensemble(cfgs[:2], None, quiet=True)
    three = run_ensemble(cfgs, None, quiet=True)
    assert [r.records for r in two] == [r.records for r in three[:2]]


# --- stored as ordinary runs, resumable --------------------------------------------------------------------


def test_members_are_ordinary_runs_in_the_store(tmp_path, tiny_config):
    cfgs = [tiny_config.override(f"seed={s}") for s in range(3)]
    results = run_ensemble([*cfgs, cfgs[0]], tmp_path, quiet=True)  # the same run twice is one member
    assert results[0] is results[3] and len({r.path for r in results}) == 3
    for cfg, result in zip(cfgs, results[:3], strict=True):
        assert result.path == RunDir(tmp_path, cfg).path
        assert sorted(p.name for p in result.path.iterdir()) == [
            "checkpoint.pt", "config.json", "metrics.jsonl", "records.npz", "status.json"
        ]  # fmt: skip
        assert json.loads((result.path / "config.json").read_text())["hash"] == cfg.run_hash()
        assert read_records(result.path / "metrics.jsonl") == result.records
        checkpoint = torch.load(result.path / "checkpoint.pt", weights_only=True)
        assert checkpoint["step"] == 60 and checkpoint["model"].keys() == result.model.state_dict().keys()
        # each tensor saved on its own, not the stacked storage it views
        for tensor in checkpoint["model"].values():
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    again = run(cfgs[1], tmp_path, quiet=True)  # `run` finds it done: no work
    assert again.model is None and again.records == results[1].records
    assert run_ensemble(cfgs, tmp_path, quiet=True)[2].records == results[2].records
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamps
    table = load_runs(tmp_path)
    assert set(table["seed"]) == {0, 1, 2} and set(table["status"]) == {"done"}


def _fail_at_step(monkeypatch, step):
    """Make the stacked step raise when it is asked for update `step` (steps before it have happened)."""
    calls = {"n": 0}
    real = _Stack.gradients

    def gradients(self, x, y):
        calls["n"] += 1
        if calls["n"] == step + 1:
            raise RuntimeError("injected fault")
        return real(self, x, y)

    monkeypatch.setattr(_Stack, "gradients", gradients)


@pytest.fixture(params=["mlp", "conv-bn"])
def small(request, tiny_config):
    """The tiny config (60 steps, checkpoints every 20, probes every 10), with its MLP or a BatchNorm convnet,
    whose stacked convolutions sum differently with the number of members stacked."""
    if request.param == "mlp":
        return tiny_config
    return tiny_config.override("model=conv", "model.depth=1", "model.width=8")


def test_a_killed_ensemble_resumes_to_identical_records(tmp_path, small, monkeypatch):
    """Killed at step 45 (checkpoints every 20), one member diverged by then (at step 5): every member is left
    to resume (a diverged one too, final only when its ensemble ends), from its last checkpoint; the rerun
    catches the diverged one up with the others held in the stack, then goes on, and writes exactly the
    uninterrupted ensemble's bytes."""
    cfgs = [small.override(f"seed={s}") for s in range(2)]
    cfgs.append(small.override("seed=2", "optim.lr=1e6", "optim.momentum=0.99"))
    whole = run_ensemble(cfgs, tmp_path / "whole", quiet=True)
    assert [r.status for r in whole] == ["done", "done", "diverged"] and whole[2].info["step"] < 20

    with monkeypatch.context() as patch:
        _fail_at_step(patch, 45)
        with pytest.raises(RuntimeError, match="injected fault"):
            run_ensemble(cfgs, tmp_path / "killed", quiet=True)
    killed = [RunDir(tmp_path / "killed", cfg) for cfg in cfgs]
    assert [d.status()["state"] for d in killed] == ["failed"] * 3
    assert "injected fault" in killed[0].status()["error"]
    assert torch.load(killed[0].checkpoint_path, weights_only=True)["step"] == 40
    assert len(killed[0].records()) == 5  # steps 0..40; 45 was never reached
    assert not killed[2].checkpoint_path.exists()

    resumed = run_ensemble(cfgs, tmp_path / "killed", quiet=True)
    for a, b in zip(resumed, whole, strict=True):
        assert a.status == b.status
        assert (a.path / "metrics.jsonl").read_bytes() == (b.path / "metrics.jsonl").read_bytes()


def test_members_left_at_different_steps_catch_up_to_identical_records(tmp_path, small, monkeypatch):
    """Killed between two members' checkpoint writes at step 40: two members stand at 40, two at 20. The two
    behind catch up (the others held in the stack), then all four go on, and every record is the
    uninterrupted ensemble's."""
    cfgs = [small.override(f"seed={s}") for s in range(4)]
    whole = run_ensemble(cfgs, tmp_path / "whole", quiet=True)
    behind = {RunDir(tmp_path / "killed", cfg).hash for cfg in cfgs[2:]}
    real = RunDir.save_checkpoint

    def save_checkpoint(self, state, records):
        if state["step"] == 40 and self.hash in behind:
            raise KeyboardInterrupt  # Ctrl-C between two members' writes
        real(self, state, records)

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "save_checkpoint", save_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            run_ensemble(cfgs, tmp_path / "killed", quiet=True)
    killed = [RunDir(tmp_path / "killed", c) for c in cfgs]
    assert [torch.load(d.checkpoint_path, weights_only=True)["step"] for d in killed] == [40, 40, 20, 20]
    assert {d.status()["state"] for d in killed} == {"interrupted"}
    resumed = run_ensemble(cfgs, tmp_path / "killed", quiet=True)
    for a, b in zip(resumed, whole, strict=True):
        assert (a.path / "metrics.jsonl").read_bytes() == (b.path / "metrics.jsonl").read_bytes()


def test_a_member_resumed_without_its_group_is_stacked_as_it_was_trained(tmp_path, small, monkeypatch):
    """A group of two killed at step 30; one member then finishes alone (`run`); the other resumes with
    the first holding its place in the stack (`stacked_with`, as the executor passes the settled members of
    a group), so its records are the uninterrupted ensemble's, bit for bit."""
    cfgs = [small.override(f"seed={s}") for s in range(2)]
    whole = run_ensemble(cfgs, tmp_path / "whole", quiet=True)
    with monkeypatch.context() as patch:
        _fail_at_step(patch, 30)
        with pytest.raises(RuntimeError):
            run_ensemble(cfgs, tmp_path / "killed", quiet=True)
    assert run(cfgs[1], tmp_path / "killed", quiet=True).status == "done"  # resumed alone
    (resumed,) = run_ensemble(cfgs[:1], tmp_path / "killed", quiet=True, stacked_with=cfgs)
    assert (resumed.path / "metrics.jsonl").read_bytes() == (whole[0].path / "metrics.jsonl").read_bytes()
    assert "env_history" not in resumed.info  # one environment throughout: an ensemble of 2


def test_an_ensemble_checkpoint_resumes_as_a_single_run_and_says_so(tmp_path, tiny_config, monkeypatch):
    """The member's checkpoint has train's format: `run` resumes it alone, and its status records that the
    numbers may differ from the resume on (a stretch of another environment)."""
    cfgs = [tiny_config.override(f"seed={s}") for s in range(2)]
    with monkeypatch.context() as patch:
        _fail_at_step(patch, 30)
        with pytest.raises(RuntimeError):
            run_ensemble(cfgs, tmp_path, quiet=True)
    resumed = run(cfgs[0], tmp_path, quiet=True)
    assert resumed.status == "done"
    history = json.loads((resumed.path / "status.json").read_text())["env_history"]
    assert [h.get("ensemble") for h in history] == [2, None] and history[1]["from_step"] == 20
    assert_records_close(resumed.records, run(cfgs[0], None, quiet=True).records)


@pytest.mark.slow
def test_sigkill_of_an_ensemble_sweep_then_rerun_gives_identical_metrics(tmp_path):
    """The acceptance check through the CLI: kill -9 mid-sweep, sweep again, compare with a clean sweep."""
    config = tmp_path / "c.toml"
    config.write_text(
        'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 256\n'
        '[train]\nsteps = 400\ncheckpoint_every = 50\n[probes]\nschedule = ["every"]\nevery = 20\n'
    )
    cmd = [sys.executable, "-m", "learnscope.cli", "sweep", str(config), "--grid", "seed=0,1,2"]
    cmd += ["--executor", "ensemble", "--quiet", "--store"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and killed_at is None:
        checkpoints = list((tmp_path / "killed").glob("*/checkpoint.pt"))
        if len(checkpoints) == 3 and all(
            len(read_records(c.parent / "metrics.jsonl")) > 8 for c in checkpoints
        ):
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = [len(read_records(c.parent / "metrics.jsonl")) for c in checkpoints]
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and max(killed_at) < 21, "the sweep finished or never checkpointed"
    subprocess.run([*cmd, str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    for whole in (tmp_path / "whole").glob("*/metrics.jsonl"):
        resumed = tmp_path / "killed" / whole.parent.name
        assert (resumed / "metrics.jsonl").read_bytes() == whole.read_bytes()
        assert json.loads((resumed / "status.json").read_text())["state"] == "done"


# --- what cannot be batched --------------------------------------------------------------------------------


def test_configs_that_differ_beyond_seed_and_optimiser_are_a_one_line_error(tmp_path, tiny_config):
    with pytest.raises(NotBatchable, match=r"^configs differ in model\.width \(64 vs 32\);") as info:
        run_ensemble([tiny_config, tiny_config.override("model.width=32")], tmp_path, quiet=True)
    assert "\n" not in str(info.value)
    with pytest.raises(NotBatchable, match=r"train\.steps"):
        check_batchable([tiny_config, tiny_config.override("train.steps=61")])
    with pytest.raises(NotBatchable, match="only training configs"):
        check_batchable([tiny_config, OnlineConfig()])
    assert not tmp_path.joinpath("x").exists() and not list(tmp_path.iterdir())


def test_a_model_with_dropout_cannot_be_stacked_and_nothing_is_written(tmp_path, tiny_config):
    vit = tiny_config.override(
        "model=vit", "model.dim=16", "model.depth=1", "model.heads=2", "model.dim_head=8", "model.mlp_dim=16"
    )
    with pytest.raises(NotBatchable, match=r"model 'vit' cannot be stacked .*dropout") as info:
        run_ensemble([vit, vit.override("seed=1")], tmp_path, quiet=True)
    assert "\n" not in str(info.value) and not list(tmp_path.iterdir())
    # without dropout it draws no random numbers in its forward: it stacks
    still = vit.override("model.dropout=0", "model.emb_dropout=0", "train.steps=12")
    ensemble = run_ensemble([still, still.override("seed=1")], None, quiet=True)
    for e, cfg in zip(ensemble, [still, still.override("seed=1")], strict=True):
        assert_records_close(e.records, run(cfg, None, quiet=True).records)


def test_a_member_run_elsewhere_stops_its_group_before_anything_is_written(tmp_path, tiny_config):
    """A member locked by another process: the ensemble says so and writes nothing; the executor then runs
    the group one by one, so only that member fails."""
    cfgs = [tiny_config.override(f"seed={s}") for s in range(3)]
    with RunDir(tmp_path, cfgs[1]).lock():
        with pytest.raises(NotBatchable, match="another process"):
            run_ensemble(cfgs, tmp_path, quiet=True)
        assert [RunDir(tmp_path, c).status()["state"] for c in cfgs] == ["new"] * 3
        outcomes = run_all(cfgs, tmp_path, executor="ensemble", quiet=True)
    assert [o.status for o in outcomes] == ["done", "busy", "done"]
    assert "another process" in outcomes[1].error


def test_group_configs_batches_what_it_can_and_splits_large_groups(tiny_config):
    seeds = grid(tiny_config, {"seed": list(range(MAX_MEMBERS + 4)), "model.width": [16, 32]})
    groups = group_configs(seeds)
    assert sorted(len(g) for g in groups) == [10, 10, 10, 10]  # 20 per width, cut into two even parts
    assert all(len({seeds[i].model.width for i in g}) == 1 for g in groups)
    mixed = [
        tiny_config,
        OnlineConfig(),
        tiny_config.override("seed=1"),
        tiny_config.override("train.steps=9"),
    ]
    assert group_configs(mixed) == [[0, 2], [1], [3]]


# --- the ensemble executor ---------------------------------------------------------------------------------


def test_the_ensemble_executor_batches_a_sweep_and_runs_the_rest_alone(tmp_path, tiny_config):
    vit = tiny_config.override(
        "model=vit", "model.dim=16", "model.depth=1", "model.heads=2", "model.dim_head=8", "model.mlp_dim=16",
        "train.steps=12",
    )  # fmt: skip
    cfgs = [*grid(tiny_config, {"seed": [0, 1], "model.width": [16, 32]}), vit, vit.override("seed=1")]
    cfgs.append(tiny_config.override("seed=9", "train.steps=20"))  # batches with nothing
    outcomes = run_all(cfgs, tmp_path / "ens", executor="ensemble", quiet=True)
    serial = run_all(cfgs, tmp_path / "serial", quiet=True)
    assert [o.status for o in outcomes] == ["done"] * len(cfgs)
    for o, s in zip(outcomes, serial, strict=True):
        assert o.path.name == s.path.name
        env = json.loads((o.path / "status.json").read_text())["env"]
        ensembled = o.config.model.kind == "mlp" and o.config.train.steps == 60
        assert env.get("ensemble") == (2 if ensembled else None)
        if ensembled:
            assert_records_close(
                read_records(o.path / "metrics.jsonl"), read_records(s.path / "metrics.jsonl")
            )
        else:  # run alone, as the serial executor runs it: the same bytes
            assert (o.path / "metrics.jsonl").read_bytes() == (s.path / "metrics.jsonl").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ens").rglob("*")}
    assert [o.path for o in run_all(cfgs, tmp_path / "ens", executor="ensemble", quiet=True)] == [
        o.path for o in outcomes
    ]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ens").rglob("*")} == stamps


def test_the_executor_stacks_a_resumed_member_with_the_settled_rest_of_its_group(
    tmp_path, tiny_config, monkeypatch
):
    """A convnet sweep of two killed mid-way; one run is then finished alone; the sweep run again resumes
    the other stacked with it, as the first sweep stacked them: the uninterrupted sweep's bytes."""
    cfgs = grid(tiny_config.override("model=conv", "model.depth=1", "model.width=8"), {"seed": [0, 1]})
    whole = run_all(cfgs, tmp_path / "whole", executor="ensemble", quiet=True)
    with monkeypatch.context() as patch:
        _fail_at_step(patch, 30)
        failed = run_all(cfgs, tmp_path / "killed", executor="ensemble", quiet=True)
    assert [o.status for o in failed] == ["failed", "failed"] and "injected fault" in failed[0].error
    assert run(cfgs[1], tmp_path / "killed", quiet=True).status == "done"
    resumed = run_all(cfgs, tmp_path / "killed", executor="ensemble", quiet=True, retry_failed=True)
    assert [o.status for o in resumed] == ["done", "done"]
    assert (resumed[0].path / "metrics.jsonl").read_bytes() == (whole[0].path / "metrics.jsonl").read_bytes()


def test_a_failing_group_fails_its_members_not_the_sweep(tmp_path, tiny_config):
    bad = tiny_config.override("data=mnist", f"data.path={tmp_path}/missing")
    cfgs = [bad, bad.override("seed=1"), tiny_config]
    outcomes = run_all(cfgs, tmp_path / "runs", executor="ensemble", quiet=True)
    assert [o.status for o in outcomes] == ["failed", "failed", "done"]
    assert "missing" in outcomes[0].error and "\n" not in outcomes[0].error


def test_cli_sweep_with_the_ensemble_executor(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('device = "cpu"\n[model]\nkind = "mlp"\nwidth = 16\n[train]\nsteps = 20\n')
    args = (
        "sweep",
        config,
        "--grid",
        "seed=0,1,2",
        "--executor",
        "ensemble",
        "--store",
        tmp_path / "s",
        "-q",
    )
    code, out, err = cli(*args, capsys=capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("done: ") for line in lines)
    assert [line.split()[-1] for line in lines] == ["seed=0", "seed=1", "seed=2"]
    code, _, err = cli("sweep", config, "--executor", "bogus", "--store", tmp_path / "s", capsys=capsys)
    assert code == 2 and "ensemble" in err
