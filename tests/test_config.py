import errno
import json
import math
import os
import re
import tomllib

import pytest

from learnscope import DATA, MODELS
from learnscope.config import Config, apply_overrides, parse_value
from learnscope.errors import ConfigError

PATHS = {"mnist", "fashion_mnist", "cifar10", "cifar100", "npz"}


def config_for(data_kind: str = "digits", model_kind: str = "mlp") -> Config:
    data = {"kind": data_kind} | ({"path": "/data/x"} if data_kind in PATHS else {})
    return Config.from_dict({"data": data, "model": {"kind": model_kind}, "train": {"steps": 5}})


@pytest.mark.parametrize("data_kind", DATA.kinds())
@pytest.mark.parametrize("model_kind", MODELS.kinds())
def test_round_trip_toml_and_json_for_every_kind(data_kind, model_kind):
    cfg = config_for(data_kind, model_kind)
    from_toml = Config.from_dict(tomllib.loads(cfg.to_toml()))
    from_json = Config.from_dict(json.loads(cfg.to_json()))
    assert from_toml == cfg and from_json == cfg
    assert from_toml.run_hash() == from_json.run_hash() == cfg.run_hash()
    assert from_toml.to_toml() == cfg.to_toml()


def test_load_file_with_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[train]\nepochs = 2\n[optim]\nkind = "sgd"\nlr = 0.3\n')
    cfg = Config.load(
        path,
        [
            "optim.lr=0.1",
            "train.schedule=multistep",
            "train.milestones=[60, 120]",
            "model.kind=conv",
            "model.width=16",
            "data=mnist1d",
            "probes.schedule=epochs",
        ],
    )
    assert cfg.optim.lr == 0.1 and cfg.train.milestones == [60, 120]
    assert cfg.model.kind == "conv" and cfg.model.width == 16 and cfg.data.kind == "mnist1d"
    assert cfg.probes.schedule == ["epochs"]
    json_path = tmp_path / "c.json"
    json_path.write_text(cfg.to_json())
    assert Config.load(json_path) == cfg


def test_hash_names_the_run_but_ignores_the_name():
    a = Config(name="a")
    assert a.run_hash() == Config(name="b").run_hash()
    assert a.run_hash() != a.override("optim.lr=0.1").run_hash()
    assert a.run_hash() != a.override("seed=1").run_hash()
    assert len(a.run_hash()) == 16


def test_parse_value():
    assert parse_value("0.1") == 0.1 and parse_value("true") is True and parse_value("[60,120]") == [60, 120]
    assert parse_value("mnist") == "mnist" and parse_value('"3"') == "3"


def test_overrides_do_not_touch_the_input():
    raw = {"optim": {"lr": 1.0}}
    apply_overrides(raw, ["optim.lr=2"])
    assert raw == {"optim": {"lr": 1.0}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["bogus=1"], "unknown config key 'bogus'; allowed: name, seed, device"),
        (["model.dept=3"], "unknown config key 'model.dept'; allowed: kind, depth, width"),
        (["data.subset=3"], "unknown config key 'data.subset'"),
        (["optim.lr=-0.1"], "optim.lr: input should be greater than 0 (got -0.1)"),
        (["optim.lr=fast"], "optim.lr: input should be a valid number"),
        (["model.depth=two"], "model.depth: input should be a valid integer"),
        (["device=gpu"], "device: input should be 'auto', 'cpu' or 'cuda' (got 'gpu')"),
        (["model.kind=transformer"], "model.kind: unknown 'transformer'; allowed: conv, convnet_si,"),
        (["data.label_noise=1.5"], "data.label_noise: input should be less than 1"),
        (["train.epochs=null"], "train.epochs"),
        (["optim.lr"], "not of the form key=value"),
        (["seed.x=1"], "seed is not a table"),
        (["data=npz"], "data.path: required key is missing"),
        (
            ["probes.use=[nothing]"],
            "probes.use.0.kind: unknown 'nothing'; allowed: collapse, evaluation, norms",
        ),
    ],
)
def test_bad_input_gives_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        Config().override(*overrides)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(bad)


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]


def test_a_new_kind_starts_its_section_afresh():
    base = Config().override("model.width=32", "model.depth=3")
    assert base.override("model.kind=conv").model.width == 64  # conv's default, not the mlp's 32
    assert base.override("model.width=16", "model.kind=conv").model.width == 16  # order does not matter
    assert base.override("model.kind=mlp").model.width == 32  # same kind: nothing reset
    assert base.override("data.path=/x", "data=mnist").data.path.name == "x"


def test_steps_and_epochs_exclude_each_other():
    with pytest.raises(ConfigError, match=r"exactly one of train\.steps and train\.epochs"):
        Config.from_dict({"train": {"steps": 3, "epochs": 2}})
    assert Config().override("train.steps=7").train.epochs is None
    assert Config().override("train.steps=7", "train.epochs=2").train.steps is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=inf"], "optim.lr: input should be a finite number (got inf)"),
        (["optim.lr=nan"], "optim.lr: input should be a finite number (got nan)"),
        (["optim=adam", "optim.eps=inf"], "optim.eps: input should be a finite number (got inf)"),
        (["optim=adam", "optim.betas=[0.9, nan]"], "optim.betas.1: input should be a finite number"),
        (["train.epochs=inf"], "train.epochs: input should be a finite number (got inf)"),
        (["train.warmup=inf"], "train.warmup: input should be a finite number (got inf)"),
        (["train.milestones=[10, inf]"], "train.milestones.1: input should be a finite number"),
        (["data=clone", "data.ridge=inf"], "data.ridge: input should be a finite number (got inf)"),
        (["probes.use=[{kind = 'collapse', ridge = inf}]"], "probes.use.0.ridge: input should be a finite"),
    ],
)
def test_non_finite_floats_are_refused_in_every_block(overrides, message):
    with pytest.raises(ConfigError) as info:
        Config().override(*overrides)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_are_refused_in_online_and_study_configs(value):
    from learnscope.runs.committee.kinds import OnlineConfig
    from learnscope.studies.increasing_complexity import StudyOptions

    with pytest.raises(ConfigError, match=r"^eta: input should be a finite number"):
        OnlineConfig.from_dict({"eta": value})
    with pytest.raises(ConfigError, match=r"^tolerance: input should be a finite number"):
        StudyOptions.from_dict({"tolerance": value})


def test_an_override_given_twice_is_an_error():
    with pytest.raises(ConfigError, match=r"^override 'optim\.lr' given twice$"):
        Config().override("optim.lr=0.1", "optim.lr=0.2")
    with pytest.raises(ConfigError, match=r"override 'model\.kind' given twice \(also as 'model'\)"):
        Config().override("model=conv", "model.kind=mlp")
    # distinct keys of one section still combine, in any order
    cfg = Config().override("model=conv", "model.width=3", "optim.lr=0.1", "optim.momentum=0.5")
    assert (cfg.model.kind, cfg.model.width, cfg.optim.lr, cfg.optim.momentum) == ("conv", 3, 0.1, 0.5)


def test_config_file_not_utf8_or_unreadable(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(latin1))} is not UTF-8 text"):
        Config.load(latin1)
    reason = re.escape(os.strerror(errno.EISDIR))
    with pytest.raises(
        ConfigError, match=rf"^config file {re.escape(str(tmp_path))} cannot be read: {reason}$"
    ):
        Config.load(tmp_path)
    utf8 = tmp_path / "utf8.toml"
    utf8.write_bytes('name = "caf\xe9"\n'.encode())
    assert Config.load(utf8).name == "caf\xe9"
