"""The command line: each bad input exits with code 2 and one line, and leaves the store as it was."""

import gzip
import os
import pickle
import sys
from pathlib import Path

import pytest

from learnscope.cli import main

GOOD = 'device = "cpu"\n[model]\nkind = "mlp"\nwidth = 32\n[train]\nsteps = 30\n[probes]\npoints = 5\n'


def cli(*args: str, capsys) -> tuple[int, str, str]:
    sys.argv = ["learnscope", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, out, _ = cli("runs", "ls", str(store), capsys=capsys)
    (run_dir,) = [p for p in store.iterdir() if p.is_dir()]
    assert code == 0 and run_dir.name in out and "done" in out
    code, out, _ = cli("runs", "show", run_dir.name[:6], "--store", str(store), capsys=capsys)
    assert code == 0 and "[model]" in out and "width = 32" in out and '"state": "done"' in out
    code, _, err = cli("runs", "show", "zzz", "--store", str(store), capsys=capsys)
    assert code == 2 and "matches 'zzz'" in err


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
