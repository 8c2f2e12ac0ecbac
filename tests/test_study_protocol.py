"""Every study takes overrides the same way (studies/base.py): `key=value` sets the base config, `--axis`
replaces an axis, `study.NAME=value` sets an option, and an override that the study would replace is an
error naming the axis, never dropped."""

import pytest

from learnscope.config import shown_value
from learnscope.errors import ConfigError
from learnscope.store import flatten_config
from learnscope.studies import STUDIES
from learnscope.studies.base import Scale, Study, study_record_path
from tests.conftest import cli

# A value for each axis that no scale has, so a replaced axis shows in the hashes.
NEW_VALUE = {
    "model.depth": 3,
    "data.label_noise": 0.1,
    "seed": 5,
    "optim.elr": 0.005,
    "optim.weight_decay": 0.01,
    "distribution": "diagonal",
    "setting": "dcgan random",
}
STUDY_AXES = [(name, axis) for name, cls in sorted(STUDIES.items()) for axis in cls.scales["tiny"].axes]


def test_every_scale_is_typed_and_every_axis_has_a_test_value():
    for name, cls in STUDIES.items():
        for scale, spec in cls.scales.items():
            assert isinstance(spec, Scale) and isinstance(spec.options, cls.Options), (name, scale)
            assert spec.note, (name, scale)
            assert set(spec.axes) <= set(NEW_VALUE), (name, scale, set(spec.axes) - set(NEW_VALUE))


@pytest.mark.parametrize(("name", "axis"), STUDY_AXES)
def test_an_axis_replaced_changes_the_runs_and_their_hashes(name, axis):
    cls = STUDIES[name]
    before = cls("tiny").plan()
    value = NEW_VALUE[axis]
    replaced = [value] if axis != "distribution" else ["real", value]
    after = cls("tiny", axes={axis: replaced}).plan()
    grid = set(cls("tiny").axes)  # the grid's runs (not sphere_regimes' _af sweep, with its own ELRs)
    shown = {point[axis] for _, point in after if grid <= set(point) and "model.kind" not in point}
    assert shown == set(replaced)  # every grid run carries the new value
    assert {c.run_hash() for c, _ in after} != {c.run_hash() for c, _ in before}
    if "." in axis or axis == "seed":  # a config key: the runs' configs hold it
        for config, point in after:
            if axis in point:
                assert flatten_config(config.to_dict())[axis] == point[axis]


@pytest.mark.parametrize(("name", "axis"), [(n, a) for n, a in STUDY_AXES if "." in a or a == "seed"])
def test_an_override_of_an_axis_key_is_refused_naming_the_axis(name, axis, capsys):
    value = shown_value(NEW_VALUE[axis])
    with pytest.raises(ConfigError, match=f"{axis} is the axis {axis} of {name} .* --axis {axis}="):
        STUDIES[name]("tiny", (f"{axis}={value}",))
    code, out, err = cli("study", name, f"{axis}={value}", "--dry-run", "--store", "unused", capsys=capsys)
    assert code == 2 and f"--axis {axis}=" in err and len(err.strip().splitlines()) == 1 and not out


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_dry_run_prints_each_runs_axis_values(name, tmp_path, capsys):
    axes = STUDIES[name].scales["tiny"].axes
    axis = next(iter(axes))
    value = shown_value(NEW_VALUE[axis])
    given = value if axis != "distribution" else f"real,{value}"
    code, out, _ = cli(
        "study", name, "--axis", f"{axis}={given}", "--dry-run", "--store", tmp_path, capsys=capsys
    )
    assert code == 0
    assert f"{axis}={value}" in out
    lines = [line for line in out.splitlines() if f"{axis}=" in line]
    for line in lines:  # every axis of the grid, as config key=value pairs
        assert all(f"{other}=" in line for other in axes), line


def test_a_key_override_is_applied_to_every_run():
    nc = STUDIES["neural_collapse"]("tiny", ("model.width=32", "data=mnist1d"))
    assert all(c.model.width == 32 and c.data.kind == "mnist1d" for c in nc.configs())
    # an override on top of each setting of the committee study: applied, not replaced by the setting
    ge = STUDIES["gaussian_equivalence"]("tiny", ("L=2", "eta=0.1"))
    assert all(c.L == 2 and c.eta == 0.1 for c in ge.configs())
    sphere = STUDIES["sphere_regimes"]("tiny", ("model.width=32",))
    assert all(c.model.width == 32 for c in sphere.configs())  # the lr + wd and _af runs too
    dd = STUDIES["double_descent"]("tiny", ("train.epochs=3",))
    nets = [c for c, point in dd.plan() if point]
    assert len(nets) == 3 and all(c.train.epochs == 3 for c in nets)


