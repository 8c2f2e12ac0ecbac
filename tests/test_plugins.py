"""Extension points end to end through the command line: a plugin, one file, registers a new executor or a new
run kind, and `--plugin` makes it available to `run`, `sweep`, `study` and the readers. What each plugin
writes is only its own part (an order of runs; a computation): the lock, the files, the states, resuming and
reading back come from the library (lifecycle.py, executors/)."""

import json
import sys
import textwrap

import pytest

from learnscope.store import RunDir, read_records
from tests.conftest import cli

REVERSE_EXECUTOR = """
    from pydantic import BaseModel, ConfigDict

    from learnscope.executors import run_one, settled
    from learnscope.registry import EXECUTORS

    ORDER = []  # the seeds in the order this executor ran them


    class ReverseOptions(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")


    @EXECUTORS.register("reverse", ReverseOptions)
    def run_reversed(configs, store, execution):
        results, pending = settled(configs, store, execution.retry_failed)
        for i in reversed(pending):
            ORDER.append(getattr(configs[i], "seed", None))
            results[i] = run_one(configs[i], store)
        return results
"""

GEOMETRIC_KIND = """
    from typing import Literal

    from pydantic import PositiveInt

    from learnscope.config import RunKindConfig
    from learnscope.runs.lifecycle import computed_run
    from learnscope.registry import RUN_KINDS


    class GeometricConfig(RunKindConfig):
        kind: Literal["geometric"] = "geometric"
        name: str = ""
        ratio: float = 0.5
        steps: PositiveInt = 4


    @RUN_KINDS.register("geometric", GeometricConfig)
    def run_geometric(cfg, store="runs", quiet=True):
        records = ({"step": s, "value": cfg.ratio**s} for s in range(cfg.steps))
        return computed_run(store, cfg, lambda: records)
"""

CONFIG = 'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 16\n[train]\nsteps = 10\n[probes]\npoints = 3\n'


def _plugin(tmp_path, monkeypatch, name: str, source: str):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # (imported once per process, as a plugin is)


def test_an_executor_plugin_runs_a_sweep_and_a_study(tmp_path, monkeypatch, capsys):
    _plugin(tmp_path, monkeypatch, "reverse_executor", REVERSE_EXECUTOR)
    (tmp_path / "c.toml").write_text(CONFIG)
    store = tmp_path / "runs"
    sweep = ("sweep", "c.toml", "--grid", "seed=0,1,2", "-s", store, "-q", "--executor", "reverse")
    code, out, err = cli(*sweep, "--plugin", "reverse_executor", capsys=capsys)
    assert code == 0, err
    assert sys.modules["reverse_executor"].ORDER == [2, 1, 0]
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["done:"] * 3 and lines[0].endswith("seed=0")
    code, out, err = cli(*sweep, "--plugin", "reverse_executor", capsys=capsys)  # all done: nothing runs
    assert code == 0 and sys.modules["reverse_executor"].ORDER == [2, 1, 0]
    code, _, err = cli(*sweep, "--plugin", "reverse_executor", "--workers", "2", capsys=capsys)
    assert code == 2 and err.strip() == (
        "error: --workers is an option of the local executor (--executor local), not of reverse"
    )

    micro = ("D=20", "N=50", "L=2", "t_max=2.0", "points=6", "replicas=2", "n_test=2000", "moments=analytic")
    study = ("study", "gaussian_equivalence", "--scale", "tiny", *micro, "-s", store, "--out", tmp_path / "o")
    code, out, err = cli(*study, "--executor", "reverse", "--plugin", "reverse_executor", "-q", capsys=capsys)
    assert code == 0, err
    assert len(sys.modules["reverse_executor"].ORDER) == 3 + 3  # the study's three runs went through it
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["study"] == "gaussian_equivalence"


def test_an_unknown_executor_names_the_registered_ones(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(CONFIG)
    code, _, err = cli(
        "sweep", tmp_path / "c.toml", "-s", tmp_path / "runs", "--executor", "pbs", capsys=capsys
    )
    assert code == 2 and err.startswith("error: --executor: unknown 'pbs'; allowed: ensemble, local, ")
    assert "serial, slurm" in err


def test_a_run_kind_plugin_gets_the_store_resume_sweeps_and_readers(tmp_path, monkeypatch, capsys):
    _plugin(tmp_path, monkeypatch, "geometric_kind", GEOMETRIC_KIND)
    (tmp_path / "g.toml").write_text('kind = "geometric"\nname = "halves"\nratio = 0.5\n')
    store = tmp_path / "runs"
    plugin = ("--plugin", "geometric_kind")
    code, out, err = cli("run", "g.toml", "-s", store, "-q", *plugin, capsys=capsys)
    assert code == 0 and out.startswith("done: "), err
    (path,) = store.iterdir()
    assert read_records(path / "metrics.jsonl") == [{"step": s, "value": 0.5**s} for s in range(4)]
    status = json.loads((path / "status.json").read_text())
    # the lifecycle's final status, with the count of records
    assert status["state"] == "done" and status["records"] == 4

    (path / "metrics.jsonl").unlink()  # lost: a computed run is computed again, and says so
    code, out, err = cli("run", "g.toml", "-s", store, "-q", *plugin, capsys=capsys)
    assert code == 0 and "computing it again" in err
    assert len(read_records(path / "metrics.jsonl")) == 4

    code, out, err = cli(
        "sweep", "g.toml", "--grid", "ratio=0.5,0.9", "-s", store, "-q", *plugin, capsys=capsys
    )
    assert code == 0, err
    assert len(list(store.glob("*/config.json"))) == 2  # ratio=0.5 is the run above
    code, out, err = cli("runs", "ls", "-s", store, capsys=capsys)  # read without the plugin
    assert code == 0 and out.count("done") == 2, out + err

    import geometric_kind

    held = RunDir(store, geometric_kind.GeometricConfig(ratio=0.25))
    with held.lock():  # another process runs it: refused at once, nothing written
        code, _, err = cli("run", "g.toml", "ratio=0.25", "-s", store, "-q", *plugin, capsys=capsys)
    assert code == 3 and "another process" in err and not held.status_path.exists()


@pytest.mark.parametrize("bad", ["ratio=fast", "steps=0", "rate=2"])
def test_a_run_kind_plugin_config_is_validated_like_any_other(tmp_path, monkeypatch, capsys, bad):
    _plugin(tmp_path, monkeypatch, "geometric_kind", GEOMETRIC_KIND)
    (tmp_path / "g.toml").write_text('kind = "geometric"\n')
    code, _, err = cli(
        "run", "g.toml", bad, "-s", tmp_path / "runs", "--plugin", "geometric_kind", capsys=capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and bad.split("=")[0] in err
    assert not (tmp_path / "runs").exists()
