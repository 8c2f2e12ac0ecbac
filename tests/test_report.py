"""`learnscope report`: runs of a store overlaid (replicas as mean and band), as a PNG or one self-contained
HTML page; labels that tell runs apart; bad input exiting 2 with one line."""

from __future__ import annotations

import base64
import html
import re

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

import learnscope
from learnscope import report
from learnscope.report import run_labels
from learnscope.runs.committee.kinds import OnlineConfig, run_online
from learnscope.store import load_runs
from tests.conftest import cli

PNG = b"\x89PNG\r\n\x1a\n"


def committee_runs(store):
    """A simulation and its ODE (i.i.d. inputs, tiny): same name, told apart by `method`."""
    base = {"name": "iid", "generator": "iid", "D": 20, "N": 20, "t_max": 1.0, "points": 5, "replicas": 2}
    for method in ("simulation", "ode"):
        run_online(OnlineConfig(**base, method=method, n_test=200), store)


def test_labels_name_a_run_and_what_tells_it_from_its_namesakes(tmp_path):
    committee_runs(tmp_path)
    table = load_runs(tmp_path)
    labels = run_labels(table)
    assert set(labels) == {"iid method=simulation", "iid method=ode"}
    assert (labels.groupby(table["run"]).nunique() == 1).all()  # one label per run
    assert set(run_labels(table, "method")) == {"simulation", "ode"}
    unnamed = table.assign(name="")
    assert set(run_labels(unnamed)) == {"method=simulation", "method=ode"}


def test_report_overlays_runs_in_a_self_contained_page(tmp_path, capsys):
    store = tmp_path / "runs"
    committee_runs(store)
    out = tmp_path / "report.html"
    code, printed, err = cli("report", "-s", store, "--out", out, capsys=capsys)
    assert code == 0, err
    assert "2 runs, eg against t" in printed
    page = out.read_text()
    assert "<script" not in page and "http" not in page  # nothing fetched, nothing run
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(PNG)
    assert (tmp_path / "report.png").read_bytes().startswith(PNG)
    table = load_runs(store)
    for run, group in table.groupby("run"):  # a row per run, with its last eg
        last = group["eg"].dropna().iloc[-1]
        assert run[:12] in page and f"{last:.6g}" in page
    # a PNG alone, chosen runs, another metric and x
    first = table["run"].iloc[0][:6]
    code, printed, err = cli(
        "report",
        store,
        "--run",
        first,
        "-m",
        "R_00",
        "--x",
        "step",
        "--out",
        tmp_path / "r.png",
        capsys=capsys,
    )
    assert code == 0, err
    assert "1 runs, R_00 against step" in printed and (tmp_path / "r.png").read_bytes().startswith(PNG)


