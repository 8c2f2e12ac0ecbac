"""Acceptance: `learnscope run` of the shipped configs reaches the issue's accuracies on real data."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_cli(config: str, store) -> dict:
    subprocess.run(
        [sys.executable, "-m", "learnscope.cli", "run", config, "--store", str(store), "--quiet"],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    (run_dir,) = [p for p in store.iterdir() if p.is_dir()]
    status = json.loads((run_dir / "status.json").read_text())
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {**last, "state": status["state"]}


@pytest.mark.slow
def test_mlp_on_digits_reaches_96_percent(tmp_path):
    result = run_cli("configs/digits_mlp.toml", tmp_path)
    assert result["state"] == "done" and result["test/acc"] >= 0.96


@pytest.mark.slow
def test_mlp_on_the_real_mnist_split_reaches_94_percent(tmp_path):
    result = run_cli("configs/mnist_mlp.toml", tmp_path)
    assert result["state"] == "done" and result["test/acc"] >= 0.94
