"""`--estimate` (learnscope/estimate.py): a plan's cost from short timed runs, against the real duration of
the same small sweep measured right after it, in this process.

The bound is a factor of 3 either way: the estimate times a handful of short runs (the least of three each)
and scales them, while the real sweep also pays what the short runs cannot see (each run's own checks of its
files, the progress of a sweep) and both see whatever else the machine is doing (docs/benchmarks.md has the
figures of a quiet machine)."""

import time

import pytest

from learnscope.config import Config
from learnscope.estimate import estimate
from learnscope.runs.committee.kinds import OnlineConfig
from learnscope.sweep import grid, run_all
from tests.conftest import REPO, cli

FACTOR = 3.0


def small_sweep() -> list[Config]:
    base = Config.from_dict(
        {"name": "est", "train": {"steps": 400, "checkpoint_every": 200}, "probes": {"points": 20}}
    )
    return grid(base, {"seed": [0, 1, 2], "model.width": [64, 256]}, {})


@pytest.mark.slow  # a minute: the estimate's timed runs, then the sweep itself
def test_estimate_is_within_a_factor_of_the_real_duration(tmp_path):
    configs = small_sweep()
    store = tmp_path / "runs"
    found = estimate(configs, store)
    assert not store.exists()  # nothing was run into the store
    assert len(found.runs) == 6 and found.finished == 0
    assert len(found.shapes) == 2  # width 64 and width 256: the seeds cost the same
    assert {r.steps for r in found.runs} == {400} and all(r.checkpoints == 2 for r in found.runs)
    start = time.perf_counter()
    run_all(configs, store)
    real = time.perf_counter() - start
    ratio = found.seconds / real
    assert 1 / FACTOR <= ratio <= FACTOR, f"estimated {found.seconds:.2f} s, took {real:.2f} s"
    # The store it predicted: within the factor too (a checkpoint, the records twice, two json files).
    written = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    assert 1 / FACTOR <= found.bytes / written <= FACTOR, f"estimated {found.bytes} B, wrote {written} B"
    # Finished runs cost nothing.
    again = estimate(configs, store)
    assert again.runs == [] and again.finished == 6 and again.seconds == 0


def test_sweep_and_study_estimate_print_the_cost_and_run_nothing(tmp_path, capsys):
    store = tmp_path / "runs"
    config = REPO / "configs" / "digits_mlp.toml"
    code, out, err = cli(
        "sweep", config, "--grid", "seed=0,1", "-s", store, "--estimate", "train.steps=50", capsys=capsys
    )
    assert code == 0, err
    assert "2 runs x 50 steps" in out and "total: 2 runs to run (0 already finished)" in out
    assert not store.exists()
    study = ["study", "neural_collapse", "--scale", "demo", "-s", store, "--estimate", "train.epochs=1"]
    code, out, err = cli(*study, capsys=capsys)
    assert code == 0, err
    assert "device-hours" in out and not store.exists()


def test_runs_of_other_kinds_are_listed_as_not_estimated():
    found = estimate([OnlineConfig(D=10, N=10, t_max=1.0, points=3)])
    assert found.runs == [] and found.not_estimated == {"online_sgd": 1}
    assert "1 runs of kind online_sgd: not estimated" in found.text()
