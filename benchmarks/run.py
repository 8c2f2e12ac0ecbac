"""`make bench`: run every benchmarks/bench_*.py in turn and write benchmarks/RESULTS.md.

One row per claim (each script's `claims.claim` calls): what is measured, the reference it is measured
against in the same run, the ratio, the target and whether it holds; then the machine, versions and date,
and each script's wall time and output. Each script's last result is kept in benchmarks/results.json: `--only`
reruns some scripts and the page keeps the others' (each with its own date). Run it on a quiet machine: two
jobs at once skew every ratio.

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
    # Each script's last result is kept beside the page (results.json), so that --only reruns some scripts and
    # the page still shows the others, each with its own date, machine and versions.
    kept_path = args.out.with_name("results.json")
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    for script in scripts:
        print(f"== {script.name}", flush=True)
        kept[script.name] = run_script(script, args.args)
    kept = {name: kept[name] for name in sorted(kept) if (HERE / name).is_file()}
    kept_path.write_text(json.dumps(kept, indent=1) + "\n")
    args.out.write_text(render(kept))
    rows = [row for result in kept.values() for row in result["claims"]]
    print(f"wrote {args.out}: {len(rows)} claims, {sum(not r['holds'] for r in rows)} missed", flush=True)
    failed = [script.name for script in scripts if kept[script.name]["exit_code"]]
    if failed:
        print(f"scripts that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run_script(script: Path, extra: str) -> dict:
    """Run one benchmark script: its claims, output, wall time and exit code, and where and when."""
    started = datetime.datetime.now(datetime.UTC)
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as claims:
        env = {**os.environ, "LEARNSCOPE_BENCH_CLAIMS": claims.name}
        command = [sys.executable, str(script), *shlex.split(extra)]
        t0 = time.perf_counter()
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        print(proc.stdout, end="", flush=True)
        found = [json.loads(line) for line in claims.read().splitlines() if line.strip()]
    return {
        "claims": found,
        "output": proc.stdout,
        "wall_s": wall,
        "exit_code": proc.returncode,
        "args": extra,
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "versions": versions(),
    }


def render(results: dict[str, dict]) -> str:
    """RESULTS.md: one row per claim of every script, then each script's run and output."""
    settings = {(r["machine"], r["versions"]) for r in results.values()}
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (benchmarks/run.py; `--only NAME` reruns some scripts and keeps the "
        "others' last results, benchmarks/results.json). Every ratio is measured against its reference in "
        "the same run, on the same machine; a speed-up is reference time / learnscope time, an overhead is "
        "the share of a step or run.",
        "",
    ]
    if len(settings) == 1:
        ((machine_text, versions_text),) = settings
        lines += [f"Machine: {machine_text}. {versions_text}.", ""]
    lines += [
        "| claim | learnscope | reference (same run) | ratio | target | holds | script |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for row in result["claims"]:
            target = f"{'≥' if row['direction'] == 'at least' else '≤'} {row['target']:g}{row['unit']}"
            lines.append(
                f"| {cell(row['claim'])} | {cell(row['ours'])} | {cell(row['reference'])} | "
                f"{fmt_ratio(row)}{row['unit']} | {target} | {'yes' if row['holds'] else '**no**'} | {name} |"
            )
    lines += ["", "## Scripts", "", "| script | run on | wall time | exit code |", "|---|---|---|---|"]
    for name, result in results.items():
        where = result["date"] + (
            "" if len(settings) == 1 else f", {result['machine']}, {result['versions']}"
        )
        extra = f" (`{result['args']}`)" if result["args"] else ""
        lines.append(f"| {name}{extra} | {where} | {result['wall_s']:.0f} s | {result['exit_code']} |")
    lines += ["", "## Output", ""]
    for name, result in results.items():
        lines += [f"### {name}", "", "```", result["output"].rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
