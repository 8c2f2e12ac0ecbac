"""The readers of a run store (load_runs, `runs ls`, `runs show`, `runs collect`, `report`): they check what
they read (types, not only JSON syntax) and never crash; a run or study record that breaks the rules is
`corrupt` with its reason and the rest of the store reads; files are streamed and bounded; a last record
without its newline is kept; the fast table is the one the per-run reader built, cell for cell."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import learnscope
from learnscope import store as store_module
from learnscope.runs.committee.kinds import OnlineConfig, run_online
from learnscope.runs.dd_theory import DoubleDescentTheoryConfig, run_dd_theory
from learnscope.store import COLUMNAR, collect_runs, encode_record, load_runs, records_digest, shown_state
from tests.conftest import cli, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


# -- stores -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished run of the tiny training config (seven records), which the other runs copy."""
    root = tmp_path_factory.mktemp("trained")
    return learnscope.run(tiny(), root, quiet=True).path


def copy_run(source: Path, store: Path, name: str, config=None, records=None, status=None) -> Path:
    """A copy of `source` as run `name` of `store` (its config.json's hash made `name`), with `config`
    (a function of the config), `records` (a function of the records) and `status` (a body) changed."""
    path = store / name
    shutil.copytree(source, path)
    (path / "checkpoint.pt").unlink(missing_ok=True)
    body = json.loads((path / "config.json").read_text())
    body["hash"] = name
    if config is not None:
        body["config"] = config(body["config"])
    (path / "config.json").write_text(json.dumps(body, indent=2, sort_keys=True))
    if records is not None:  # the status then says how many records it has, as the writer's would
        lines = (path / "metrics.jsonl").read_text().splitlines()
        new = records([json.loads(line) for line in lines])
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new))
        final = json.loads((path / "status.json").read_text())
        final.update(records=len(new), records_sha256="")
        (path / "status.json").write_text(json.dumps(final))
    if status is not None:
        (path / "status.json").write_text(json.dumps(status))
    return path


def changed(key: str, value):
    """A config change: the dotted `key` set to `value`."""

    def change(config: dict) -> dict:
        *sections, last = key.split(".")
        body = config
        for section in sections:
            body = body[section]
        body[last] = value
        return config

    return change


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, trained) -> Path:
    """A store of every kind of run and value: two training runs, a committee simulation and its ODE, a
    theory curve (records without `step`), and copies of the training run with non-finite values, a
    diverged status, text, list and null values, ints among floats, a key that appears late, another
    learning rate given as an int, and a name of its own."""
    store = tmp_path_factory.mktemp("mixed") / "runs"
    store.mkdir()
    learnscope.run(tiny().override("seed=1"), store, quiet=True)
    base = {"name": "iid", "generator": "iid", "D": 20, "N": 20, "t_max": 1.0, "points": 5, "replicas": 2}
    for method in ("simulation", "ode"):
        run_online(OnlineConfig(**base, method=method, n_test=200), store)
    run_dd_theory(DoubleDescentTheoryConfig(points=20), store)

    def diverged(records):
        records[-1]["train/loss"] = "NaN"
        records[-2]["train/loss"] = "Infinity"
        records[-2]["test/loss"] = "-Infinity"
        return records

    def varied(records):
        for i, r in enumerate(records):
            r["test/pred"] = f"u1:{'AB' * i}"
            r["widths"] = [i, i + 1]
            r["count"] = i if i % 2 else float(i)
        records[3]["test/acc"] = None
        records[-1]["late"] = 1
        return records

    copy_run(trained, store, "a000000000000001", changed("seed", 5), diverged, {"state": "diverged"})
    copy_run(trained, store, "a000000000000002", changed("optim.lr", 1), varied)
    copy_run(trained, store, "a000000000000003", changed("name", "other"))
    return store


