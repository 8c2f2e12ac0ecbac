"""One run system: a training config and a committee-machine config (simulation and its ODE twin) go through
the same `learnscope run`, store, `runs ls`, sweep and report."""

import json

import numpy as np
import pytest

from learnscope import load_runs
from learnscope.config import Config, load_run_config
from learnscope.errors import ConfigError
from learnscope.registry import RUN_KINDS
from learnscope.runs.committee.kinds import OnlineConfig
from tests.conftest import REPO, cli

COMMITTEE = REPO / "configs" / "committee_rand.toml"
SMALL = ("D=20", "N=50", "t_max=2.0", "points=6", "n_test=500")  # seconds, not minutes


def test_run_kinds_are_registered_and_a_file_names_its_kind(tmp_path):
    assert {"train", "online_sgd"} <= set(RUN_KINDS.kinds())
    assert isinstance(load_run_config(COMMITTEE), OnlineConfig)
    assert isinstance(load_run_config(REPO / "configs" / "digits_mlp.toml"), Config)
    assert load_run_config(COMMITTEE, ["method=ode"]).method == "ode"
    # a training config may say its kind; the hash is the same as without it
    plain = tmp_path / "plain.toml"
    plain.write_text("[train]\nsteps = 5\n")
    named = tmp_path / "named.toml"
    named.write_text('kind = "train"\n[train]\nsteps = 5\n')
    assert load_run_config(plain).run_hash() == load_run_config(named).run_hash()
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "nope"\n')
    with pytest.raises(ConfigError, match=r"unknown run kind 'nope'; allowed: .*online_sgd.*train"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="unknown config key 'optim'"):
        load_run_config(COMMITTEE, ["optim.lr=0.1"])  # the committee kind's learning rate is `eta`


def test_run_a_simulation_its_ode_twin_and_a_training_config_into_one_store(tmp_path, capsys):
    store = tmp_path / "runs"
    for extra in ((), ("method=ode",)):
        code, out, err = cli("run", COMMITTEE, *SMALL, *extra, "--quiet", "--store", store, capsys=capsys)
        assert code == 0 and out.startswith("done:") and "eg=" in out, err
    code, _, err = cli(
        "run",
        REPO / "configs" / "digits_mlp.toml",
        "train.steps=20",
        "--quiet",
        "--store",
        store,
        capsys=capsys,
    )
    assert code == 0, err
    code, out, _ = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0 and out.count("committee rand L=2") == 2 and "digits-mlp" in out
    table = load_runs(store)
    sim = table[table["method"] == "simulation"]
    ode = table[table["method"] == "ode"]
    assert sorted(sim["t"].unique()) == sorted(ode["t"].unique())  # the same times, so they overlay
    # at t = 0 the ODE starts from each replica's own weights: its error is the closed form there
    np.testing.assert_allclose(
        ode[ode["t"] == 0].sort_values("replica")["eg"],
        sim[sim["t"] == 0].sort_values("replica")["eg_analytic"],
        rtol=1e-12,
    )
    runs = [r for r in table.groupby("run")["method"].first().dropna().index]
    chosen = [arg for run in runs for arg in ("--run", run)]
    code, out, err = cli("report", store, *chosen, "--out", tmp_path / "r.html", capsys=capsys)
    assert code == 0 and "2 runs, eg against t" in out, err


def test_a_sweep_over_a_committee_learning_rate_works_like_one_over_a_training_config(tmp_path, capsys):
    store = tmp_path / "runs"
    args = ("sweep", COMMITTEE, *SMALL, "--grid", "eta=0.1,0.3", "--store", store, "--quiet")
    code, out, _ = cli(*args, "--dry-run", capsys=capsys)
    assert code == 0 and "2 runs in" in out and "0 finished, 2 to run" in out
    code, out, err = cli(*args, capsys=capsys)
    assert code == 0 and out.count("done:") == 2 and "eta=0.1" in out and "eta=0.3" in out, err
    etas = sorted(json.loads(p.read_text())["config"]["eta"] for p in store.glob("*/config.json"))
    assert etas == [0.1, 0.3]
    code, out, _ = cli(*args, "--dry-run", capsys=capsys)
    assert "2 finished, 0 to run" in out
