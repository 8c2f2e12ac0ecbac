"""The double-descent study: theory curves as runs, gradient descent through the train loop against the
closed form, the CLI, and the tiny study end to end (slow)."""

import json

import numpy as np
import pandas as pd
import pytest

from learnscope import run
from learnscope.config import load_run_config
from learnscope.data.teachers import sample_teachers, singular_values
from learnscope.runs.dd_theory import DoubleDescentTheoryConfig, run_dd_theory
from learnscope.store import load_runs
from learnscope.studies import double_descent as dd
from learnscope.studies import run_study
from learnscope.sweep import run_all
from learnscope.theory.double_descent import approx_curves, exact_curves

from .conftest import cli


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_train_loop_gradient_descent_equals_the_discrete_closed_form(tmp_path, l2):
    """The stored run of the ordinary loop (linear student, summed loss, lr = 1/sharpness, weight decay λ)
    against V diag(1 − (1 − η(L + λ))^t) Vᵀ w* on the same draw, at every logged step; float32 training."""
    cfg = dd.gd_config(100.0, seed=3, steps=3000).override(f"optim.weight_decay={l2}", "device=cpu")
    result = run(cfg, tmp_path, quiet=True)
    table = pd.DataFrame(result.records)
    draw = sample_teachers(150, singular_values(100, 70, 100.0), 0.0, [3])
    exact = exact_curves(draw, table["step"].to_numpy(float), l2, "gd", eta=table["lr"].iloc[0])
    np.testing.assert_allclose(table["teacher/eg"], exact.eg[0], atol=2e-5)
    np.testing.assert_allclose(table["teacher/R"], exact.R[0], atol=2e-5)
    np.testing.assert_allclose(table["teacher/Q"], exact.Q[0], atol=5e-5)
    assert (tmp_path / result.path.name / "metrics.jsonl").is_file()


def test_theory_runs_are_stored_read_back_and_swept(tmp_path):
    cfg = DoubleDescentTheoryConfig(n=110, kappa=30.0, points=50)
    first = run_dd_theory(cfg, tmp_path)
    again = run_dd_theory(cfg, tmp_path)
    assert first.computed and not again.computed and again.records == first.records
    curve = approx_curves(110, 100, 70, 30.0, t=cfg.times())
    np.testing.assert_allclose([r["eg"] for r in first.records], curve.eg, rtol=1e-12)
    # a config file of the kind, swept over kappa like any experiment
    path = tmp_path / "dd.toml"
    path.write_text('kind = "dd_theory"\nform = "exact"\ndraws = 4\npoints = 40\nt_max = 1e5\n')
    configs = [load_run_config(path, [f"kappa={k}"]) for k in (1.0, 100.0)]
    outcomes = run_all(configs, tmp_path / "store", quiet=True)
    assert [o.status for o in outcomes] == ["done", "done"]
    table = load_runs(tmp_path / "store")
    assert sorted(table["kappa"].unique()) == [1.0, 100.0] and {"t", "R", "Q", "eg", "eg_std"} <= set(table)


def test_cli_writes_the_curve_on_the_original_grid(tmp_path, capsys):
    out = tmp_path / "curve.csv"
    code, text, _ = cli("theory", "double-descent", "--out", out, "--store", tmp_path / "runs", capsys=capsys)
    assert code == 0 and "0.2327" in text and "0.2677" in text  # the paper's Fig. 1: first minimum, peak
    curve = pd.read_csv(out)
    assert list(curve.columns) == ["t", "R", "Q", "eg"] and len(curve) == 300
    np.testing.assert_allclose(curve["t"], 10 ** np.linspace(-3, 8, 300), rtol=1e-12)


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["kapa=3"], "kapa"),
        (["p=0"], "domain"),
        (["form=exact", "features=fast"], "features"),
        (["n=-1"], "n"),
    ],
)
def test_cli_bad_settings_exit_2_with_one_line(tmp_path, capsys, args, culprit):
    code, _, err = cli("theory", "double-descent", *args, "--store", tmp_path, capsys=capsys)
    assert code == 2 and culprit in err and err.count("\n") == 1


def test_study_configs_cover_the_papers_figures():
    configs = dd.DoubleDescent("tiny").configs()
    names = [c.name for c in configs]
    assert {"fig1 fast", "fig1 slow", "fig1 both"} <= set(names)
    assert (
        sum(n.startswith("phase") for n in names) == 7 and sum(n.startswith("heatmap") for n in names) == 25
    )
    paper = dd.DoubleDescent("paper").configs()
    nets = [c for c in paper if c.name.startswith("network")]
    assert len(nets) == 500 and nets[0].model.kind == "resnet18" and nets[0].optim.lr == 1e-4
    assert nets[0].data.label_noise == 0.2 and nets[0].train.epochs == 1001


@pytest.mark.slow
def test_tiny_study_reproduces_the_theory_and_draws_its_figures(tmp_path):
    result = run_study("double_descent", "tiny", store=tmp_path / "runs", out=tmp_path / "out", quiet=True)
    summary = result.summary.set_index("setting")
    assert summary.loc["fig1 both", "double_descent"]
    assert summary.loc["fig1 both", "first_min"] == pytest.approx(0.2327, abs=1e-4)
    assert not summary.loc["fig1 fast", "double_descent"] and not summary.loc["fig1 slow", "double_descent"]
    assert summary.loc["exact kappa=100", "double_descent"]
    assert not summary.loc["exact kappa=1", "double_descent"]
    for kappa in ("1", "100", "10000"):
        assert summary.loc[f"kappa={kappa}", "gd_vs_exact"] < 1e-4  # the loop is the closed form
        assert summary.loc[f"kappa={kappa}", "gd_vs_approx"] < 0.1  # 2 draws: per-draw spread ~0.07
    for name in ("fast_slow.png", "heatmap.png", "phase_diagram.png", "gd_vs_theory.png", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["study"] == "double_descent"
