"""`learnscope report`: runs of a store overlaid (replicas as mean and band), as a PNG or one self-contained
HTML page; labels that tell runs apart; bad input exiting 2 with one line."""

from __future__ import annotations

import base64
import html
import re

import pytest

import learnscope
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


def training_runs(store):
    """Two tiny digits MLP runs that differ only in their seed; their configs hold `probes.use`, a list of
    tables, which load_runs gives as a tuple of dicts."""
    base = learnscope.Config.from_dict(
        {
            "name": "mlp",
            "device": "cpu",
            "model": {"kind": "mlp", "width": 16},
            "train": {"steps": 20, "log_every": 10},
            "probes": {"schedule": ["every"], "every": 10},
        }
    )
    for seed in (0, 1):
        learnscope.run(base.override(f"seed={seed}"), store, quiet=True)


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
