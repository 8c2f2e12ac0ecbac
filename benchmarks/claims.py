"""The speed claims of the benchmark scripts as rows of benchmarks/RESULTS.md.

Every `bench_*.py` prints its measurements for a reader and calls `claim(...)` once per claim: what was
measured, against which reference in the same run, the ratio, the target. `make bench` (benchmarks/run.py)
runs every script with LEARNSCOPE_BENCH_CLAIMS naming a JSON-lines file and turns the rows into RESULTS.md;
run alone, a script only prints.
"""

from __future__ import annotations

import json
import os
from typing import Literal

Direction = Literal["at least", "at most"]


def claim(
    name: str,
    ours: str,
    reference: str,
    ratio: float,
    target: float,
    direction: Direction = "at least",
    *,
    unit: str = "x",
) -> bool:
    """Record one claim: `ratio` (reference cost / ours, or a share for an overhead) against `target`, which
    it must be `direction` ("at least" for a speed-up, "at most" for an overhead). Returns whether it
    holds."""
    holds = ratio >= target if direction == "at least" else ratio <= target
    path = os.environ.get("LEARNSCOPE_BENCH_CLAIMS")
    if path:
        row = {
            "claim": name,
            "ours": ours,
            "reference": reference,
            "ratio": ratio,
            "target": target,
            "direction": direction,
            "unit": unit,
            "holds": holds,
        }
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    return holds
