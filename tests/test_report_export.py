"""`learnscope runs export`: the original clones programme's ten-column log rebuilt from a run's records (each
column equal to the record it maps), CSV of every record, and bad input exiting 2 with one line."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from learnscope import run
from learnscope.report import DIC_COLUMNS, dic_log, dic_table, export_run, records_csv
from tests.conftest import cli, tiny

REAL = ["train/loss", "train/acc", "test/loss", "test/acc"]
REAL_SETS = ["real_train/loss", "real_train/acc", "test/loss", "test/acc"]  # a clone's real train and test


@pytest.fixture
def tiny_run(tiny_config, tmp_path):
    return run(tiny_config, tmp_path / "runs", quiet=True)


def expected_columns(records, keys):
    """The ten columns as they should be: epoch, step, then the record behind each (nan where absent)."""
    return {
        name: [r.get(key, math.nan) for r in records]
        for name, key in zip(DIC_COLUMNS, ["epoch", "step", *keys], strict=True)
    }


def test_dic_columns_are_the_records(tiny_run, tiny_config):
    records = tiny_run.records
    assert [r["step"] for r in records] == [0, 10, 20, 30, 40, 50, 60]
    table = dic_table(tiny_config.to_dict(), records)
    assert list(table.columns) == list(DIC_COLUMNS)
    # Without a clone, the "cifar" columns 6-9 repeat the training distribution's 2-5, as the original's log.
    expected = expected_columns(records, REAL + REAL)
    for name in DIC_COLUMNS:
        assert table[name].tolist() == expected[name], name
    assert table["step"].dtype == np.int64


def test_dic_log_loads_like_the_original(tiny_run, tiny_config, tmp_path, capsys):
    out = tmp_path / "logs" / "tiny.log"
    store = ["--store", tiny_run.path.parent]
    code, _, err = cli(
        "runs", "export", tiny_run.path.name, *store, "--format", "dic", "--out", out, capsys=capsys
    )
    assert code == 0, err
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) == 4 and header[3].startswith("# (0) epoch, (1) step, (2) train loss")
    assert json.loads(header[2].removeprefix("# Arguments: ")) == tiny_config.to_dict()
    assert tiny_run.path.name in header[0] and header[1] == "# Dataset: digits, clone: None, model mlp"
    data = np.loadtxt(out, delimiter=",")  # as the original's logs are read
    expected = pd.DataFrame(expected_columns(tiny_run.records, REAL + REAL)).to_numpy()
    assert data.shape == (7, 10)
    np.testing.assert_array_equal(data[:, 1], expected[:, 1])  # steps exactly
    np.testing.assert_allclose(data, expected, rtol=5e-4)  # the rest to the original's %.4g
    # the same text on standard output without --out
    code, stdout, _ = cli("runs", "export", tiny_run.path, "-f", "dic", capsys=capsys)
    assert code == 0 and stdout == text


def test_clone_run_maps_clone_and_real_sets(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNSCOPE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config.override("data.kind=clone", "data.method=diagonal", "data.n=300", "train.steps=20")
    records = run(cfg, tmp_path / "runs", quiet=True).records
    table = dic_table(cfg.to_dict(), records)
    keys = ["train/loss", "train/acc", "clone_test/loss", "clone_test/acc", *REAL_SETS]
    assert "clone_test/acc" not in records[0]  # no data.test_n: columns 4-5 have no record
    expected = expected_columns(records, keys)
    for name in DIC_COLUMNS:
        np.testing.assert_array_equal(table[name].to_numpy(), np.array(expected[name], dtype=float))
    assert table["test loss"].isna().all() and not table["cifar test loss"].isna().any()
    header = dic_log(cfg.to_dict(), records).splitlines()
    assert "nan columns: 4, 5" in header[0] and header[1] == "# Dataset: digits, clone: diagonal, model mlp"
    # with a held-out clone sample, 4-5 are its loss and accuracy
    cfg = cfg.override("data.test_n=200")
    records = run(cfg, tmp_path / "runs", quiet=True).records
    table = dic_table(cfg.to_dict(), records)
    assert table["test accuracy"].tolist() == [r["clone_test/acc"] for r in records]
    assert table["cifar accuracy"].tolist() == [r["test/acc"] for r in records]
    assert "nan columns" not in dic_log(cfg.to_dict(), records).splitlines()[0]


def test_csv_holds_every_record(tiny_run, capsys):
    code, stdout, err = cli("runs", "export", tiny_run.path, "--format", "csv", capsys=capsys)
    assert code == 0, err
    assert stdout == export_run(tiny_run.path, "csv") == records_csv(tiny_run.records)
    table = pd.read_csv(io.StringIO(stdout))
    assert list(table.columns[:2]) == ["step", "epoch"]
    assert set(table.columns) == set().union(*tiny_run.records)
    for i, record in enumerate(tiny_run.records):
        for key, value in record.items():
            assert table.loc[i, key] == value, (i, key)  # floats written in full, read back exactly
    assert table["batch_loss"].isna().tolist() == ["batch_loss" not in r for r in tiny_run.records]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{run}", "--format", "xml"], "unknown export format 'xml'; allowed: dic, csv"),
        (["{run}", "--format", "dic", "--store", "{tmp}/nowhere"], "no run store at"),
        (["ffff", "--format", "dic"], "no run in"),
        (["{run}"], "Missing option '--format'"),
    ],
)
def test_bad_input_exits_2(tiny_run, tmp_path, capsys, args, message):
    """A run named by a hash prefix in --store (default: the fixture's store)."""
    args = [a.format(tmp=tmp_path, run=tiny_run.path.name) for a in args]
    store = [] if "--store" in args else ["--store", str(tiny_run.path.parent)]
    code, stdout, err = cli("runs", "export", *args, *store, capsys=capsys)
    assert code == 2 and message in err and stdout == ""
    if message[0].islower():
        assert err.startswith("error: ") and err.count("\n") == 1


def test_runs_collect_writes_every_record_of_the_store_as_csv_and_parquet(tmp_path, capsys):
    from learnscope.store import load_runs
    from learnscope.sweep import grid, run_all

    store = tmp_path / "runs"
    base = tiny().override("train.steps=20", "train.checkpoint_every=0", "probes.every=5")
    run_all(grid(base, {"seed": [0, 1], "optim.lr": [0.1, 0.05]}), store, quiet=True)
    run_all([base.override("optim.lr=1/sharpness", "name=adaptive")], store, quiet=True)  # a text lr
    expected = load_runs(store)
    for suffix, read in ((".csv", pd.read_csv), (".parquet", pd.read_parquet)):
        out = tmp_path / f"table{suffix}"
        code, printed, err = cli("runs", "collect", "--store", store, "-o", out, capsys=capsys)
        assert code == 0, err
        table = read(out)
        assert len(table) == len(expected) and list(table.columns) == list(expected.columns)
        assert set(table["run"]) == set(expected["run"]) and set(table["status"]) == {"done"}
        assert sorted(table["seed"].unique()) == [0, 1] and "optim.lr" in table and "test/acc" in table
        assert (table.groupby("run")["step"].count() == expected.groupby("run")["step"].count()).all()
        assert f"{len(expected)} rows (5 runs)" in printed
    code, _, err = cli("runs", "collect", "--store", store, "-o", tmp_path / "t.xlsx", capsys=capsys)
    assert code == 2 and "t.xlsx" in err and len(err.strip().splitlines()) == 1
