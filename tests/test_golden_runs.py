"""Golden runs: the run machinery's behaviour, pinned before its refactor (one lifecycle, an executor
registry, files moved into folders) in tests/golden/golden.json by tests/golden/record_golden.py.

Pinned, and checked here against the code as it is now:

- the run hash of every run each study plans at each of its scales (`Study(scale).configs()`, in order;
  what `learnscope study NAME --scale S --dry-run` lists) and of each shipped configs/*.toml: exact on any
  machine. Out of scope: the runs an adaptive study adds after seeing results (`Study.refine`, sphere_regimes'
  boundary bisection), which need the results of the planned runs; run kinds no study plans and no shipped
  config uses (`ge_ode`, which needs a moments file);
- the records (`metrics.jsonl`) of 1-2 shortened tiny-scale runs per study, run through `RUN_KINDS` into a
  tmp_path store, of a seed ensemble (configs/digits_mlp.toml, 3 seeds, the `ensemble` executor) and of a
  mixed double_descent sweep through `run_all(executor="serial")`; one torch/BLAS thread. Byte identity
  (sha256) is required on a machine whose `torch.backends.cpu.get_cpu_capability()` has digests in
  golden.json (the recording machine type; float32 sums are ordered differently under AVX2 and AVX-512).
  Elsewhere each value must match the stored records: keys, integers and strings exactly, floats within
  `RTOL` of record_golden.py (1e-4 float32, 1e-3 float32 with BatchNorm, 1e-10 float64), an encoded
  prediction or accuracy within a small share of flipped argmaxes. Only metrics.jsonl is pinned, not
  status.json or checkpoints.

A failure names the study and scale, or the run, that changed. To see every difference at once:
`.venv/bin/python tests/golden/record_golden.py --check`. golden.json is re-recorded only deliberately
(`--force`), never to make this test pass after a refactor.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "golden"


def _load_recorder():
    name = "learnscope_golden_recorder"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "record_golden.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


recorder = _load_recorder()


@pytest.fixture(scope="module")
def golden() -> dict:
    path = recorder.GOLDEN
    assert path.is_file(), f"{path} is missing: it is recorded once, before the refactor, by record_golden.py"
    return json.loads(path.read_text())


def _failure(report, what: str) -> str:
    lines = "\n  ".join(report.differences)
    return f"{what} changed ({len(report.differences)} differences):\n  {lines}"


def test_every_study_scale_and_shipped_config_keeps_its_run_hashes(golden):
    report = recorder.Report()
    recorder.compare_hashes(golden, report)
    assert not report.differences, _failure(report, "run hashes")
    pinned = sum(len(h) for scales in golden["study_hashes"].values() for h in scales.values())
    assert pinned > 1000 and len(golden["config_hashes"]) >= 4  # the check checks something


@pytest.mark.parametrize("run", recorder.RUN_IDS)
def test_sample_runs_keep_their_records(golden, run, tmp_path):
    pinned = [key for key in golden["samples"] if recorder.selected(key, [run])]
    assert pinned, f"golden.json pins no run {run!r}"
    report = recorder.Report()
    recorder.compare_samples(golden, report, [run], root=tmp_path)
    assert not report.differences, _failure(report, f"records of {run}")
    for note in report.notes:  # off the recording machine type: within bounds, not byte-identical
        warnings.warn(note, stacklevel=1)


def test_the_comparison_fails_on_a_changed_value_and_passes_within_bounds(golden):
    """The check can fail: one float moved beyond the bound, a record dropped, a key renamed, a prediction
    flipped, are each a difference; a float moved within the bound is not."""
    key = "increasing_complexity/real seed=0"
    text = golden["samples"][key]["metrics"]
    records = [json.loads(line) for line in text.splitlines()]
    rtol, share = golden["rtol"]["float32"], golden["pred_share"]["float32"]

    def written(rows) -> str:
        return "".join(json.dumps(row) + "\n" for row in rows)

    def moved(factor: float) -> str:
        rows = [dict(r) for r in records]
        rows[-1]["test/loss"] *= factor
        return written(rows)

    assert recorder.within_bounds(text, text, rtol, share) == ""
    assert recorder.within_bounds(text, moved(1 + rtol / 10), rtol, share) == ""
    assert "test/loss" in recorder.within_bounds(text, moved(1 + 10 * rtol), rtol, share)
    assert "records, was" in recorder.within_bounds(text, written(records[:-1]), rtol, share)
    renamed = [dict(r) for r in records]
    renamed[0]["test/loss2"] = renamed[0].pop("test/loss")
    assert "keys" in recorder.within_bounds(text, written(renamed), rtol, share)
    flipped = [dict(r) for r in records]
    pred = recorder._decode_predictions(flipped[-1]["test/pred"]).copy()
    pred[: int(len(pred) * share) + 5] += 1
    flipped[-1]["test/pred"] = "u1:" + recorder.base64.b64encode(pred.astype("uint8").tobytes()).decode()
    assert "test/pred" in recorder.within_bounds(text, written(flipped), rtol, share)
    assert "test/loss" in recorder.first_difference(text, moved(1 + rtol / 10))
