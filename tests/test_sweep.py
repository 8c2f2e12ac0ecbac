"""Sweeps expand grids, skip what is done and survive a failed run."""

import pytest
import torch

from learnscope import load_runs
from learnscope.errors import LearnscopeError
from learnscope.sweep import grid, run_all, run_and_load


def test_grid_is_the_product_of_the_axes(tiny_config):
    cfgs = grid(tiny_config, {"model.depth": [1, 2], "optim.lr": [0.1, 0.01], "data": ["digits"]})
    assert len(cfgs) == 4 and len({c.run_hash() for c in cfgs}) == 4
    assert {(c.model.depth, c.optim.lr) for c in cfgs} == {(1, 0.1), (1, 0.01), (2, 0.1), (2, 0.01)}


def test_a_failed_run_does_not_stop_the_sweep_and_done_runs_are_skipped(tmp_path, tiny_config):
    good = grid(tiny_config, {"seed": [0, 1]})
    bad = tiny_config.override("data=mnist", f"data.path={tmp_path}/missing")
    outcomes = run_all([good[0], bad, good[1]], tmp_path, quiet=True)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "missing" in outcomes[1].error
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.jsonl")}
    again = run_all(good, tmp_path, quiet=True)
    assert [o.status for o in again] == ["done", "done"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.jsonl")} == stamps
    assert set(load_runs(tmp_path)["seed"]) == {0, 1}


def test_a_study_sweep_loads_exactly_its_runs_or_names_the_failure(tmp_path, tiny_config):
    first, second, other = grid(tiny_config, {"seed": [0, 1, 2]})
    run_all([other], tmp_path, quiet=True)  # another run in the same store is not part of this table
    table = run_and_load([first, second], tmp_path, quiet=True)
    assert set(table["seed"]) == {0, 1} and set(table["status"]) == {"done"}
    bad = tiny_config.override("data=mnist", f"data.path={tmp_path}/missing", "name=broken")
    with pytest.raises(LearnscopeError, match=r"^1 of 3 runs failed; first \(broken\): .*missing") as info:
        run_and_load([first, bad, second], tmp_path, quiet=True)
    assert "\n" not in str(info.value)


def test_local_pool_gives_the_serial_results(tmp_path, tiny_config):
    cfgs = grid(tiny_config, {"seed": [0, 1]})
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))  # the pool's workers split the threads: same sums, same bits
    try:
        serial = run_all(cfgs, tmp_path / "serial", quiet=True)
    finally:
        torch.set_num_threads(threads)
    pooled = run_all(cfgs, tmp_path / "pool", executor="local", workers=2, quiet=True)
    for a, b in zip(serial, pooled, strict=True):
        assert (a.path / "metrics.jsonl").read_text() == (b.path / "metrics.jsonl").read_text()