def reference_load_runs(root: Path, runs: list[str] | None = None) -> pd.DataFrame:
    """`load_runs` as learnscope built it before the column-wise reader (a frame per run, its config through
    pandas.json_normalize, one concat): the table the column-wise reader must give, cell for cell and type
    for type, on a store of valid runs with records."""
    frames = []
    paths = sorted(p.parent for p in root.glob("*/config.json"))
    for path in paths if runs is None else [root / name for name in sorted(runs)]:
        body = json.loads((path / "config.json").read_text())
        status = json.loads((path / "status.json").read_text())
        lines = (path / "metrics.jsonl").read_text().splitlines()
        non_finite = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        records = [
            {k: non_finite.get(v, v) if isinstance(v, str) else v for k, v in json.loads(line).items()}
            for line in lines
        ]
        meta = pd.json_normalize(body["config"], sep=".").iloc[0].to_dict()
        meta = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta.items()}
        frame = pd.DataFrame(records)
        columns = {"run": body["hash"], "status": shown_state(status), **meta}
        constants = pd.DataFrame({k: [v] * len(frame) for k, v in columns.items()}, index=frame.index)
        frames.append(pd.concat([frame.drop(columns=[c for c in columns if c in frame]), constants], axis=1))
    return pd.concat(frames, ignore_index=True)


# -- the table is the one the per-run reader built ----------------------------------------------------------


