"""`learnscope demo`: the five studies at their `demo` scale, then one page of their figures.

Each study runs through the study protocol (`studies.run_study`: the local executor, finished runs reused), so
a rerun does no training; a study that fails is recorded with its error and the others still run. The page is
`<store>/report.html` (report.write_study_report), each study's figures and tables `<store>/figures/<study>`,
and its key figure also as `<store>/<study>.png`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LearnscopeError, RunningElsewhere
from .report import load_study_records, write_study_report
from .studies import run_study
from .studies.base import Headline
from .ui import progress_bar

# In the order of docs/results.md: data of increasing complexity, the committee machine's ODE, the linear
# teacher-student's double descent, the sphere's three regimes, collapse inside deep networks.
DEMO_STUDIES = (
    "increasing_complexity",
    "gaussian_equivalence",
    "double_descent",
    "sphere_regimes",
    "neural_collapse",
)


@dataclass
class DemoOutcome:
    report: Path | None  # None when no study is recorded yet (all running in another process)
    lines: list[str] = field(default_factory=list)  # one per study: its headline number, or its error
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # studies with runs another process is running


def headline_line(study: str, headlines: list[dict]) -> str:
    """`study: <first headline> = value (paper: value)`, the line the demo prints per study."""
    if not headlines:
        return f"{study:<22} done"
    first = Headline(**headlines[0])
    paper = f" (paper: {first.shown(first.paper)})" if first.paper is not None else ""
    return f"{study:<22} {first.name}: {first.shown()}{paper}"


def run_demo(store: str | Path = "demo-runs", workers: int | None = None, quiet: bool = False) -> DemoOutcome:
    """Run the demo scale of every study into `store` and write `store/report.html`."""
    store = Path(store)
    workers = workers or os.cpu_count() or 1
    lines, failed, elsewhere = [], [], []
    with progress_bar(len(DEMO_STUDIES), "demo", quiet) as bar:
        for done, name in enumerate(DEMO_STUDIES):
            bar.update(done, probe=name)
            try:
                result = run_study(
                    name, "demo", store=store, out=store / "figures" / name, executor="local",
                    workers=workers, quiet=True,
                )  # fmt: skip
            except RunningElsewhere as exc:  # not a failure: another process (a second demo) runs them
                elsewhere.append(name)
                lines.append(f"{name:<22} not all here yet: {exc}")
                continue
            except LearnscopeError as exc:  # recorded in the store by run_study; the next study still runs
                failed.append(name)
                lines.append(f"{name:<22} FAILED: {exc}")
                continue
            lines.append(headline_line(name, result.record.get("headlines", [])))
            key = [p for p in result.paths if p.suffix == ".png"][
                :1
            ]  # the study's key figure, beside the page
            if key:
                shutil.copyfile(key[0], store / f"{name}.png")
        bar.update(len(DEMO_STUDIES), probe="report")
    recorded = {
        r["study"]: r
        for r in load_study_records(store)
        if r.get("scale") == "demo" and not r.get("overrides")
    }
    shown = [recorded[name] for name in DEMO_STUDIES if name in recorded]
    title = "learnscope demo: five studies"
    report = write_study_report(store, store / "report.html", title, records=shown) if shown else None
    return DemoOutcome(report, lines, failed, elsewhere)
