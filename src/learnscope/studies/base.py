"""The study protocol and its one driver.

A study is one paper's experiment: named scales (`demo` = what `learnscope demo` runs, `tiny` = minutes on
2 CPU cores, `small`, `paper`), the runs of a scale (derived from dotted `key=value` overrides; an adaptive
study adds runs after seeing results, `refine`), an analysis of their records (`summarise`: a table, one row
per setting), its headline numbers, figures (the key one first) and a text summary. `run_study` is the only
driver: it runs a study's sweep
through the executors (finished runs reused), then writes into `out`:

    summary.json   the study, scale, overrides, the runs (hash, state) and the summary rows
    summary.txt    the command and the summary as text
    runs.csv       one row per run: its hash, state, config (dotted columns) and last record
    <figures>.png  the study's figures, and any extra tables it names (CSV)

and records the study in the store (`<store>/studies/<name>-<scale>.json`: the same summary with the headline
numbers, the machine, versions and wall time, and where its figures are), which `learnscope report STORE`
turns into one HTML page. A study whose runs failed is recorded too, with the error; one with runs that
another process is running (`RunningElsewhere`) is not recorded until they are done here.

A scale is typed (`Scale`): the base config of the study's runs, its named axes (each a list of values) and
the study's options (its `Options` model). Every study takes overrides the same way:

    key=value            sets the base config (any config key of its runs)
    --axis NAME=v1,v2    replaces an axis (`axes={"model.depth": [4]}` in Python)
    study.NAME=value     sets a study option

An override of a key that an axis sets, or that the study sets per run (`fixed_keys`), is an error naming the
axis to use instead: never silently replaced. `plan()` gives each run with its axis values, as `--dry-run`
prints them.

A new study is one module with a `Study` subclass and `@register_study`; `learnscope study list` names them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from ..atomic import atomic_write
from ..config import apply_overrides, parse_value, shown_value
from ..errors import ConfigError, LearnscopeError, RunningElsewhere
from ..executors import ExecutionOptions
from ..sections import Strict, format_error
from ..store import FINAL, STUDY_RECORDS, RunDir, StoreError, flatten_config, read_json, read_run_or_corrupt
from ..sweep import execution_options, plan, run_and_load
from ..version import __version__

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


class NoOptions(Strict):
    """A study without options."""


class Scale(BaseModel):
    """One scale of a study: the base config of its runs (a dict of the run kind's config), its named axes
    (name -> values: a dotted config key such as `model.depth` sets that key in each run; another name is the
    study's own, explained in `Study.axis_help`) and the study's options (an instance of its `Options`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    options: Strict = NoOptions()
    note: str = ""  # what the scale is for, shown by `study list`


class Study:
    """One study at one scale, with the overrides applied. Subclasses set `name`, `paper`, `scales` (name ->
    `Scale`), `Options` (their options' model) and implement `configs`, `summarise` and `figures`;
    `format_summary`, `extra_tables`, `headlines`, `refine` and `axis_values` have defaults.

    After `__init__`: `self.base` is the scale's base config with the `key=value` overrides applied (a
    dict), `self.axes` its axes with the `--axis` replacements, `self.options` its options with the
    `study.*` ones."""

    name: ClassVar[str]
    paper: ClassVar[str]
    scales: ClassVar[dict[str, Scale]]
    Options: ClassVar[type[Strict]] = NoOptions
    trains_networks: ClassVar[bool] = True  # its runs are training configs: `--data` and `--model` apply
    axis_help: ClassVar[dict[str, str]] = {}  # axes that are not config keys: what a value means
    fixed_keys: ClassVar[dict[str, str]] = {}  # config keys the study sets in each run -> how to change them

    def __init__(
        self,
        scale: str = "tiny",
        overrides: Sequence[str] = (),
        axes: Mapping[str, Sequence[Any]] | None = None,
    ):
        if scale not in self.scales:
            available = ", ".join(self.scales)
            raise LearnscopeError(f"study {self.name} has no scale {scale!r}; it has: {available}")
        self.scale = scale
        self.overrides = tuple(overrides)
        spec = self.scales[scale]
        replaced = {name: [_axis_value(v) for v in values] for name, values in (axes or {}).items()}
        for name, values in replaced.items():
            if name not in spec.axes:
                known = ", ".join(spec.axes) or "none"
                raise ConfigError(
                    f"--axis {name}: {self.name} has no such axis at scale {scale} (axes: {known})"
                )
            if not values:
                raise ConfigError(f"--axis {name}: give at least one value")
        self.axis_overrides = replaced
        self.axes = {**spec.axes, **replaced}
        option_items = [o.removeprefix("study.") for o in self.overrides if o.startswith("study.")]
        config_items = [o for o in self.overrides if not o.startswith("study.")]
        for item in config_items:
            self._check_not_an_axis(item.partition("=")[0].strip())
        try:
            self.options = self.Options.model_validate(
                apply_overrides(spec.options.model_dump(), option_items)
            )
        except ValidationError as exc:
            raise ConfigError(format_error(exc, "study", self.Options)) from None
        self.base = apply_overrides(spec.base, config_items)
        self.config_overrides = tuple(config_items)
        if replaced and not all(self.axes.values()):
            empty = [name for name, values in self.axes.items() if not values]
            raise ConfigError(
                f"axis {empty[0]} of {self.name} is empty at scale {scale}, so the grid has no run: "
                f"give it too (--axis {empty[0]}=...)"
            )

    def _check_not_an_axis(self, key: str) -> None:
        """Refuse a `key=value` that the study would replace in every run: an axis, or a key it sets."""
        for axis, values in self.axes.items():
            if key == axis or key.startswith(axis + "."):
                shown = ",".join(shown_value(v) for v in values)
                raise ConfigError(
                    f"{key} is the axis {axis} of {self.name} at scale {self.scale} ({shown}): "
                    f"replace it with --axis {axis}=..."
                )
        for fixed, how in self.fixed_keys.items():
            if key == fixed or key.startswith(fixed + ".") or fixed.startswith(key + "."):
                raise ConfigError(f"{key} is set by {self.name} in each run: {how}")

    @property
    def command(self) -> str:
        axes = [
            f"--axis {name}={','.join(shown_value(v) for v in values)}"
            for name, values in self.axis_overrides.items()
        ]
        shown = " ".join([*axes, *self.overrides])
        return f"learnscope study {self.name} --scale {self.scale} {shown}".rstrip()

    def points(self, *names: str) -> list[dict[str, Any]]:
        """The grid of the axes `names` (default: every axis), in the axes' order: one dict per point."""
        names = names or tuple(self.axes)
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(self.axes[n] for n in names))
        ]

    def plan(self) -> list[tuple[Any, dict[str, Any]]]:
        """Each run of the scale with its axis values (what `--dry-run` prints)."""
        return [(config, self.axis_values(config)) for config in self.configs()]

    def axis_values(self, config: Any) -> dict[str, Any]:
        """The values of the axes in a run's config (the axes that are config keys; a study with axes of its
        own adds theirs)."""
        flat = flatten_config(config.to_dict())
        return {name: flat[name] for name in self.axes if name in flat}

    def run_name(self, values: Mapping[str, Any]) -> str:
        """The name of a run: the study, the scale and its axis values."""
        shown = " ".join(f"{name}={shown_value(value)}" for name, value in values.items())
        return f"{self.name}/{self.scale} {shown}".rstrip()

    def configs(self) -> list:
        """Every run of the scale: training `Config`s or committee-machine `OnlineConfig`s. A study writes
        `configs` (its axis values then read from each config) or `plan` (runs with the values it shows)."""
        if type(self).plan is Study.plan:
            raise NotImplementedError(f"study {self.name} defines neither configs() nor plan()")
        return [config for config, _ in self.plan()]

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        """The analysis of the runs' records (`load_runs` table): one row per setting."""
        raise NotImplementedError

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        """The figures written into `out`, the key one (in the form of the paper's key figure) first."""
        raise NotImplementedError

    def format_summary(self, summary: pd.DataFrame) -> str:
        return summary.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def extra_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Further tables to write as `<name>.csv` beside the figures (e.g. curves)."""
        return {}

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        """The study's headline numbers from its summary (the first is the one `learnscope demo` prints)."""
        return []

    def refine(self, table: pd.DataFrame) -> list:
        """Runs to add after seeing the results so far (an adaptive study: e.g. a bisection for a boundary);
        `run_study` runs them and asks again until the answer is empty. Deterministic in the table, so a
        rerun reuses every run. Default: none."""
        return []


@dataclass
class Headline:
    """One number a study's analysis computes, beside the paper's where the study knows it."""

    name: str  # what it is, e.g. "steps the Gaussian clone tracks the baseline"
    value: float | str
    paper: float | str | None = None  # the paper's figure for it (None: the paper gives none to compare)
    note: str = ""  # the scale, the unit, or why ours differs

    def shown(self, value: float | str | None = None) -> str:
        value = self.value if value is None else value
        return f"{value:.4g}" if isinstance(value, float | int | np.floating | np.integer) else str(value)


@dataclass
class StudyResult:
    summary: pd.DataFrame
    paths: list[Path]  # figures, then summary.json, summary.txt, runs.csv and the extra tables
    text: str  # the summary as text
    out: Path  # the folder the study wrote into
    record: dict[str, Any]  # what the store records of the study (the report's input)


def run_study(
    name: str,
    scale: str = "tiny",
    overrides: Sequence[str] = (),
    store: str | Path = "runs",
    out: str | Path | None = None,
    execution: ExecutionOptions | None = None,
    axes: Mapping[str, Sequence[Any]] | None = None,
    **keywords: Any,
) -> StudyResult:
    """Run (or reuse) every run of a study's scale by the executor of `execution` (or of the keywords of
    `sweep.run_all`: executor, workers, quiet, retry_failed, ...), summarise them and write the summary, the
    per-run table and the figures into `out` (default figures/<name>). `overrides` and `axes` as `Study`
    takes them. A run that failed before is reported, not rerun, unless `retry_failed`."""
    execution = execution if execution is not None else execution_options(**keywords)
    study = get_study(name)(scale, overrides, axes)
    out = Path(out) if out is not None else Path("figures") / name
    started = time.perf_counter()
    body: dict[str, Any] = {
        "study": name,
        "paper": study.paper,
        "scale": scale,
        "overrides": list(study.overrides),
        "axes": study.axis_overrides,
        "command": study.command,
        "out": str(out.resolve()),
        "machine": machine(),
    }
    configs = study.configs()
    computed = (
        False  # whether this invocation runs anything (else the record keeps its wall time and machine)
    )

    def sweep(configs: list) -> pd.DataFrame:
        nonlocal computed
        settled = (*FINAL, *(() if execution.retry_failed else ("failed",)))
        computed |= any(state not in settled for _, state, _ in plan(configs, store))
        return run_and_load(configs, store, execution)

    try:
        table = sweep(configs)
        while more := study.refine(table):
            configs = [*configs, *more]
            table = sweep(configs)
    except RunningElsewhere:  # nothing failed: another process runs some runs; the record stays as it was
        raise
    except LearnscopeError as exc:  # recorded for the report (the failed runs keep their errors), then raised
        failed = {**body, "state": "failed", "error": str(exc), "wall_s": time.perf_counter() - started}
        failed["problems"] = _problems(store, [RunDir(store, c).hash for c in configs])
        _record(store, study, failed)
        raise
    summary = study.summarise(table)
    out.mkdir(parents=True, exist_ok=True)
    paths = list(study.figures(table, summary, out))
    text = study.format_summary(summary)
    runs = per_run_table(table)
    body |= {
        "state": "done",
        "configs": len(configs),
        "runs": runs[["run", "status"]].to_dict(orient="records"),
        "headlines": [asdict(h) for h in study.headlines(summary)],
        "problems": _problems(store, list(runs["run"][runs["status"] != "done"])),
        "figures": [p.name for p in paths],
        "summary": json.loads(summary.to_json(orient="records")),
        "text": text,
        "wall_s": time.perf_counter() - started,
    }
    previous = _read_record(store, study)
    if (
        not computed and previous.get("state") == "done"
    ):  # every run reused: the time of the one that ran them
        body |= {key: previous[key] for key in ("wall_s", "machine") if key in previous}
    written = {
        out / "summary.json": json.dumps(body, indent=2, default=str),
        out / "summary.txt": f"{study.command}\n{text}\n",
    }
    for path, content in written.items():
        path.write_text(content)
    runs.to_csv(out / "runs.csv", index=False)
    extra = []
    for table_name, frame in study.extra_tables(table).items():
        frame.to_csv(out / f"{table_name}.csv", index=False)
        extra.append(out / f"{table_name}.csv")
    _record(store, study, body)
    return StudyResult(summary, [*paths, *written, out / "runs.csv", *extra], text, out, body)


def machine() -> dict[str, Any]:
    """What the numbers of a study were measured on: host, CPU count, accelerator and versions."""
    import torch  # here, not at the top: `learnscope study list` reads the studies without torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "host": platform.node(),
        "platform": platform.platform(terse=True),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "device": device,
        "python": sys.version.split()[0],
        "learnscope": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
    }


