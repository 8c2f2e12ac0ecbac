"""Sweeps expand grids, skip what is done and survive a failed run."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from learnscope import load_runs
from learnscope.errors import ConfigError, LearnscopeError
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


def test_zip_axes_walk_together_as_one_axis_of_the_grid(tiny_config):
    cfgs = grid(tiny_config, {"seed": [0, 1]}, {"optim.lr": [0.1, 0.01], "train.steps": [10, 20]})
    assert [(c.seed, c.optim.lr, c.train.steps) for c in cfgs] == [
        (0, 0.1, 10), (0, 0.01, 20), (1, 0.1, 10), (1, 0.01, 20)
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"need as many values each: optim\.lr has 2, train\.steps has 3"):
        grid(tiny_config, {}, {"optim.lr": [0.1, 0.01], "train.steps": [1, 2, 3]})
    with pytest.raises(ConfigError, match="seed is both a --grid and a --zip axis"):
        grid(tiny_config, {"seed": [0]}, {"seed": [1]})


SWEEP_TOML = """device = "cpu"
[data]
kind = "npz"
path = "{path}"
[model]
kind = "mlp"
width = 32
[train]
steps = 200
[probes]
points = 4
"""


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.standard_normal((256, 16)), "y_train": rng.integers(0, 4, 256)}
    arrays |= {"x_test": rng.standard_normal((64, 16)), "y_test": rng.integers(0, 4, 64)}
    np.savez(path, **{k: v.astype("float32") if k.startswith("x") else v for k, v in arrays.items()})
    return path


def _stamps(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and p.name != "lock"}


def _children(pid: int) -> list[str]:
    """Command lines of the live child processes of `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_text().replace("\0", " "))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="samples processes through /proc (Linux)")
def test_a_twelve_run_local_sweep_with_one_failure_reruns_nothing_then_retries_only_the_failed_one(tmp_path):
    """12 runs on `--workers 2`, one reading a file that does not exist yet: 11 done and 1 failed with its
    error; never more than 2 runs `running` nor 2 worker processes (sampled); a second invocation changes
    no file; `sweep status` counts them; once the file exists, --retry-failed runs that one alone."""
    good, late = _npz(tmp_path / "good.npz"), tmp_path / "late.npz"
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP_TOML.format(path=good))
    store = tmp_path / "runs"
    paths = [str(good)] * 7 + [str(late)] + [str(good)] * 4
    command = [sys.executable, "-m", "learnscope.cli", "sweep", str(config), "--store", str(store), "-q"]
    command += ["--zip", f"seed={','.join(map(str, range(12)))}", "--zip", f"data.path={','.join(paths)}"]
    command += ["--executor", "local", "--workers", "2"]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running, workers = [], []
    while sweep.poll() is None:
        states = []
        for status in store.glob("*/status.json"):
            try:
                states.append(json.loads(status.read_text())["state"])
            except (OSError, ValueError):  # replaced between the glob and the read
                continue
        running.append(states.count("running"))
        workers.append(
            sum("multiprocessing" in c and "resource_tracker" not in c for c in _children(sweep.pid))
        )
        time.sleep(0.02)
    out, err = sweep.communicate()
    assert sweep.returncode == 2 and "1 of 12 runs failed (--retry-failed runs them again)" in err
    lines = out.strip().splitlines()
    assert sum(line.startswith("done: ") for line in lines) == 11
    (failed,) = [line for line in lines if line.startswith("failed: ")]
    assert "late.npz" in failed and "No such file" in failed
    assert max(running) == 2 and max(workers) == 2, (max(running), max(workers))

    stamps = _stamps(store)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stdout == out  # the same report, from the store
    assert _stamps(store) == stamps  # and no work: not a file touched

    status = subprocess.run(
        [sys.executable, "-m", "learnscope.cli", "sweep", "status", str(store)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0
    head, failed_line = status.stdout.strip().splitlines()
    assert head == f"{store}: 12 runs: 11 done, 1 failed"
    assert failed_line.startswith("failed: ") and "No such file" in failed_line

    shutil.copy(good, late)
    retried = subprocess.run([*command, "--retry-failed"], capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr
    assert sum(line.startswith("done: ") for line in retried.stdout.splitlines()) == 12
    changed = {p for p, t in _stamps(store).items() if stamps.get(p) != t}
    (rerun,) = {p.relative_to(store).parts[0] for p in changed}
    assert rerun == failed.split()[1].split("/")[-1]  # the failed run's directory, and only it
