"""The command line: each bad input exits with code 2 and one line, and leaves the store as it was."""

import gzip
import os
import pickle
from pathlib import Path

import pytest

from tests.conftest import cli

GOOD = 'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 32\n[train]\nsteps = 30\n[probes]\npoints = 5\n'


@pytest.fixture
def store(tmp_path, capsys):
    """A store holding one finished run, and a snapshot of its bytes."""
    config = tmp_path / "good.toml"
    config.write_text(GOOD)
    code, out, _ = cli("run", str(config), "--store", str(tmp_path / "runs"), "--quiet", capsys=capsys)
    assert code == 0 and out.startswith("done:")
    return tmp_path / "runs"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.toml"
    path.write_text(GOOD + extra)
    return path


def test_bad_inputs_exit_2_with_one_line_and_leave_runs_intact(tmp_path, store, capsys):
    before = snapshot(store)
    marker = tmp_path / "PWNED"
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    idx = tmp_path / "idx"
    idx.mkdir()
    header = b"\x00\x00\x08\x03" + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    (idx / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    mnist = f'[data]\nkind = "mnist"\npath = "{idx}"\ntrain_prefix = "t10k"\nsplit_at = 50\n'
    cases = {
        "unknown config key": (write_config(tmp_path, "[optim]\nmomentom = 0.9\n"), [], "momentom"),
        "wrong type": (write_config(tmp_path, ""), ["model.width=wide"], "model.width"),
        "negative learning rate": (write_config(tmp_path, ""), ["optim.lr=-1"], "optim.lr"),
        "missing data file": (
            write_config(tmp_path, f'[data]\nkind = "mnist"\npath = "{tmp_path}/nowhere"\n'),
            [],
            "nowhere",
        ),
        "truncated IDX": (write_config(tmp_path, mnist), [], "truncated"),
        "CIFAR pickle payload": (
            write_config(tmp_path, f'[data]\nkind = "cifar10"\npath = "{cifar}"\n'),
            [],
            "system",
        ),
        "missing config": (tmp_path / "absent.toml", [], "absent.toml"),
        "unknown override form": (write_config(tmp_path, ""), ["optim.lr"], "key=value"),
    }
    for what, (config, overrides, culprit) in cases.items():
        code, _, err = cli("run", str(config), *overrides, "--store", str(store), "--quiet", capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2, (what, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], (what, err)
        assert snapshot(store) == before, what
    assert not marker.exists(), "the pickle payload ran"


def test_foreign_checkpoint_exits_2(tmp_path, store, capsys):
    config = write_config(tmp_path, "")
    (done,) = [p for p in store.iterdir() if p.is_dir()]
    code, _, _ = cli(
        "run", str(config), "seed=7", "--store", str(store), "--quiet", "--plugin", "json", capsys=capsys
    )
    assert code == 0
    other = next(p for p in store.iterdir() if p.is_dir() and p != done)
    (other / "status.json").unlink()  # make it look unfinished, then give it the wrong checkpoint
    (other / "checkpoint.pt").write_bytes((done / "checkpoint.pt").read_bytes())
    before = snapshot(store)
    code, _, err = cli("run", str(config), "seed=7", "--store", str(store), "--quiet", capsys=capsys)
    assert code == 2 and "belongs to run" in err and len(err.strip().splitlines()) == 1
    assert snapshot(store) == before


def test_runs_ls_and_show(store, capsys):
    code, out, _ = cli("runs", "ls", "-s", str(store), capsys=capsys)
    (run_dir,) = [p for p in store.iterdir() if p.is_dir()]
    assert code == 0 and run_dir.name in out and "done" in out
    code, out, _ = cli("runs", "show", run_dir.name[:6], "--store", str(store), capsys=capsys)
    assert code == 0 and "[model]" in out and "width = 32" in out and '"state": "done"' in out
    code, _, err = cli("runs", "show", "zzz", "--store", str(store), capsys=capsys)
    assert code == 2 and "matches 'zzz'" in err


def test_runs_ls_lists_in_start_order_filters_sorts_and_shows_the_keys_that_differ(tmp_path, capsys):
    store = tmp_path / "runs"
    config = write_config(tmp_path, "")
    started = {}
    for i, (seed, width) in enumerate([(2, 32), (0, 64), (1, 32)]):
        code, _, _ = cli(
            "run", config, f"seed={seed}", f"model.width={width}", "-s", store, "-q", capsys=capsys
        )
        assert code == 0
        (run_dir,) = [p for p in store.iterdir() if p.is_dir() and p.name not in started]
        started[run_dir.name] = (seed, width)
        os.utime(run_dir / "config.json", (1e9 + i, 1e9 + i))  # the start order: as run
    order = list(started)

    def listed(*args: str) -> list[str]:
        code, out, err = cli("runs", "ls", "-s", store, *args, capsys=capsys)
        assert code == 0, err
        rows = [line for line in out.splitlines() if any(name in line for name in order)]
        return [next(name for name in order if name in line) for line in rows], out

    names, out = listed()
    assert names == order  # by start time, not by hash
    header = out.splitlines()[1]
    assert "seed" in header and "model.width" in header and "optim.lr" not in header  # only what differs
    names, _ = listed("--sort", "seed")
    assert [started[n][0] for n in names] == [0, 1, 2]
    names, _ = listed("--where", "model.width=32", "--where", "status=done")
    assert names == [n for n in order if started[n][1] == 32]
    names, _ = listed("--where", "seed=1.0")
    assert [started[n][0] for n in names] == [1]  # 1.0 matches 1
    for args, message in (
        (("--where", "model.depth"), "--where expects KEY=VALUE"),
        (("--where", "bogus=1"), "no run in"),
        (("--sort", "bogus"), "--sort bogus: no run in"),
    ):
        code, _, err = cli("runs", "ls", "-s", store, *args, capsys=capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_done_run_is_not_run_again(store, tmp_path, capsys):
    before = snapshot(store)
    code, out, _ = cli("run", str(tmp_path / "good.toml"), "--store", str(store), "--quiet", capsys=capsys)
    assert code == 0 and out.startswith("done:") and snapshot(store) == before


def test_plugin_registers_a_model(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from typing import Literal\nfrom torch import nn\nfrom learnscope import MODELS\n"
        "from learnscope.config import ModelConfig\n\n"
        "class TinyConfig(ModelConfig):\n    kind: Literal['tiny'] = 'tiny'\n    hidden: int = 8\n\n"
        "@MODELS.register('tiny', TinyConfig)\n"
        "def tiny(cfg, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, cfg.hidden), nn.ReLU(),"
        " nn.Linear(cfg.hidden, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path, "")
    args = (
        "run",
        str(config),
        "model.kind=tiny",
        "model.hidden=4",
        "--store",
        str(tmp_path / "r"),
        "--quiet",
    )
    code, _, err = cli(*args, capsys=capsys)
    assert code == 2 and "model.kind: unknown 'tiny'" in err
    code, out, err = cli(*args, "--plugin", "my_models", capsys=capsys)
    assert code == 0 and out.startswith("done:"), err


# --- theory: moments of a generator, then the Gaussian-equivalence ODE -------------------------------------


def test_theory_moments_then_ode_end_to_end(tmp_path, capsys):
    import json

    import numpy as np

    from learnscope.runs.committee.generators import RandomSignGenerator, estimate_moments, load_moments
    from learnscope.runs.committee.model import init_teacher_student
    from learnscope.runs.committee.ode import (
        eg_analytic,
        gaussian_equivalence_ode,
        ge_initial_state,
        log_times,
        order_parameters,
        save_initial_weights,
    )
    from learnscope.store import load_runs

    moments, store = tmp_path / "m.npz", tmp_path / "runs"
    args = ("theory", "moments", "generator=rand", "D=20", "N=50", "L=2", "seed=1")
    code, out, err = cli(*args, "samples=3000", "batch_size=1000", f"out={moments}", "-q", capsys=capsys)
    assert code == 0, err
    # the file holds exactly the library's estimate: generator weights from --seed, samples from [seed, 7]
    direct = estimate_moments(
        RandomSignGenerator(20, 50, 2, rng=1).sample,
        np.random.default_rng([1, 7]),
        3000,
        batch_size=1000,
        quiet=True,
    )
    loaded = load_moments(moments)
    np.testing.assert_array_equal(loaded.omega, direct.omega)
    np.testing.assert_array_equal(loaded.phi, direct.phi)
    assert loaded.meta == {"generator": "rand", "D": 20, "N": 50, "L": 2, "seed": 1, "method": "estimate"}
    assert f"Omega {direct.rel_change['omega']:.3e}" in out and "from 1500 to 3000 samples" in out

    ode = ("theory", "ode", f"moments={moments}", "eta=0.3", "t_max=2", "points=4")
    code, out, err = cli(*ode, "dt=0.02", "seed=5", "--store", str(store), "-q", capsys=capsys)
    assert code == 0 and out.startswith("done: "), err
    table = load_runs(store)
    assert (
        set(table["status"]) == {"done"} and set(table["delta"]) == {20 / 50} and set(table["g"]) == {"erf"}
    )
    # the stored records are those of a direct call of the library on the same file and weights
    init = init_teacher_student(np.random.default_rng([5, 0]), 50, 20, 2, 2)
    state = ge_initial_state(init["w"], init["v"], init["B"], init["A"], loaded.moments)
    expected = gaussian_equivalence_ode(state, eta=0.3, times=log_times(2.0, 4, N=50), dt=0.02)
    (run_dir,) = store.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in ("step", "replica")} for r in records] == expected
    assert [r["step"] for r in records] == [round(r["t"] * 50) for r in expected]
    cols = [
        "t",
        "eg",
        "Q_00",
        "Q_01",
        "Q_11",
        "R_00",
        "R_01",
        "R_10",
        "R_11",
        "T_00",
        "T_01",
        "T_11",
        "v_0",
        "v_1",
    ]
    assert table[cols].to_dict("records") == [{k: r[k] for k in cols} for r in expected]

    # a second call reads the finished run back and writes nothing
    before = snapshot(store)
    code, out, _ = cli(*ode, "dt=0.02", "seed=5", "--store", str(store), "-q", capsys=capsys)
    assert code == 0 and out.startswith("done (read back)") and snapshot(store) == before
    # the same run from a file through `learnscope run` (run kind ge_ode) is that run, read back
    config = tmp_path / "ode.toml"
    config.write_text(
        f'kind = "ge_ode"\nmoments = "{moments}"\neta = 0.3\nt_max = 2\npoints = 4\ndt = 0.02\nseed = 5\n'
    )
    code, out, err = cli("run", config, "--store", str(store), "--quiet", capsys=capsys)
    assert code == 0 and snapshot(store) == before, err

    # --init: the ODE starts from given weights (e.g. a simulation's), a new run of the store
    other = init_teacher_student(np.random.default_rng(9), 50, 20, 3, 2)
    weights = save_initial_weights(tmp_path / "init.npz", **other)
    code, _, err = cli(*ode, f"init={weights}", "--store", str(store), "-q", capsys=capsys)
    assert code == 0, err
    table = load_runs(store)
    first = table[(table["K"] == 3) & (table["t"] == 0)].iloc[0]
    Q, R, T = order_parameters(other["w"], other["B"], loaded.moments)
    assert first["eg"] == pytest.approx(float(eg_analytic(Q, R, T, other["v"], other["A"])), rel=1e-12)


def test_theory_bad_inputs_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    import numpy as np

    from learnscope.runs.committee.ode import save_initial_weights

    monkeypatch.chdir(tmp_path)  # relative output paths land here
    moments, store = tmp_path / "m.npz", tmp_path / "runs"
    args = ("theory", "moments", "generator=rand", "D=4", "N=6", "analytic=true")
    code, _, err = cli(*args, f"out={moments}", capsys=capsys)
    assert code == 0, err
    (tmp_path / "corrupt.npz").write_bytes(moments.read_bytes()[:100])
    save_initial_weights(tmp_path / "w7.npz", np.zeros((2, 7)), np.zeros(2), np.zeros((2, 4)), np.ones(2))
    save_initial_weights(tmp_path / "w6.npz", np.ones((2, 6)), np.zeros(2), np.ones((2, 4)), np.ones(2))
    ode = ("theory", "ode", "--store", str(store))
    m = f"moments={moments}"
    cases = {
        "relu": ((*ode, m, "g=relu"), "g: input should be 'erf' or 'linear'"),
        "no moments": ((*ode, "eta=0.1"), "moments: required key is missing"),
        "unknown key": ((*ode, m, "lr=0.1"), "unknown config key 'lr'"),
        "missing moments": ((*ode, f"moments={tmp_path / 'nope.npz'}"), "no such file"),
        "corrupt moments": ((*ode, f"moments={tmp_path / 'corrupt.npz'}"), "cannot be read"),
        "negative lr": ((*ode, m, "eta=-1"), "eta: input should be greater than 0"),
        "init for another N": ((*ode, m, f"init={tmp_path / 'w7.npz'}"), "N=7"),
        "K against init": ((*ode, m, f"init={tmp_path / 'w6.npz'}", "K=3"), "disagree with init"),
        "init run without weights": ((*ode, m, f"init={tmp_path}"), "init.npz"),
        "unknown generator": (
            ("theory", "moments", "generator=gan", f"out={tmp_path / 'x.npz'}"),
            "gan",
        ),
        "realnvp D != N": (
            ("theory", "moments", "generator=realnvp", "D=100", "N=3072", "out=x.npz"),
            "D must equal N",
        ),
        "dcgan analytic": (
            ("theory", "moments", "generator=dcgan", "analytic=true", f"out={tmp_path / 'x.npz'}"),
            "no closed-form moments",
        ),
        "dcgan weights absent": (
            ("theory", "moments", "generator=dcgan", f"weights={tmp_path / 'g.pth'}", "out=x.npz"),
            "no such file",
        ),
        "too few samples": (("theory", "moments", "samples=1", "out=x.npz"), "samples"),
    }
    for what, (args, culprit) in cases.items():
        code, _, err = cli(*args, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2, (what, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], (what, err)
    assert not store.exists() and not (tmp_path / "x.npz").exists()


def test_study_through_the_cli_then_reused(tmp_path, capsys):
    args = (
        "study", "gaussian_equivalence", "D=20", "N=50", "L=2", "t_max=1.0", "points=4", "replicas=2",
        "n_test=500", "moments=analytic", "--store", str(tmp_path / "runs"), "--out", str(tmp_path / "fig"),
        "--quiet",
    )  # fmt: skip
    code, out, _ = cli(*args, capsys=capsys)
    assert code == 0 and "max_gap_late" in out and (tmp_path / "fig" / "eg_rand_L2_D20_N50_s0.png").is_file()
    before = snapshot(tmp_path / "runs")
    assert cli(*args, capsys=capsys)[0] == 0
    assert snapshot(tmp_path / "runs") == before


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (("study", "nope"), "unknown study 'nope'"),
        (("study", "neural_collapse", "--scale", "huge"), "no scale 'huge'"),
        (("study", "gaussian_equivalence", "--data", "digits"), "data"),
        (("study", "increasing_complexity", "--model", "nomodel"), "nomodel"),
    ],
)
def test_study_bad_input_exits_2(tmp_path, capsys, args, culprit):
    code, _, err = cli(*args, "--store", str(tmp_path), capsys=capsys)
    assert code == 2 and culprit in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_study_data_and_model_options_apply_only_to_studies_that_train_networks(capsys):
    code, _, err = cli("study", "gaussian_equivalence", "--model", "mlp", "--dry-run", capsys=capsys)
    assert code == 2 and "--data and --model do not apply" in err and len(err.strip().splitlines()) == 1
    code, out, _ = cli("study", "neural_collapse", "--model", "mlp", "--dry-run", capsys=capsys)
    assert code == 0 and "6 runs" in out


def test_a_sweep_dry_run_names_each_runs_axis_values(tmp_path, capsys):
    config = Path(__file__).parents[1] / "configs" / "digits_mlp.toml"
    code, out, _ = cli(
        "sweep", config, "--grid", "optim=adam,sgd", "--grid", "optim.lr=0.1,0.01",
        "--store", tmp_path, "--dry-run", capsys=capsys,
    )  # fmt: skip
    lines = out.strip().splitlines()
    assert code == 0 and lines[-1] == f"4 runs in {tmp_path}: 0 finished, 4 to run"
    # a section swapped whole shows by its kind, not as its dict
    assert [line.split("  ")[-1] for line in lines[:-1]] == [
        "optim=adam optim.lr=0.1", "optim=adam optim.lr=0.01",
        "optim=sgd optim.lr=0.1", "optim=sgd optim.lr=0.01",
    ]  # fmt: skip