def test_load_runs_gives_the_per_run_readers_table_cell_for_cell(mixed):
    table = load_runs(mixed)
    expected = reference_load_runs(mixed)
    assert list(table.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    # the kinds and values this store was made to hold
    assert {"t", "eg", "R", "Q", "method", "form", "test/pred", "widths"} <= set(table.columns)
    assert table["step"].dtype == "float64"  # the theory curve has no step
    assert table["train/loss"].isna().any() and (table["test/loss"] == -math.inf).any()
    training = table[table["run"] == "a000000000000003"]
    assert isinstance(training["probes.use"].iloc[0], tuple) and table["optim.lr"].dtype == "float64"
    chosen = sorted(table["run"].unique())[1:4]
    pd.testing.assert_frame_equal(load_runs(mixed, chosen), reference_load_runs(mixed, chosen))


def test_a_run_without_records_adds_its_columns_and_changes_no_other_column(tmp_path, trained):
    store = tmp_path / "runs"
    copy_run(trained, store, "b000000000000001")
    without = load_runs(store)
    copy_run(trained, store, "b000000000000002", changed("extra", "x"), lambda records: [])
    table = load_runs(store)
    assert len(table) == len(without) and table["extra"].isna().all()
    pd.testing.assert_frame_equal(table.drop(columns="extra"), without)


# -- the columnar copies of final runs -----------------------------------------------------------------------


def final_run(trained: Path, store: Path, name: str, records: list[dict], state: str = "done", config=None):
    """Run `name` of `store` finished with `records`, its files as `RunDir.finish` leaves them (status.json
    with their count and sha256) but without its columnar copy: the first reader makes it."""
    path = copy_run(trained, store, name, config)
    (path / COLUMNAR).unlink(missing_ok=True)
    (path / "metrics.jsonl").write_text("".join(map(encode_record, records)))
    status = json.loads((path / "status.json").read_text())
    status.update(state=state, records=len(records), records_sha256=records_digest(records))
    (path / "status.json").write_text(json.dumps(status))
    return path


def varied_store(root: Path, trained: Path) -> dict[str, Path]:
    """Runs of every kind and state, with records of every kind of value: missing keys, text with None and
    missing cells, ints among floats, bools (ints in another run), NaN and infinities, lists, an int too big
    for int64 beside text, a key that appears late, a column all NaN; a theory curve (no `step`), a diverged
    run, a run without records, a running one (JSON only), a corrupt one."""
    store = root / "runs"
    store.mkdir(parents=True)
    base = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    varied = []
    for i, record in enumerate(base):
        record |= {"test/pred": f"u1:{'AB' * i}", "widths": [i, i + 1], "count": i if i % 2 else float(i)}
        record |= {"flag": i % 2 == 0, "big": 2**70 if i == 1 else "x", "void": math.nan}
        varied.append(record)
    varied[2]["test/pred"] = None
    del varied[4]["test/pred"]
    varied[3]["test/acc"] = None
    varied[-1]["late"] = 1
    varied[-1]["train/loss"] = math.nan
    varied[-2]["train/loss"], varied[-2]["test/loss"] = math.inf, -math.inf
    others = [{**r, "flag": 3, "count": "many", "widths": None} for r in base]
    runs = {
        "varied": final_run(trained, store, "a000000000000001", varied),
        "others": final_run(trained, store, "a000000000000002", others, config=changed("optim.lr", 1)),
        "diverged": final_run(trained, store, "a000000000000003", varied[:5], "diverged", changed("seed", 5)),
        "empty": final_run(trained, store, "a000000000000004", [], config=changed("extra", "x")),
        "trained": copy_run(trained, store, "a000000000000005", changed("name", "other")),  # its own copy
        "running": copy_run(trained, store, "a000000000000006", status={"state": "running", "pid": -1}),
        "corrupt": copy_run(trained, store, "a000000000000007", None, lambda r: [{**r[0], "step": "five"}]),
    }
    runs["theory"] = run_dd_theory(DoubleDescentTheoryConfig(points=20), store).path
    return runs


def test_the_columnar_copies_give_the_table_the_json_gives_cell_for_cell(tmp_path, trained, monkeypatch):
    runs = varied_store(tmp_path, trained)
    store = tmp_path / "runs"
    assert (runs["theory"] / COLUMNAR).is_file()  # written when the run finished
    for path in store.glob(f"*/{COLUMNAR}"):
        path.unlink()
    from_json = load_runs(store)  # every run parsed from its JSON; the final ones get their copy
    copied = {p.parent for p in store.glob(f"*/{COLUMNAR}")}
    assert copied == {runs[k] for k in ("varied", "others", "diverged", "trained", "theory")}
    for name in ("running", "corrupt"):  # a copy of the same records, in a run that is not final: unused
        shutil.copy(runs["trained"] / COLUMNAR, runs[name])
    parsed = []

    def parse(path, data=None):
        parsed.append(Path(path).parent)
        return parse_records(path, data)

    parse_records = store_module._parse_records
    monkeypatch.setattr(store_module, "_parse_records", parse)
    from_copies = load_runs(store)
    assert set(parsed) == {runs["empty"], runs["running"], runs["corrupt"]}
    assert list(from_copies.columns) == list(from_json.columns) and from_copies.attrs == from_json.attrs
    pd.testing.assert_frame_equal(from_copies, from_json, check_exact=True)
    # the kinds this store was made to hold
    dtypes = from_json.dtypes.astype(str).to_dict()
    assert {dtypes[k] for k in ("flag", "count", "widths", "big")} == {"object"}  # kinds of runs mixed
    assert dtypes["test/pred"] == "str" and dtypes["void"] == dtypes["step"] == "float64"
    rows = from_json[from_json["run"] == runs["varied"].name]
    assert rows["test/pred"].isna().tolist() == [False, False, True, False, True, False, False]
    assert rows["train/loss"].isna().iloc[-1] and (rows["test/loss"] == -math.inf).any()
    assert set(from_json["status"]) == {"done", "diverged", "running", "corrupt"}


def test_a_copy_stale_foreign_or_damaged_is_never_used_and_a_good_one_is_made_again(tmp_path, trained):
    store = tmp_path / "runs"
    base = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    records = [[{**r, "x": i * 1.5 + j} for j, r in enumerate(base)] for i in range(4)]
    paths = [final_run(trained, store, f"b00000000000000{i}", r) for i, r in enumerate(records)]
    load_runs(store)
    assert all((p / COLUMNAR).is_file() for p in paths)
    stale, foreign, cut, pickled = paths
    # metrics.jsonl edited since (same count: the status's digest no longer its sha256): its JSON is shown
    copy = (stale / COLUMNAR).read_bytes()
    metrics = stale / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"x": 0.0', '"x": 9.0'))
    (foreign / COLUMNAR).write_bytes((cut / COLUMNAR).read_bytes())  # another run's copy
    (cut / COLUMNAR).write_bytes((cut / COLUMNAR).read_bytes()[:-100])
    marker = tmp_path / "PWNED"
    header = json.loads(np.load(pickled / COLUMNAR)["header"].tobytes())  # its own key, and a pickle
    with open(pickled / COLUMNAR, "wb") as f:
        np.savez(f, header=np.frombuffer(json.dumps(header).encode(), np.uint8), numbers=[Payload(marker)])
    table = load_runs(store)
    pd.testing.assert_frame_equal(table, reference_load_runs(store), check_exact=True)
    assert 9.0 in set(table["x"]) and not marker.exists()
    assert (stale / COLUMNAR).read_bytes() == copy  # not remade: the file is not the run's final records
    for path in (foreign, cut, pickled):  # remade, each its own run's
        status = json.loads((path / "status.json").read_text())
        assert store_module._read_copy(path / COLUMNAR, status["records_sha256"]) is not None, path
    # any byte of a copy changed: it fails to load or to check, never gives other values
    good = (cut / COLUMNAR).read_bytes()
    for at in range(0, len(good), max(1, len(good) // 40)):
        damaged = bytearray(good)
        damaged[at] ^= 0x55
        (cut / COLUMNAR).write_bytes(bytes(damaged))
        pd.testing.assert_frame_equal(load_runs(store, [cut.name]), reference_load_runs(store, [cut.name]))


class Payload:
    """A pickle that would touch `marker` if it were ever loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_store_that_cannot_be_written_is_read_from_its_json(tmp_path, trained, monkeypatch):
    store = tmp_path / "runs"
    base = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    final_run(trained, store, "c000000000000001", base)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    pd.testing.assert_frame_equal(load_runs(store), reference_load_runs(store), check_exact=True)
    assert sorted(p.name for p in (store / "c000000000000001").iterdir()) == [
        "config.json", "metrics.jsonl", "status.json"
    ]  # fmt: skip


def test_runs_collect_to_parquet_reads_back_as_the_pandas_table_would_have_written_it(tmp_path, trained):
    """The file is written from Arrow arrays, not from the pandas table: pandas reads it back as the file that
    table wrote (values, types, column order, attrs), and pyarrow too, text being `string`."""
    import pyarrow.parquet as pq

    varied_store(tmp_path, trained)
    store = tmp_path / "runs"
    table = load_runs(store)
    for column in [c for c in table.columns if table[c].dtype == object]:  # what collect_runs did before
        values = table[column].dropna()
        if not all(isinstance(v, str) for v in values) and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            shown = [v if v is None or v != v or isinstance(v, str) else json.dumps(v) for v in table[column]]
            table[column] = pd.Series(shown, index=table.index, dtype=object)
    table.to_parquet(tmp_path / "pandas.parquet", index=False)
    written = collect_runs(store, tmp_path / "arrow.parquet")
    assert len(written) == len(table) and list(written.columns) == list(table.columns)
    assert written["run"].nunique() == table["run"].nunique()
    ours, theirs = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("arrow", "pandas"))
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.attrs == theirs.attrs == table.attrs and ours.attrs["config_columns"]
    ours, theirs = (pq.read_table(tmp_path / f"{name}.parquet") for name in ("arrow", "pandas"))
    assert ours.equals(theirs.cast(ours.schema))


# -- a bad run is corrupt, with its reason, and the rest of the store reads ----------------------------------

BAD_RUNS = {
    "a section that is not an object": (changed("data", "digits"), None, None, "config.data"),
    "a name that is not text": (changed("name", 7), None, None, "config.name"),
    "a state that is not text": (None, None, {"state": 5}, "state 5"),
    "an unknown state": (None, None, {"state": "finished"}, "'finished'"),
    "a step that is not an integer": (None, lambda r: [*r[:-1], {**r[-1], "step": "five"}], None, "five"),
    "a step that is a bool": (None, lambda r: [{**r[0], "step": True}, *r[1:]], None, "step True"),
    "a record value that is an object": (None, lambda r: [*r, {"step": 99, "x": {"a": 1}}], None, "'x'"),
    "a record that is a list": (None, lambda r: [*r, [1, 2]], None, "not a JSON object"),
}


@pytest.mark.parametrize("what", list(BAD_RUNS))
def test_a_run_that_breaks_the_rules_is_corrupt_and_every_reader_goes_on(tmp_path, trained, capsys, what):
    config, records, status, reason = BAD_RUNS[what]
    store = tmp_path / "runs"
    good = copy_run(trained, store, "c000000000000001")
    bad = copy_run(trained, store, "c000000000000002", config, records, status)
    assert_corrupt(store, good, bad, reason, capsys)


def assert_corrupt(store: Path, good: Path, bad: Path, reason: str, capsys) -> None:
    """Every reader reads `store` (the commands first: they are what crashed): `bad` is corrupt with
    `reason` on one line, `good` is read as ever."""
    reports = []
    for args in (["--out", store.parent / "r.html"], ["-m", "test/acc", "--out", store.parent / "r.png"]):
        code, out, err = cli("report", store, *args, capsys=capsys)
        assert code == 0, err
        reports.append(out)
    code, listed, err = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0, err
    code, _, err = cli("runs", "collect", "--store", store, "--out", store.parent / "t.csv", capsys=capsys)
    assert code == 0, err
    assert all("1 of them corrupt" in out for out in reports), reports
    row = next(line for line in listed.splitlines() if bad.name in line)
    assert "corrupt" in row and good.name in listed
    code, _, err = cli("runs", "show", bad.name, "--store", store, capsys=capsys)
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err
    assert cli("runs", "show", good.name, "--store", store, capsys=capsys)[0] == 0
    table = load_runs(store)
    states = table.groupby("run")["status"].first()
    assert states[good.name] == "done" and states[bad.name] == "corrupt", states
    error = table.loc[table["run"] == bad.name, "error"].iloc[0]
    assert reason in error and "\n" not in error, error


def test_a_hash_that_is_not_its_directory_is_corrupt_and_the_report_is_written(tmp_path, trained, capsys):
    store = tmp_path / "runs"
    good = copy_run(trained, store, "d000000000000001")
    bad = copy_run(trained, store, "d000000000000002")
    body = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**body, "hash": 12345}))
    assert_corrupt(store, good, bad, "'hash' is 12345", capsys)
    (bad / "config.json").write_text(json.dumps({**body, "hash": good.name}))
    assert_corrupt(store, good, bad, "not the name of its run directory", capsys)


def test_files_not_regular_or_too_long_are_refused_unread(tmp_path, trained, capsys, monkeypatch):
    """A metrics.jsonl linked to /dev/zero was read whole (MemoryError); now nothing is read of a device, a
    pipe or a directory, and a line longer than the limit stops the reading."""
    store = tmp_path / "runs"
    good = copy_run(trained, store, "e000000000000001")
    for i, name in enumerate(("metrics.jsonl", "config.json", "status.json"), start=2):
        bad = copy_run(trained, store, f"e00000000000000{i}")
        (bad / name).unlink()
        (bad / name).symlink_to("/dev/zero")
    fifo = copy_run(trained, store, "e000000000000005")
    (fifo / "metrics.jsonl").unlink()
    os.mkfifo(fifo / "metrics.jsonl")
    table = load_runs(store)
    errors = table.groupby("run")["error"].first().dropna()
    assert len(errors) == 4 and all("is not a regular file" in e for e in errors), errors
    assert cli("runs", "ls", "--store", store, capsys=capsys)[0] == 0
    # a regular file with an absurdly long line (a limit of 1 kB here, not 64 MiB)
    from learnscope import store as store_module

    shutil.rmtree(store)
    good = copy_run(trained, store, "e000000000000001")
    long = copy_run(trained, store, "e000000000000002")
    monkeypatch.setattr(store_module, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(store_module, "_CHUNK_BYTES", 300)  # the line spans chunks
    with (long / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "x": "' + "y" * 5000 + '"}\n')
    assert_corrupt(store, good, long, "longer than", capsys)
    monkeypatch.setattr(store_module, "MAX_JSON_BYTES", 100)
    with pytest.raises(store_module.StoreError, match="larger than"):
        store_module.read_json(good / "config.json")


def test_text_is_shown_as_text_in_the_runs_table(tmp_path, trained, capsys):
    store = tmp_path / "runs"
    copy_run(trained, store, "f000000000000001", changed("name", "[bold red]loud[/]"))
    code, out, err = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0 and "[bold red]loud[/]" in out, (out, err)


def test_runs_show_prints_a_config_that_toml_cannot_hold(tmp_path, trained, capsys):
    store = tmp_path / "runs"
    copy_run(trained, store, "f000000000000002", changed("model.sizes", [1, None]))
    code, out, err = cli("runs", "show", "f000000000000002", "--store", store, capsys=capsys)
    assert code == 0 and '"sizes": [' in out, err


def test_a_run_given_as_the_current_directory_reads(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    table = load_runs(".")
    assert set(table["status"]) == {"done"} and set(table["run"]) == {trained.name}


# -- records ------------------------------------------------------------------------------------------------


def test_a_last_record_without_its_newline_is_kept_and_a_torn_one_ignored(tmp_path, trained, capsys):
    """An editor that strips the final newline used to make every reader drop the last record."""
    from learnscope.store import read_records

    store = tmp_path / "runs"
    run = copy_run(trained, store, "f000000000000003")
    metrics = run / "metrics.jsonl"
    whole = read_records(metrics)
    metrics.write_text(metrics.read_text().rstrip("\n"))
    assert read_records(metrics) == whole
    assert load_runs(store)["step"].tolist() == [r["step"] for r in whole]
    code, out, _ = cli("runs", "ls", "--store", store, capsys=capsys)
    assert code == 0 and f" {whole[-1]['step']} " in out
    metrics.write_text(metrics.read_text() + '\n{"step": 70, "train/lo')  # a writer killed mid-line
    assert read_records(metrics) == whole
    metrics.write_text(metrics.read_text() + "ss\n{}")  # not the last line any more: corrupt
    assert load_runs(store)["status"].tolist() == ["corrupt"]


def test_records_are_read_as_strictly_as_json_loads_of_each_line(tmp_path):
    """The fast scan is as strict as json.loads of each line: a value must end at its line's end."""
    from learnscope.errors import StoreError
    from learnscope.store import read_records

    path = tmp_path / "metrics.jsonl"
    cases = {
        '{"step": 0}\n\n  {"step": 1, "x": NaN}  \n{"step": 2, "y": "-Infinity"}\n': [0, 1, 2],
        '{"step": 0}\n{"step":\n 1}\n': "line 2 is not valid JSON",
        '{"step": 0}{"step": 1}\n': "line 1 is not valid JSON",
        '{"step": 0}\n5\n': "line 2 is not a JSON object",
        '{"step": 0}\n' + "[" * 100_000 + "\n": "line 2 is not valid JSON",
        '{"t": 0.5}\n{"t": 1.0, "step": 3}\n': [None, 3],
    }
    for text, expected in cases.items():
        path.write_text(text)
        if isinstance(expected, str):
            with pytest.raises(StoreError, match=expected):
                read_records(path)
        else:
            assert [r.get("step") for r in read_records(path)] == expected
    path.write_bytes(b'{"step": 0}\n{"step": 1, "s": "\xff"}\n')
    with pytest.raises(StoreError, match="line 2 is not valid JSON"):
        read_records(path)


# -- study records ------------------------------------------------------------------------------------------


def study_record(name: str, out: Path) -> dict:
    return {
        "study": name,
        "scale": "demo",
        "state": "done",
        "paper": "A paper",
        "command": f"learnscope study {name}",
        "out": str(out),
        "machine": {"cpus": 2},
        "headlines": [{"name": "a number", "value": 1.5, "paper": 2.0}],
        "figures": [],
        "problems": [],
    }


@pytest.mark.parametrize(
    "bad",
    [[1, 2], {"study": 5}, {"study": "x", "machine": []}, {"study": "x", "headlines": 5},
     {"study": "x", "headlines": [3]}, {"study": "x", "figures": ["../../secret.png"]}, "/dev/zero"],
)  # fmt: skip
def test_a_study_record_of_the_wrong_shape_is_corrupt_and_the_others_are_shown(tmp_path, capsys, bad):
    studies = tmp_path / "runs" / "studies"
    studies.mkdir(parents=True)
    (studies / "good-demo.json").write_text(json.dumps(study_record("good", tmp_path)))
    if bad == "/dev/zero":  # was read whole: MemoryError
        (studies / "x-demo.json").symlink_to(bad)
    else:
        (studies / "x-demo.json").write_text(json.dumps(bad))
    out = tmp_path / "r.html"
    code, printed, err = cli("report", tmp_path / "runs", "--out", out, capsys=capsys)
    assert code == 0, err
    assert "2 studies" in printed and "x-demo (corrupt)" in printed
    page = out.read_text()
    assert 'id="good-demo"' in page and "a number" in page
    assert "corrupt: study record" in page and "x-demo.json" in page


# -- the report ---------------------------------------------------------------------------------------------


def test_the_legend_names_a_few_lines_and_counts_the_others(tmp_path):
    from learnscope import report

    table = pd.DataFrame(
        {"run": [f"r{i:03d}" for i in range(100) for _ in range(3)], "step": [0, 10, 100] * 100}
    )
    table["test/acc"] = range(300)
    with warnings.catch_warnings(record=True) as caught:  # "Tight layout not applied" under 100 names
        warnings.simplefilter("always")
        path = report.plot_curves(table, ["test/acc"], tmp_path / "c.png", label="run", title="t")
    assert not [w for w in caught if "layout" in str(w.message)]
    assert path.read_bytes().startswith(b"\x89PNG")
    figure = report.curves_figure(table, ["test/acc"], label="run")
    names = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert len(names) == report.LEGEND_ENTRIES and names[0] == "r000" and names[-1] == "+89 more"


def test_an_html_report_says_that_it_also_wrote_its_figure(tmp_path, trained, capsys):
    store = tmp_path / "runs"
    copy_run(trained, store, "f000000000000004")
    code, out, err = cli("report", store, "--out", tmp_path / "r.html", capsys=capsys)
    assert code == 0 and f"its figure also in {tmp_path / 'r.png'}" in out, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.png", "runs"]