@pytest.mark.parametrize(
    ("name", "scale", "override", "message"),
    [
        ("sphere_regimes", "tiny", "optim.kind=sgd", "optim.kind is set by sphere_regimes in each run"),
        ("sphere_regimes", "tiny", "optim=sgd", "optim is set by sphere_regimes in each run"),
        ("sphere_regimes", "tiny", "train.schedule=cosine", "study.finetune"),
        ("double_descent", "demo", "model.width=8", "trains no network, so model.width=8 has nothing"),
        ("neural_collapse", "tiny", "study.eps=0.1", "unknown config key 'study.eps'"),
        ("sphere_regimes", "tiny", "study.bisect_ratio=0.5", "study.bisect_ratio"),
    ],
)
def test_an_override_the_study_would_drop_is_an_error(name, scale, override, message):
    with pytest.raises(ConfigError, match=message):
        STUDIES[name](scale, (override,)).configs()


def test_an_unknown_or_empty_axis_is_an_error(capsys):
    with pytest.raises(
        ConfigError, match=r"has no such axis .* \(axes: model.depth, data.label_noise, seed\)"
    ):
        STUDIES["neural_collapse"]("tiny", axes={"model.width": [8]})
    with pytest.raises(ConfigError, match="axis seed of double_descent is empty at scale demo"):
        STUDIES["double_descent"]("demo", axes={"optim.weight_decay": [0.1]})
    with pytest.raises(ConfigError, match="unknown setting 'gan'"):
        STUDIES["gaussian_equivalence"]("tiny", axes={"setting": ["gan"]}).configs()
    code, _, err = cli("study", "neural_collapse", "--axis", "model.depth", "--dry-run", capsys=capsys)
    assert code == 2 and "--axis expects KEY=V1,V2" in err


def test_axis_values_from_the_command_line_are_parsed_and_the_runs_named_by_them(tmp_path, capsys):
    study = STUDIES["neural_collapse"]("tiny", axes={"model.depth": ["4"], "seed": ["1", "2"]})
    configs = study.configs()
    assert [(c.model.depth, c.seed) for c in configs][:2] == [(4, 1), (4, 2)]
    assert configs[0].name == "neural_collapse/tiny model.depth=4 data.label_noise=0 seed=1"
    same = STUDIES["neural_collapse"]("tiny", axes={"model.depth": [4], "seed": [1, 2]})
    assert [c.run_hash() for c in same.configs()] == [c.run_hash() for c in configs]


def test_a_study_with_a_replaced_axis_is_recorded_apart_and_its_command_says_so(tmp_path):
    plain = STUDIES["neural_collapse"]("tiny")
    replaced = STUDIES["neural_collapse"]("tiny", axes={"model.depth": [4]})
    assert study_record_path(tmp_path, plain) != study_record_path(tmp_path, replaced)
    assert replaced.command == "learnscope study neural_collapse --scale tiny --axis model.depth=4"


def test_study_list_names_every_studys_axes_and_options(capsys):
    code, out, _ = cli("study", "list", capsys=capsys)
    assert code == 0
    for name, cls in STUDIES.items():
        assert f"{name}:" in out
        for axis in cls.scales["tiny"].axes:
            assert f"{axis}=" in out
        for option in cls.Options.model_fields:
            assert f"study.{option}" in out


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_help_shows_the_studys_axes_and_options(name, capsys):
    code, out, _ = cli("study", name, "--help", capsys=capsys)
    assert code == 0
    assert "--axis" in out and f"Study {name}" in out  # the command's options, then the study's own
    cls = STUDIES[name]
    for axis in cls.scales["tiny"].axes:
        assert f"{axis}=" in out
    for option in cls.Options.model_fields:
        assert f"study.{option}" in out


def test_the_default_plan_reads_axis_values_from_the_configs():
    class Toy(Study):
        name = "toy"
        paper = "-"
        scales = {"tiny": Scale(base={"model": {"kind": "mlp"}}, axes={"model.width": [8, 16]}, note="-")}

        def configs(self):
            from learnscope.config import Config
            from learnscope.sweep import grid

            return grid(Config.from_dict(self.base), self.axes)

    assert [point for _, point in Toy("tiny").plan()] == [{"model.width": 8}, {"model.width": 16}]
