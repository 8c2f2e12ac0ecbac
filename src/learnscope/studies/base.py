"""The study protocol and its one driver.

A study is one paper's experiment: named scales (`tiny` = minutes on 2 CPU cores, `small`, `paper`), the runs
of a scale (derived from dotted `key=value` overrides; an adaptive study adds runs after seeing results,
`refine`), an analysis of their records (`summarise`: a table,
one row per setting), figures and a text summary. `run_study` is the only driver: it runs a study's sweep
through the executors (finished runs reused), then writes into `out`:

    summary.json   the study, scale, overrides, the runs (hash, state) and the summary rows
    summary.txt    the command and the summary as text
    runs.csv       one row per run: its hash, state, config (dotted columns) and last record
    <figures>.png  the study's figures, and any extra tables it names (CSV)

A new study is one module with a `Study` subclass and `@register_study`; `learnscope study list` names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ..errors import LearnscopeError
from ..sweep import run_and_load

STUDIES: dict[str, type[Study]] = {}


def register_study(cls: type[Study]) -> type[Study]:
    """Class decorator: make a study available by its `name` (to `run_study` and the CLI)."""
    if cls.name in STUDIES and STUDIES[cls.name] is not cls:
        raise ValueError(f"study {cls.name!r} is registered twice")
    STUDIES[cls.name] = cls
    return cls


def get_study(name: str) -> type[Study]:
    if name not in STUDIES:
        raise LearnscopeError(f"unknown study {name!r}; available: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


class Study:
    """One study at one scale, with the overrides applied to every run. Subclasses set `name`, `paper` and
    `scales` (scale name -> the study's own description of it) and implement `configs`, `summarise` and
    `figures`; `format_summary` and `extra_tables` have defaults."""

    name: ClassVar[str]
    paper: ClassVar[str]
    scales: ClassVar[dict[str, Any]]
    trains_networks: ClassVar[bool] = True  # its runs are training configs: `--data` and `--model` apply

    def __init__(self, scale: str = "tiny", overrides: Sequence[str] = ()):
        if scale not in self.scales:
            available = ", ".join(self.scales)
            raise LearnscopeError(f"study {self.name} has no scale {scale!r}; it has: {available}")
        self.scale = scale
        self.overrides = tuple(overrides)

    @property
    def command(self) -> str:
        shown = " ".join(self.overrides)
        return f"learnscope study {self.name} --scale {self.scale} {shown}".rstrip()

    def configs(self) -> list:
        """Every run of the scale: training `Config`s or committee-machine `OnlineConfig`s."""
        raise NotImplementedError

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        """The analysis of the runs' records (`load_runs` table): one row per setting."""
        raise NotImplementedError

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        raise NotImplementedError

    def format_summary(self, summary: pd.DataFrame) -> str:
        return summary.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def extra_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Further tables to write as `<name>.csv` beside the figures (e.g. curves)."""
        return {}

    def refine(self, table: pd.DataFrame) -> list:
        """Runs to add after seeing the results so far (an adaptive study: e.g. a bisection for a boundary);
        `run_study` runs them and asks again until the answer is empty. Deterministic in the table, so a
        rerun reuses every run. Default: none."""
        return []


@dataclass
class StudyResult:
    summary: pd.DataFrame
    paths: list[Path]  # figures, then summary.json, summary.txt, runs.csv and the extra tables
    text: str  # the summary as text


def run_study(
    name: str,
    scale: str = "tiny",
    overrides: Sequence[str] = (),
    store: str | Path = "runs",
    out: str | Path | None = None,
    executor: str = "serial",
    workers: int = 2,
    quiet: bool = False,
    slurm: dict[str, Any] | None = None,
) -> StudyResult:
    """Run (or reuse) every run of a study's scale, summarise them and write the summary, the per-run table
    and the figures into `out` (default figures/<name>)."""
    study = get_study(name)(scale, overrides)
    out = Path(out) if out is not None else Path("figures") / name
    configs = study.configs()
    table = run_and_load(configs, store, executor=executor, workers=workers, quiet=quiet, slurm=slurm)
    while more := study.refine(table):
        configs = [*configs, *more]
        table = run_and_load(configs, store, executor=executor, workers=workers, quiet=quiet, slurm=slurm)
    summary = study.summarise(table)
    out.mkdir(parents=True, exist_ok=True)
    paths = list(study.figures(table, summary, out))
    text = study.format_summary(summary)
    runs = per_run_table(table)
    body = {
        "study": name,
        "paper": study.paper,
        "scale": scale,
        "overrides": list(study.overrides),
        "command": study.command,
        "runs": runs[["run", "status"]].to_dict(orient="records"),
        "summary": json.loads(summary.to_json(orient="records")),
    }
    written = {
        out / "summary.json": json.dumps(body, indent=2),
        out / "summary.txt": f"{study.command}\n{text}\n",
    }
    for path, content in written.items():
        path.write_text(content)
    runs.to_csv(out / "runs.csv", index=False)
    extra = []
    for table_name, frame in study.extra_tables(table).items():
        frame.to_csv(out / f"{table_name}.csv", index=False)
        extra.append(out / f"{table_name}.csv")
    return StudyResult(summary, [*paths, *written, out / "runs.csv", *extra], text)


def per_run_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: hash, state, its config columns and its last record; long text records (encoded
    predictions) are left out."""
    last = table.groupby("run", sort=False).last().copy().reset_index()  # copy: one block, not hundreds
    long_text = [c for c in last.columns if last[c].map(lambda v: isinstance(v, str) and len(v) > 200).any()]
    columns = ["run", "status", *[c for c in last.columns if c not in ("run", "status", *long_text)]]
    return last[columns]
