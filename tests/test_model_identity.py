"""A model passed to `run()` in Python is known by its class and structure (and the run's seed, in the
config), not by its weights: built afresh in each call it finds its run again; another width or a `model_id`
makes another run; config.json and `runs ls` say what the model and data were."""

import json

import pytest
import torch
from torch import nn

from learnscope.data import from_tensors
from learnscope.errors import ConfigError
from learnscope.runs.train import fingerprint, model_structure, run
from learnscope.store import load_runs
from tests.conftest import cli


class Net(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        return self.layers(x)


NET = f"{Net.__module__}.Net"


@pytest.fixture
def data():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    return from_tensors(x[:150], y[:150], x[150:], y[150:])


@pytest.fixture
def cfg(tiny_config):
    return tiny_config.override("train.steps=20")


def test_a_model_is_known_by_its_class_and_structure_not_its_weights():
    torch.manual_seed(1)
    first = Net()
    torch.manual_seed(2)
    second = Net()
    assert not torch.equal(first.layers[0].weight, second.layers[0].weight)
    assert fingerprint(first, None) == fingerprint(second, None)
    assert "in_features=5, out_features=16" in model_structure(first)
    others = {
        "width": Net(32),
        "class": nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2)),
        "dtype": Net().double(),
        "frozen": Net().requires_grad_(False),
    }
    prints = {name: fingerprint(model, None) for name, model in others.items()}
    assert len({fingerprint(first, None), *prints.values()}) == 1 + len(others)
    assert fingerprint(first, None, model_id="warm") != fingerprint(first, None)


def test_a_model_built_afresh_in_each_call_finds_its_run_again(tmp_path, cfg, data, capsys):
    torch.manual_seed(1)
    first = run(cfg, tmp_path, model=Net(), data=data, quiet=True)
    assert first.computed and capsys.readouterr().err == ""
    torch.manual_seed(2)  # another init: the same run, read back
    again = run(cfg, tmp_path, model=Net(), data=data, quiet=True)
    assert (again.path, again.computed, again.records) == (first.path, False, first.records)
    err = capsys.readouterr().err
    assert f"of {NET} is done: read back, not trained" in err and "model_id=" in err
    assert len(err.strip().splitlines()) == 1

    wider = run(cfg, tmp_path, model=Net(32), data=data, quiet=True)
    other_seed = run(cfg.override("seed=1"), tmp_path, model=Net(), data=data, quiet=True)
    warm = run(cfg, tmp_path, model=Net(), data=data, model_id="warm", quiet=True)
    assert wider.computed and other_seed.computed and warm.computed
    assert len({first.path, wider.path, other_seed.path, warm.path}) == 4
    warm_again = run(cfg, tmp_path, model=Net(), data=data, model_id="warm", quiet=True)
    assert (warm_again.path, warm_again.computed) == (warm.path, False)
    body = json.loads((warm.path / "config.json").read_text())
    assert body["supplied"] == {"model": NET, "model_id": "warm", "data": "tensors (150 train, 50 test)"}
    assert body["config"]["model"]["kind"] == "mlp"  # the config as given: its hash names the run


def test_runs_ls_shows_the_class_and_data_of_a_supplied_run_and_reads_old_ones(tmp_path, cfg, data, capsys):
    store = tmp_path / "runs"
    own = run(cfg, store, quiet=True)
    supplied = run(cfg, store, model=Net(), data=data, quiet=True)
    warm = run(cfg, store, model=Net(), data=data, model_id="warm", quiet=True)
    # a run stored before config.json said what was supplied: its identity only, under its old hash
    old = store / "0123456789abcdef"
    old.mkdir()
    body = json.loads((supplied.path / "config.json").read_text())
    del body["supplied"]
    body["hash"] = old.name
    (old / "config.json").write_text(json.dumps(body))
    for name in ("status.json", "metrics.jsonl"):
        (old / name).write_bytes((supplied.path / name).read_bytes())

    code, out, err = cli("runs", "ls", "-s", store, capsys=capsys)
    assert code == 0, err
    rows = {line.split()[1]: line for line in out.splitlines() if "done" in line}
    assert set(rows) == {own.path.name, supplied.path.name, warm.path.name, old.name}
    assert "digits" in rows[own.path.name] and "mlp" in rows[own.path.name]
    for name in (supplied.path.name, warm.path.name):
        assert "tensors (150 train, 50 test)" in rows[name] and NET in rows[name]
        assert "digits" not in rows[name] and "mlp" not in rows[name]
    assert f"{NET} (warm)" in rows[warm.path.name]
    assert rows[old.name].count("supplied") == 2 and "mlp" not in rows[old.name]
    code, out, _ = cli("runs", "ls", "-s", store, "--where", f"model.kind={NET}", capsys=capsys)
    assert code == 0 and supplied.path.name in out and own.path.name not in out
    table = load_runs(store).groupby("run").first()
    assert set(table.index) == set(rows)  # the table reads the old run too
    # and shows what ran, as `runs ls` does: the model's class and the data, not the config's unused kinds
    assert (
        table.loc[own.path.name, "model.kind"] == "mlp" and table.loc[own.path.name, "data.kind"] == "digits"
    )
    for name in (supplied.path.name, warm.path.name):
        assert table.loc[name, "model.kind"] == NET
        assert table.loc[name, "data.kind"] == "tensors (150 train, 50 test)"
    assert table.loc[warm.path.name, "model.id"] == "warm"
    assert table.loc[old.name, "model.kind"] == table.loc[old.name, "data.kind"] == "supplied"


def test_model_id_without_a_model_or_empty_is_a_one_line_error(tmp_path, cfg, data):
    with pytest.raises(ConfigError, match="model_id needs model="):
        run(cfg, tmp_path, model_id="warm", quiet=True)
    with pytest.raises(ConfigError, match="non-empty string"):
        run(cfg, tmp_path, model=Net(), data=data, model_id=" ", quiet=True)
    assert not any(tmp_path.iterdir())
