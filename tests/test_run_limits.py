"""Values that pass validation must not blow up later: setting up a run costs the same for 10^12 steps as
for 100 (its step schedules are progressions, not sets of every step); a model that cannot fit in memory is
refused in one line before anything is allocated, and an allocation that fails all the same is one line that
leaves the run resumable; seeds are validated where they are read."""

import json
import tracemalloc

import pytest

from learnscope import run
from learnscope.config import Config
from learnscope.data import build_data
from learnscope.errors import ConfigError, LearnscopeError
from learnscope.probes import Steps, probe_steps
from learnscope.runs.train import MAX_LOSS_WINDOW, RunLoop, build_model
from learnscope.store import RunDir
from tests.conftest import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_steps_are_the_set_they_stand_for():
    """Against the explicit sets they replace (the trusted reference), on every step of a short run."""
    total, per_epoch = 997, 23
    for schedule in (["log"], ["every"], ["epochs"], ["log", "every", "epochs"]):
        cfg = Config().probes.model_copy(update={"schedule": schedule, "points": 40, "every": 50})
        steps = probe_steps(cfg, total, per_epoch)
        reference = {0, total}
        if "log" in schedule:
            from learnscope.probes import log_spaced_steps

            reference |= set(log_spaced_steps(total, 40))
        if "every" in schedule:
            reference |= set(range(0, total + 1, 50))
        if "epochs" in schedule:
            reference |= set(range(0, total + 1, per_epoch))
        assert list(steps) == sorted(reference) and len(steps) == len(reference)
        assert [s for s in range(-5, total + 60) if s in steps] == sorted(reference)
    checkpoints = Steps(total, {total}, [(100, 100)])
    assert list(checkpoints) == [*range(100, total, 100), total]
    checkpoints.add(450)
    assert 450 in checkpoints and 451 not in checkpoints and 0 not in checkpoints


@pytest.mark.parametrize("length", ["train.steps=1e12", "train.epochs=1e12"])
def test_setting_up_a_run_of_a_trillion_steps_takes_no_memory_that_grows_with_them(tiny_config, length):
    """The issue's reproduction: ~60 s, then MemoryError while building the step sets. Now the loop is set up
    within a few MB (traced allocations of Python objects), and its schedules answer at the far end."""
    cfg = tiny_config.override(
        length,
        "probes.schedule=[log, every, epochs]",
        "probes.every=10",
        "train.checkpoint_every=1000",
        "train.log_every=1000000000000000",
    )
    short = cfg.override("train.steps=100")
    data = build_data(cfg.data)
    RunLoop.start(short, build_model(short, data), data)  # imports what the first set-up imports

    def set_up(config):
        model = build_model(config, data)
        tracemalloc.start()
        try:
            loop = RunLoop.start(config, model, data)
            return loop, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    loop, peak = set_up(cfg)
    _, peak_of_100_steps = set_up(short)
    assert loop.total >= 10**12 and peak < peak_of_100_steps + 2**20
    assert loop.total in loop.checkpoint_at and loop.total in loop.probe_at and loop.total in loop.sync_at
    assert 10**12 - 10**12 % 1000 in loop.checkpoint_at and 10**12 - 3 not in loop.checkpoint_at
    assert loop.window_size == MAX_LOSS_WINDOW + 1  # the losses are read back at least that often
    assert MAX_LOSS_WINDOW * 7 in loop.sync_at


def test_a_loss_window_never_exceeds_the_run(tiny_config):
    cfg = tiny_config.override("train.log_every=1000000000000")
    result = run(cfg, None, quiet=True)
    assert result.status == "done" and [r["step"] for r in result.records] == [0, 10, 20, 30, 40, 50, 60]


def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path, tiny_config, capsys):
    """The issue's reproduction: model.width=100000000 ended in an allocator traceback."""
    cfg = tiny_config.override("model.width=100000000")
    store = tmp_path / "runs"
    tracemalloc.start()
    try:
        with pytest.raises(
            ConfigError, match=r"model \(mlp, .*model.width=100000000\): .* parameters need .* GiB"
        ):
            run(cfg, store, quiet=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20 and not store.exists()
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(cfg.to_dict()))
    code, _, err = cli("run", config, "--store", store, "--quiet", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "make it smaller" in err


def test_an_allocation_that_fails_mid_run_is_one_line_and_the_run_resumes(tmp_path, tiny_config, monkeypatch):
    from learnscope.runs import train

    store = tmp_path / "runs"
    clean = run(tiny_config, None, quiet=True).records
    real_at_step = train.RunLoop.at_step

    def allocation_fails_at_step_30(loop):
        if loop.step == 30:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
            )
        return real_at_step(loop)

    monkeypatch.setattr(train.RunLoop, "at_step", allocation_fails_at_step_30)
    with pytest.raises(LearnscopeError, match=r"out of memory while training .* run the same command again"):
        run(tiny_config, store, quiet=True)
    status = RunDir(store, tiny_config).status()
    assert status["state"] == "failed" and "out of memory" in status["error"] and "traceback" not in status
    monkeypatch.undo()
    assert run(tiny_config, store, quiet=True).records == clean


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_a_seed_out_of_range_is_a_config_error(tiny_config, seed):
    with pytest.raises(ConfigError, match=r"^seed: input should be"):
        tiny_config.override(f"seed={seed}")
    largest = tiny_config.override(f"seed={2**63 - 1}")
    assert build_model(largest, build_data(largest.data)) is not None  # torch takes it, and the loader's


def test_more_log_points_than_records_could_hold_are_refused(tiny_config):
    with pytest.raises(ConfigError, match=r"probes\.points=1000000000000: at most 1,000,000"):
        run(tiny_config.override("probes.schedule=[log]", "probes.points=1e12"), None, quiet=True)
