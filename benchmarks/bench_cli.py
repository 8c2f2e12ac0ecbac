"""Start-up time of the commands that only read, against a bare `python -c pass` in the same run.

A user types `learnscope --help` or `learnscope runs ls` and waits for the interpreter, the imports and the
command: these commands import no torch, scipy or pandas (tests/test_cli_imports.py checks which modules
load), so they should answer in well under a second (target <= 1 s each on the project's 2-core machine when
quiet). Each command runs in a fresh interpreter, as from a shell (the console script's own start-up is the
same `python -c` of `learnscope.cli.main`); the claim is its median wall time over --repeats runs, with the
bare interpreter's median beside it, on a store of a few finished runs written first.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from claims import claim

ENTRY = "import sys; from learnscope.cli import main; sys.argv[0] = 'learnscope'; main()"


def median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return statistics.median(times)


def write_store(root: Path) -> str:
    """Three short finished runs of the digits MLP; returns one run's hash."""
    from learnscope import Config, run

    digest = ""
    for seed in range(3):
        cfg = Config.from_dict({"seed": seed, "train": {"steps": 5}, "probes": {"points": 2}})
        digest = run(cfg, root, quiet=True).path.name
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        digest = write_store(store)
        bare = median_seconds([sys.executable, "-c", "pass"], args.repeats)
        print(f"python -c pass: {bare * 1000:.0f} ms (median of {args.repeats})")
        commands = {
            "--help": ["--help"],
            "--version": ["--version"],
            "runs ls": ["runs", "ls", "-s", str(store)],
            "runs show": ["runs", "show", digest[:6], "-s", str(store)],
            "sweep status": ["sweep", "status", str(store)],
            "study list": ["study", "list"],
        }
        for name, argv in commands.items():
            seconds = median_seconds([sys.executable, "-c", ENTRY, *argv], args.repeats)
            print(f"learnscope {name}: {seconds * 1000:.0f} ms ({seconds / bare:.1f}x python -c pass)")
            claim(
                f"start-up of `learnscope {name}` (a fresh interpreter, median of {args.repeats})",
                f"{seconds:.2f} s, {seconds - bare:.2f} s above the bare interpreter",
                f"`python -c pass`: {bare:.3f} s",
                seconds,
                1.0,
                "at most",
                unit=" s",
            )


if __name__ == "__main__":
    main()
