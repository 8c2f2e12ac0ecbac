"""The readers of a big run store against a plain json.loads loop over the same files.

A synthetic store of 1,000 runs x 1,000 records is written to a temporary folder: config.json bodies as a run
writes them (the digits MLP of configs/digits_mlp.toml, one seed per run, so each its own hash), records as
the train loop writes them (step, epoch, lr, batch_loss from the second record on, train/loss, train/acc,
test/loss, test/acc), and status.json and the columnar copy of the records (records.npz) as `RunDir.finish`
writes them. Then, each timed in this process (imports and interpreter start not counted; the best of
--repeats):

- the reference: json.loads of every config.json and status.json and of every line of every metrics.jsonl;
- `load_runs(store)`: the table of every record (target <= 5 s);
- `learnscope runs collect --out table.parquet` (target <= 2 s, which includes load_runs) and, for the
  record, the same to CSV;
- `learnscope report --out report.html`: the overlay of 1,000 runs and the page (target <= 10 s);
- for the record, a store made before the columnar copies: `load_runs` once without them (it parses the JSON
  and writes them) and once from the JSON alone (a read-only store's case).

Each claim is the seconds against its target, with the ratio to the reference in its text.

    .venv/bin/python benchmarks/bench_readers.py [--runs 1000] [--records 1000] [--repeats 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from claims import claim

from learnscope.cli import app
from learnscope.config import load_run_config
from learnscope.store import COLUMNAR, RunDir, encode_record, load_runs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.toml"


def build_store(root: Path, runs: int, records: int) -> None:
    """`runs` finished runs of `records` records each, written through the store's own writers (as
    runs/lifecycle.py finishes a run: its metrics.jsonl, then `RunDir.finish`)."""
    base = load_run_config(CONFIG)
    rng = np.random.default_rng(0)
    for seed in range(runs):
        run_dir = RunDir(root, base.override(f"seed={seed}"))
        run_dir.path.mkdir(parents=True)
        run_dir.write_config()
        steps = np.arange(records) * 10
        loss = 2.3 * np.exp(-steps / (3000 + 10 * seed)) + 0.05 * rng.random(records)
        acc = 1 - loss / 2.5
        written = []
        for i, step in enumerate(steps.tolist()):
            record = {"step": step, "epoch": step / 10, "lr": 0.05}
            if i:
                record["batch_loss"] = float(loss[i] * (1 + 0.1 * rng.standard_normal()))
            record |= {
                "train/loss": float(loss[i]),
                "train/acc": float(acc[i]),
                "test/loss": float(loss[i] * 1.1),
                "test/acc": float(acc[i] * 0.97),
            }
            written.append(record)
        run_dir.metrics_path.write_text("".join(map(encode_record, written)))
        run_dir.finish("done", written)


def reference(root: Path) -> int:
    """A plain json.loads of each file's JSON (each record line on its own): what reading costs at all."""
    n = 0
    for path in sorted(root.iterdir()):
        json.loads((path / "config.json").read_text())
        json.loads((path / "status.json").read_text())
        with open(path / "metrics.jsonl", "rb") as f:
            for line in f:
                json.loads(line)
                n += 1
    return n


def best(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def command(*args: str) -> None:
    code = app([*args], standalone_mode=False)
    if code:
        raise SystemExit(f"learnscope {' '.join(args)}: exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="build the store here (reused if it is there)")
    args = parser.parse_args()
    print(f"# {platform.machine()} cores={os.cpu_count()} python={platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.keep or Path(tmp) / "runs"
        if not store.is_dir():
            t0 = time.perf_counter()
            build_store(store, args.runs, args.records)
            built = time.perf_counter() - t0
            print(f"store: {args.runs} runs x {args.records} records written in {built:.0f} s")
        out = Path(tmp)
        size = sum(p.stat().st_size for p in store.rglob("*.json*") if p.is_file()) / 1e6
        shape = f"{args.runs:,} runs x {args.records:,} records"
        t_ref = best(args.repeats, lambda: reference(store))
        print(f"reference, json.loads of every file and line ({size:.0f} MB): {t_ref:.2f} s")
        table = load_runs(store)
        rows = args.runs * args.records
        if len(table) != rows or set(table["status"]) != {"done"}:
            raise SystemExit(f"load_runs gave {len(table)} rows, not {rows}, or runs not done")
        collect = ("runs", "collect", "-s", str(store), "-o")
        timings = {
            "load_runs": best(args.repeats, lambda: load_runs(store)),
            "runs collect (parquet)": best(args.repeats, lambda: command(*collect, str(out / "t.parquet"))),
            "runs collect (csv)": best(args.repeats, lambda: command(*collect, str(out / "t.csv"))),
            "report": best(args.repeats, lambda: command("report", str(store), "--out", str(out / "r.html"))),
        }
        for path in store.glob(f"*/{COLUMNAR}"):  # a store made before the copies: the first read makes them
            path.unlink()
        t0 = time.perf_counter()
        from_json = load_runs(store)
        timings["load_runs, first (JSON)"] = time.perf_counter() - t0
        if len(list(store.glob(f"*/{COLUMNAR}"))) != args.runs:
            raise SystemExit("the first load_runs did not write every run's columnar copy")
        pd.testing.assert_frame_equal(from_json, table, check_exact=True)  # the copies give the JSON's table
        for name, seconds in timings.items():
            print(f"{name:<24} {seconds:6.2f} s   {seconds / t_ref:5.2f} x the reference")
        targets = {"load_runs": 5.0, "runs collect (parquet)": 2.0, "report": 10.0}
        what = {
            "load_runs": "load_runs(store): the table of every record",
            "runs collect (parquet)": "learnscope runs collect -o table.parquet (the runs, one Parquet file)",
            "report": "learnscope report --out report.html (load_runs, labels, figure, page)",
        }
        for name, target in targets.items():
            seconds = timings[name]
            claim(
                f"{what[name]}, {shape}",
                f"{seconds:.2f} s, {seconds / t_ref:.2f} x the reference",
                f"json.loads of every file and every record line: {t_ref:.2f} s",
                seconds,
                target,
                "at most",
                unit=" s",
            )
        if not math.isfinite(t_ref):
            raise SystemExit("no reference time")


if __name__ == "__main__":
    main()