def test_report_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is ./report.html
    store = tmp_path / "runs"
    committee_runs(store)
    cases = {
        "unknown metric": (["-m", "test/acc"], "test/acc"),
        "unknown x": (["--x", "epoch"], "epoch"),
        "bad suffix": (["--out", str(tmp_path / "r.pdf")], "r.pdf"),
        "unknown run": (["ffffffff"], "ffffffff"),
        "unknown label key": (["--label", "optim.lr"], "optim.lr"),
    }
    for what, (args, culprit) in cases.items():
        code, _, err = cli("report", *args, "-s", store, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and culprit in lines[0], (what, err)
    code, _, err = cli("report", "-s", tmp_path / "empty", capsys=capsys)
    assert code == 2 and "no run" in err
    assert not list(tmp_path.glob("report.*"))  # nothing written


def test_runs_ls_and_show_read_committee_runs(tmp_path, capsys):
    committee_runs(tmp_path)
    code, out, err = cli("runs", "ls", "-s", tmp_path, capsys=capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if "iid" in line]
    assert len(rows) == 2 and "simulation" in rows[0] + rows[1] and " ode " in rows[0] + rows[1]
    run = load_runs(tmp_path)["run"].iloc[0]
    code, out, err = cli("runs", "show", run[:6], "-s", tmp_path, capsys=capsys)
    assert code == 0, err
    assert f"# run {run}" in out and 'generator = "iid"' in out and "method = " in out


def tiny_mlps(store, width: int, *overrides: str) -> None:
    """Tiny digits MLP runs of one name, one per override (`seed=0`, `model.depth=12`)."""
    base = learnscope.Config.from_dict(
        {
            "name": "mlp",
            "device": "cpu",
            "model": {"kind": "mlp", "width": width},
            "train": {"steps": 20, "log_every": 10},
            "probes": {"schedule": ["every"], "every": 10},
        }
    )
    for override in overrides:
        learnscope.run(base.override(override), store, quiet=True)


def training_runs(store):
    """Two tiny digits MLP runs that differ only in their seed; their configs hold `probes.use`, a list of
    tables, which load_runs gives as a tuple of dicts."""
    tiny_mlps(store, 16, "seed=0", "seed=1")


def test_labels_name_runs_by_config_values_not_by_records_that_happen_to_be_constant(tmp_path):
    """At a constant learning rate the record `lr` is constant within each run, like a config value; the
    legend names the runs by `optim.lr` alone, not also by `lr` (load_runs says which columns are config)."""
    store = tmp_path / "runs"
    for lr in ("0.1", "0.05"):
        base = learnscope.Config.from_dict(
            {"name": "mlp", "train": {"steps": 20, "schedule": "constant"}, "probes": {"points": 3}}
        )
        learnscope.run(base.override(f"optim.lr={lr}"), store, quiet=True)
    table = load_runs(store)
    assert (table.groupby("run")["lr"].nunique() == 1).all()  # the record is constant per run
    assert "lr" not in table.attrs["config_columns"] and "optim.lr" in table.attrs["config_columns"]
    assert set(run_labels(table)) == {"mlp optim.lr=0.1", "mlp optim.lr=0.05"}


def test_labels_and_report_of_training_runs_with_unhashable_config_values(tmp_path, capsys):
    store = tmp_path / "runs"
    training_runs(store)
    table = load_runs(store)
    assert isinstance(table["probes.use"].iloc[0], tuple)  # what pandas cannot hash
    labels = run_labels(table)
    assert set(labels) == {"mlp seed=0", "mlp seed=1"}
    assert (labels.groupby(table["run"]).nunique() == 1).all()
    out = tmp_path / "r.html"
    code, printed, err = cli("report", "--store", store, "--out", out, capsys=capsys)
    assert code == 0, err
    assert "2 runs, test/acc against step" in printed
    page = out.read_text()
    assert "mlp seed=0" in page and "mlp seed=1" in page


def mixed_store(store):
    """Committee runs (a simulation and its ODE: records against t) beside two tiny training runs (against
    step) of one name that differ in depth, 1 and 12: the committee runs have no `model.depth`, so the
    column is float (12.0) there."""
    committee_runs(store)
    tiny_mlps(store, 8, "model.depth=1", "model.depth=12")


def drawn_figures(monkeypatch) -> list:
    """The figures that `learnscope report` saves, kept (save_figure still writes them)."""
    figures = []
    save = report.save_figure

    def kept(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(report, "save_figure", kept)
    return figures


def test_report_of_a_mixed_store_draws_each_run_against_its_own_clock(tmp_path, capsys, monkeypatch):
    store = tmp_path / "runs"
    mixed_store(store)
    table = load_runs(store)
    assert table["model.depth"].dtype == float  # 12.0: what labels printed before
    figures = drawn_figures(monkeypatch)
    out = tmp_path / "r.png"
    code, printed, err = cli("report", store, "-m", "test/acc", "--out", out, capsys=capsys)
    assert code == 0, err
    assert "4 runs, test/acc against step" in printed and "2 of them without test/acc: not drawn" in printed
    (figure,) = figures
    (ax,) = figure.axes
    assert ax.get_xlabel().startswith("step")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"mlp model.depth=1", "mlp model.depth=12"}  # the committee runs: not drawn
    for line in lines.values():  # the training runs' steps 0, 10, 20 (0 drawn at 5) and their accuracy
        assert list(line.get_xdata()) == [5.0, 10.0, 20.0] and all(0 <= y <= 1 for y in line.get_ydata())
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1  # beside
    # by default, each kind's metric against its clock: eg against t, test/acc against step
    code, printed, err = cli("report", store, "--out", out, capsys=capsys)
    assert code == 0, err
    assert "4 runs, eg, test/acc against t and step" in printed and "not drawn" not in printed
    eg, acc = figures[-1].axes
    assert (eg.get_ylabel(), acc.get_ylabel()) == ("eg", "test/acc")
    assert eg.get_xlabel().startswith("t ") and acc.get_xlabel().startswith("step ")
    assert {line.get_label() for line in eg.get_lines()} == {"iid method=simulation", "iid method=ode"}
    t = sorted(table.loc[table["method"] == "ode", "t"].unique())
    for line in eg.get_lines():
        assert len(line.get_xdata()) == len(t) and list(line.get_xdata())[1:] == t[1:]  # t = 0 at half t_1
    assert len(acc.get_lines()) == 2
    # `--label` of a config key: integer-valued floats as integers
    code, printed, err = cli("report", store, "-m", "test/acc", "--label", "model.depth", "--out", out,
                             capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert {line.get_label() for line in figures[-1].axes[0].get_lines()} == {"1", "12"}


def test_report_with_nothing_to_draw_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    store = tmp_path / "runs"
    mixed_store(store)
    figures = drawn_figures(monkeypatch)
    cases = {
        "a metric no run records": (["-m", "test/nope"], "test/nope"),
        "a metric against an x its runs lack": (["-m", "test/acc", "--x", "t"], "nothing to draw"),
        "an x no run records": (["--x", "epoch_nope"], "epoch_nope"),
    }
    for what, (args, culprit) in cases.items():
        code, _, err = cli("report", store, *args, "--out", tmp_path / "r.png", capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and culprit in lines[0], (what, err)
    assert not figures and not (tmp_path / "r.png").exists()  # no empty axes drawn
    with pytest.raises(learnscope.errors.DataError, match="nothing to draw"):
        report.curves_figure(load_runs(store), ["test/nope"])


def test_twelve_runs_get_twelve_distinct_colour_and_style_pairs():
    table = pd.DataFrame(
        {"run": [f"r{i:02d}" for i in range(12) for _ in range(3)], "step": [0, 10, 100] * 12}
    )
    table["test/acc"] = np.arange(36) / 36
    figure = report.curves_figure(table, ["test/acc"], label="run")
    lines = figure.axes[0].get_lines()
    assert len(lines) == 12
    pairs = {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in lines}
    assert len(pairs) == 12
    assert {line.get_color() for line in lines} <= set(report.PALETTE)  # the project's palette, no other
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == [f"r{i:02d}" for i in range(12)]


def test_labels_print_integer_valued_config_values_as_integers():
    table = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "name": ["mlp", "mlp", "ode"],
            "model.depth": [12.0, 4.0, np.nan],
            "optim.lr": [0.05, 0.05, np.nan],
        }
    )
    assert list(run_labels(table)) == ["mlp model.depth=12", "mlp model.depth=4", "ode"]
    assert list(run_labels(table, "model.depth"))[:2] == ["12", "4"]
    assert list(run_labels(table, "optim.lr"))[:2] == ["0.05", "0.05"]


# -- the study report ----------------------------------------------------------------------------------------

# Every study at its demo scale, cut to seconds: the overrides apply to every run of the study.
SMALL_STUDIES = {
    "increasing_complexity": ("train.steps=40", "probes.points=6"),
    "gaussian_equivalence": ("D=20", "N=50", "L=2", "t_max=1.0", "points=4", "replicas=2", "n_test=500",
                             "moments=analytic"),
    "double_descent": (),  # theory runs (fast) and gradient descent, cut by GD_STEPS below
    "sphere_regimes": ("train.epochs=4",),
    "neural_collapse": ("train.epochs=2", "probes.points=5"),
}  # fmt: skip


def test_study_report_shows_every_study_with_its_figures_headlines_and_failures(
    tmp_path, capsys, monkeypatch
):
    from learnscope.studies import double_descent, run_study

    monkeypatch.setattr(double_descent, "GD_STEPS", 300)
    store = tmp_path / "runs"
    results = {
        name: run_study(name, "demo", overrides, store=store, out=tmp_path / name, quiet=True)
        for name, overrides in SMALL_STUDIES.items()
    }
    # a study whose runs fail is recorded with its error; the others stay
    broken = ("data=npz", f"data.path={tmp_path / 'missing.npz'}")
    with pytest.raises(learnscope.errors.LearnscopeError):
        run_study("neural_collapse", "demo", broken, store=store, out=tmp_path / "broken", quiet=True)

    page_path = tmp_path / "report.html"
    code, printed, err = cli("report", store, "--out", page_path, capsys=capsys)
    assert code == 0, err
    assert "6 studies" in printed
    page = page_path.read_text()
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)  # opens offline
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    expected = sum(len(r.record["figures"]) for r in results.values())
    assert expected >= 10 and len(images) == expected
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    for name, result in results.items():
        record = result.record
        assert f'id="{name}-demo"' in page and record["state"] == "done"
        assert record["headlines"], name  # every study computes headline numbers
        for headline in record["headlines"]:
            assert html.escape(headline["name"]) in page
            value = headline["value"]
            shown = f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
            assert shown in page, (name, headline)
        assert html.escape(record["command"]) in page and record["machine"]["cpus"] >= 1
    assert "failed" in page and "missing.npz" in page  # the broken study: its state and its run's error

    # `learnscope study ... --report` writes the page of that study alone
    code, printed, err = cli(
        "study", "sphere_regimes", "train.epochs=4", "--scale", "demo", "--store", store,
        "--out", tmp_path / "sr", "--report", "--quiet", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    single = (tmp_path / "sr" / "report.html").read_text()
    assert 'id="sphere_regimes-demo"' in single and 'id="neural_collapse-demo"' not in single


def test_study_report_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "runs" / "studies").mkdir(parents=True)
    code, _, err = cli("report", tmp_path / "runs", "--out", tmp_path / "r.html", capsys=capsys)
    assert code == 2 and "no runs in" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "runs" / "studies" / "x-demo.json").write_text("{not json")
    code, _, err = cli("report", tmp_path / "runs", "--out", tmp_path / "r.html", capsys=capsys)
    assert code == 2 and "x-demo.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