def study_record_path(store: str | Path, study: Study) -> Path:
    """Where a study is recorded in its store: one file per study, scale and set of overrides."""
    key = f"{study.name}-{study.scale}"
    if study.overrides or study.axis_overrides:
        given = " ".join(study.overrides)
        if study.axis_overrides:  # an axis changed: a record of its own (the same study without it keeps its)
            given += " " + json.dumps(study.axis_overrides, sort_keys=True, default=str)
        key += "-" + hashlib.sha256(given.encode()).hexdigest()[:8]
    return Path(store) / STUDY_RECORDS / f"{key}.json"


def _record(store: str | Path, study: Study, body: dict[str, Any]) -> None:
    """Write the record unless it holds this already: a rerun that reuses everything writes nothing."""
    path = study_record_path(store, study)
    text = json.dumps(body, indent=2, default=str)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _read_record(store: str | Path, study: Study) -> dict[str, Any]:
    """The study's record in the store; {} when there is none or it cannot be read (it is then rewritten):
    read as the report reads it, so a file that is not a regular one (a link to /dev/zero) or is not JSON
    is refused, not read whole."""
    try:
        record = read_json(study_record_path(store, study))
    except StoreError:
        return {}
    return record if isinstance(record, dict) else {}


def _problems(store: str | Path, names: list[str]) -> list[dict[str, str]]:
    """The runs among `names` that are not done (failed, diverged, interrupted), and why."""
    rows = []
    for name in names:
        if not (Path(store) / name).exists():
            continue
        config, status, _ = read_run_or_corrupt(Path(store) / name)
        if status.get("state") != "done":
            rows.append(
                {
                    "run": name,
                    "name": (config.get("config") or {}).get("name") or "",
                    "state": str(status.get("state", "?")),
                    "error": str(status.get("error", "")),
                }
            )
    return rows


def per_run_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: hash, state, its config columns and its last record; long text records (encoded
    predictions) are left out."""
    last = table.groupby("run", sort=False).last().copy().reset_index()  # copy: one block, not hundreds
    long_text = [c for c in last.columns if last[c].map(lambda v: isinstance(v, str) and len(v) > 200).any()]
    columns = ["run", "status", *[c for c in last.columns if c not in ("run", "status", *long_text)]]
    return last[columns]


def _axis_value(value: Any) -> Any:
    """An axis value as given: from the command line a string, parsed as a config value is (1e-3, true, x)."""
    return parse_value(value.strip()) if isinstance(value, str) else value
