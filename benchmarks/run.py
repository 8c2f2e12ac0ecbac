"""`make bench`: run every benchmarks/bench_*.py in turn and write benchmarks/RESULTS.md.

One row per claim (each script's `claims.claim` calls): what is measured, the reference it is measured
against in the same run, the ratio, the target and whether it holds; then the machine, versions and date,
and each script's wall time and output. Run it on a quiet machine: two jobs at once skew every ratio.

    .venv/bin/python benchmarks/run.py [--only committee,loop] [--args "--small"] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def versions() -> str:
    names = ("torch", "numpy", "scipy", "numba")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def fmt_ratio(row: dict) -> str:
    value = row["ratio"]
    if row["unit"] == "%":
        return f"{value:.1f}"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated script names (committee for bench_committee)"
    )
    parser.add_argument("--args", default="", help="extra arguments for every script, e.g. --small")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {f"bench_{name.strip()}.py" for name in args.only.split(",")}
        scripts = [s for s in scripts if s.name in wanted]
    rows, runs = [], []
    started = datetime.datetime.now(datetime.UTC)
    for script in scripts:
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as claims:
            env = {**os.environ, "LEARNSCOPE_BENCH_CLAIMS": claims.name}
            command = [sys.executable, str(script), *shlex.split(args.args)]
            print(f"== {script.name}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            wall = time.perf_counter() - t0
            print(proc.stdout, end="", flush=True)
            found = [json.loads(line) for line in claims.read().splitlines() if line.strip()]
        for row in found:
            row["script"] = script.name
        rows += found
        runs.append((script.name, wall, proc.returncode, proc.stdout))
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (benchmarks/run.py{' ' + args.args if args.args else ''}) on "
        f"{started:%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}. {versions()}.",
        "Every ratio is measured against its reference in the same run, on the same machine; a speed-up is "
        "reference time / learnscope time, an overhead is the share of a step or run.",
        "",
        "| claim | learnscope | reference (same run) | ratio | target | holds | script |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = f"{'≥' if row['direction'] == 'at least' else '≤'} {row['target']:g}{row['unit']}"
        lines.append(
            f"| {cell(row['claim'])} | {cell(row['ours'])} | {cell(row['reference'])} | "
            f"{fmt_ratio(row)}{row['unit']} | {target} | {'yes' if row['holds'] else '**no**'} | "
            f"{row['script']} |"
        )
    lines += ["", "## Scripts", "", "| script | wall time | exit code |", "|---|---|---|"]
    lines += [f"| {name} | {wall:.0f} s | {code} |" for name, wall, code, _ in runs]
    lines += ["", "## Output", ""]
    for name, _, _, out in runs:
        lines += [f"### {name}", "", "```", out.rstrip(), "```", ""]
    args.out.write_text("\n".join(lines))
    failed = [name for name, _, code, _ in runs if code]
    print(f"wrote {args.out}: {len(rows)} claims, {sum(not r['holds'] for r in rows)} missed", flush=True)
    if failed:
        print(f"scripts that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
