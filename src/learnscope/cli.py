"""The `learnscope` command: thin over the library. Bad input exits with code 2 and one line."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from .config import parse_value, shown_value
from .errors import (
    ConfigError,
    LearnscopeError,
    RunningElsewhere,
    Terminated,
    describe_os_error,
    raise_terminated,
)
from .registry import load_plugins
from .store import find_run, read_run, read_run_or_corrupt, run_dirs, shown_state
from .ui import console
from .version import __version__

if TYPE_CHECKING:
    from .executors import ExecutionOptions


def _flag_type_hidden(display_type_rich):
    """typer 0.29 prints a type beside every option, `--quiet -q <bool>` for a flag too: a flag takes no
    value, so none is shown; other options keep their metavar or type."""

    def display(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)

    return display


typer.core.TyperOption.display_type_rich = _flag_type_hidden(typer.core.TyperOption.display_type_rich)
# An argument's name (or metavar) already says what it takes: no `<str>`, `<list[str]>` beside it.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None

app = typer.Typer(
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    help="Experiments on the training dynamics of neural networks.",
)
runs_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True, help="Inspect a run store.")
app.add_typer(runs_app, name="runs")
data_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True, help="Data sets and their clones.")


class _SweepGroup(TyperGroup):
    """`learnscope sweep CONFIG ...` runs a sweep (the `run` subcommand, implied); `learnscope sweep status
    STORE` reports on one."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        """The group's help, then the arguments and options of the implied `run` (what users type)."""
        super().format_help(ctx, formatter)
        run = self.commands["run"]
        # the Context class typer runs on: click's own, or the copy that typer >= 0.2x vendors
        sub = type(ctx)(run, info_name="run", parent=ctx)
        formatter.write_paragraph()
        formatter.write_text(
            f"learnscope sweep {' '.join(run.collect_usage_pieces(sub))} (the implied `run`):"
        )
        run.format_options(sub, formatter)


class _StudyCommand(TyperCommand):
    """`learnscope study NAME --help` ends with that study's scales, axes and options (as `study list` shows
    them): --help is eager, so NAME is taken from the arguments as typed."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        ctx.meta["study_args"] = list(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        from .studies import STUDIES

        named = [a for a in ctx.meta.get("study_args", []) if a in STUDIES]
        if named:
            formatter.write_paragraph()
            formatter.write_text(f"Study {named[0]} (its scales, axes at tiny, and options):")
            with formatter.indentation():
                for line in _describe_study(STUDIES[named[0]]).splitlines()[1:]:
                    formatter.write_text(line.strip())


sweep_app = typer.Typer(
    rich_markup_mode=None,
    cls=_SweepGroup,
    no_args_is_help=True,
    help="Run a grid of configs (`sweep CONFIG --grid ...`), or report on a store (`sweep status STORE`).",
)
app.add_typer(sweep_app, name="sweep")
app.add_typer(data_app, name="data")

Store = Annotated[Path, typer.Option("--store", "-s", metavar="DIR", help="Run store directory.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Plugin = Annotated[
    list[str],
    typer.Option("--plugin", metavar="MODULE", help="Import this module first (registers its kinds)."),
]
ExecutorName = Annotated[
    str,
    typer.Option(
        "--executor",
        metavar="serial|local|ensemble|slurm",
        help="serial | local (a process pool) | slurm (a submitit job array) | ensemble (runs differing only "
        "in seed and optimiser trained together as one stacked model, in this process) | a plugin's.",
    ),
]
Workers = Annotated[
    int | None, typer.Option(metavar="N", help="Processes for the local executor (default 2).")
]
Track = Annotated[
    list[str],
    typer.Option(
        "--track",
        metavar="NAME",
        help="Also send every record to a tracker as the run writes it (repeatable): tensorboard "
        "(STORE/tensorboard) | mlflow (STORE/mlflow.db, or $MLFLOW_TRACKING_URI). Needs learnscope[track].",
    ),
]
RetryFailed = Annotated[
    bool,
    typer.Option(
        "--retry-failed", help="Run the failed runs again (otherwise they are reported, not rerun)."
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the runs (hash, state, name) and run nothing.")
]
EstimateCost = Annotated[
    bool,
    typer.Option(
        "--estimate",
        help="Time a few steps of each shape of run on this device and print what the unfinished runs will "
        "take (wall time, device-hours, disk); run nothing into the store.",
    ),
]
SlurmOptions = Annotated[
    list[str],
    typer.Option(
        "--slurm",
        metavar="KEY=VALUE",
        help="Option of the slurm executor (repeatable): slurm_partition=gpu gpus_per_node=1 timeout_min=600 "
        "cpus_per_task=8 mem_gb=32 slurm_array_parallelism=16; cluster=local runs the jobs here.",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        print(f"learnscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Experiments on the training dynamics of neural networks."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Config file (.toml or .json).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(metavar="KEY=VALUE", help="Dotted overrides: optim.lr=0.1 ...")
    ] = None,
    store: Store = Path("runs"),
    quiet: Quiet = False,
    track: Track = [],  # noqa: B006 (typer reads the default)
    plugin: Plugin = [],  # noqa: B006
) -> None:
    """Run one config of any kind (training, or a committee-machine simulation or ODE: `kind = "online_sgd"`);
    a finished run is returned from the store without work, a killed one resumes."""
    from .config import load_run_config
    from .registry import RUN_KINDS

    load_plugins(plugin)
    _track(track)
    cfg = load_run_config(config, overrides or [])
    result = RUN_KINDS.builder(cfg.kind)(cfg, store, quiet=quiet)
    last = result.records[-1] if result.records else {}
    shown = ", ".join(
        f"{k}={v:.4f}" for k, v in last.items() if k.endswith(("/acc", "/loss")) or k in ("t", "eg")
    )
    print(f"{result.status}: {result.path}  step {last.get('step', '-')}  {shown}")


@app.command()
def demo(
    store: Store = Path("demo-runs"),
    workers: Annotated[
        int | None, typer.Option(help="Processes for the runs (default: every core of this machine).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """The five studies at their `demo` scale (minutes on a laptop), each through the study protocol, then
    one page of their figures and headline numbers: STORE/report.html. A rerun reuses every finished run."""
    from .demo import run_demo

    outcome = run_demo(store, workers=workers, quiet=quiet)
    for line in outcome.lines:
        print(line)
    if outcome.report is not None:
        print(f"report: {outcome.report}")
    if outcome.failed:
        raise LearnscopeError(
            f"{len(outcome.failed)} studies failed: {', '.join(outcome.failed)} (see the report)"
        )
    if outcome.elsewhere:
        raise RunningElsewhere(
            f"{len(outcome.elsewhere)} studies have runs in another process: {', '.join(outcome.elsewhere)}; "
            "run the demo again once it is done"
        )


def _execution(
    executor: str, workers: int | None, items: list[str], quiet: bool, retry_failed: bool
) -> ExecutionOptions:
    """The one `ExecutionOptions` of the command line: `--workers` and `--slurm KEY=VALUE ...` (values parsed
    as override values are) go to the executor that takes them, and are refused for any other."""
    from .executors import ExecutionOptions

    slurm = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm expects KEY=VALUE (e.g. slurm_partition=gpu), not {item!r}")
        slurm[key.strip()] = parse_value(value.strip())
    return ExecutionOptions.of(
        executor, quiet=quiet, retry_failed=retry_failed, workers=workers, slurm=slurm or None
    )


def _track(names: list[str]) -> None:
    """Turn the trackers on for every run of this command, its worker processes and jobs included."""
    if names:
        from .tracking import ENVIRONMENT, check_available

        check_available(names)
        os.environ[ENVIRONMENT] = ",".join(dict.fromkeys(names))


def _grid_axes(items: list[str], option: str = "--grid") -> dict[str, list[str]]:
    """`--grid KEY=V1,V2` items as axes; a comma inside brackets belongs to a list value: lr=[1,2],[3,4]."""
    axes = {}
    for item in items:
        key, sep, values = item.partition("=")
        parts, depth, start = [], 0, 0
        for i, char in enumerate(values):
            depth += {"[": 1, "]": -1}.get(char, 0)
            if char == "," and depth == 0:
                parts.append(values[start:i])
                start = i + 1
        parts.append(values[start:])
        if not sep or not key.strip() or not all(p.strip() for p in parts):
            raise ConfigError(f"{option} expects KEY=V1,V2,... (e.g. seed=0,1,2), not {item!r}")
        axes[key.strip()] = [p.strip() for p in parts]
    return axes


@sweep_app.command("run")
def sweep(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Config file (.toml or .json).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(metavar="KEY=VALUE", help="Overrides applied to every run.")
    ] = None,
    axes: Annotated[
        list[str],
        typer.Option("--grid", metavar="KEY=V1,V2", help="An axis of the grid (repeatable): seed=0,1,2."),
    ] = [],  # noqa: B006 (typer reads the default)
    zipped: Annotated[
        list[str],
        typer.Option(
            "--zip",
            metavar="KEY=V1,V2",
            help="Axes walked together, as one axis of the grid (repeatable, same length): "
            "--zip optim.lr=0.1,0.01 --zip optim.weight_decay=0,5e-4.",
        ),
    ] = [],  # noqa: B006
    store: Store = Path("runs"),
    executor: ExecutorName = "serial",
    workers: Workers = None,
    slurm: SlurmOptions = [],  # noqa: B006
    retry_failed: RetryFailed = False,
    quiet: Quiet = False,
    track: Track = [],  # noqa: B006
    plugin: Plugin = [],  # noqa: B006
    dry_run: DryRun = False,
    estimate: EstimateCost = False,
) -> None:
    """Run every combination of the --grid axes (and the --zip axes, walked together) on a config, one line
    per run. Finished runs are reused and failed ones reported, not rerun (--retry-failed reruns them); a
    failed run does not stop the others, and makes the exit code 2. A run that another process is running
    (a second sweep on the store) is `busy`, not failed: exit code 3 when no run failed; run the sweep again
    once that process is done. A combination that repeats a run (the same run hash: it differs only in
    `name`, or a value is listed twice) runs once; its line names the one it repeats."""
    from .config import load_run_config
    from .sweep import grid, run_all, sweep_error

    load_plugins(plugin)
    execution = _execution(executor, workers, slurm, quiet, retry_failed)
    _track(track)
    grid_axes, zip_axes = _grid_axes(axes), _grid_axes(zipped, "--zip")
    configs = grid(load_run_config(config, overrides or []), grid_axes, zip_axes)
    keys = [*grid_axes, *zip_axes]
    if dry_run:
        _print_plan(configs, store, [_axis_values(cfg, keys) for cfg in configs])
        return
    if estimate:
        _print_estimate(configs, store, execution)
        return
    outcomes = run_all(configs, store, execution)
    for outcome in outcomes:
        shown = _axis_values(outcome.config, keys)
        if outcome.same_as is not None:  # its run's error is on the line of the run it repeats
            note = f"  (same run as {_axis_values(configs[outcome.same_as], keys)})"
        else:
            note = f"  {outcome.error}" if outcome.error else ""
        print(f"{outcome.status}: {outcome.path or '-'}  {shown}{note}".rstrip())
    error = sweep_error(outcomes, retry_failed)
    if error is not None:
        raise error


@sweep_app.command("status")
def sweep_status(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="The run store of a sweep or study.")] = Path(
        "runs"
    ),
) -> None:
    """How many runs of STORE are in each state (done, diverged, failed, interrupted, running, ...), then
    each failed run with its error on one line. Reads each run's config and status, not its records (`runs
    ls` and `report` check those too)."""
    from .sweep import store_states

    counts, failed = store_states(store)
    shown = ", ".join(f"{n} {state}" for state, n in counts)
    print(f"{store}: {sum(n for _, n in counts)} runs" + (f": {shown}" if shown else ""))
    for digest, state, name, error in failed:
        print(f"{state}: {digest}  {name + '  ' if name else ''}{error}")


def _print_estimate(configs: list, store: Path, execution) -> None:
    """`--estimate`: the cost of the plan's unfinished runs on this device (learnscope/estimate.py)."""
    from .estimate import estimate

    found = estimate(configs, store)
    print(found.text())
    workers = getattr(execution.options, "workers", None) or 1
    if workers > 1 and found.runs:
        print(f"with {workers} workers on this machine: about {found.seconds / workers / 60:.3g} min of wall")


def _print_plan(configs: list, store: Path, labels: list[str] | None = None, names: bool = True) -> None:
    """One line per run (hash, state, name and `labels`, e.g. a sweep's axis values; the name only where
    there is no label, with `names=False`), then the counts."""
    from .sweep import plan

    rows = plan(configs, store)
    for (digest, state, name), label in zip(rows, labels or [""] * len(rows), strict=True):
        shown = f"{name}  {label}" if names or not label else label
        print(f"{digest}  {state:<11}  {shown}".rstrip())
    finished = sum(state in ("done", "diverged") for _, state, _ in rows)
    failed = sum(state == "failed" for _, state, _ in rows)
    to_run = len(rows) - finished - failed
    failures = f"{failed} failed (--retry-failed reruns them), " if failed else ""
    print(f"{len(rows)} runs in {store}: {finished} finished, {failures}{to_run} to run")


def _axis_values(cfg, keys: list[str]) -> str:
    """`key=value` of each sweep axis in a run's config; a section swapped whole (optim=adam) by its kind."""
    body = cfg.to_dict()
    shown = []
    for key in keys:
        value = _dotted(body, key)
        if isinstance(value, dict):
            value = value.get("kind", value)
        shown.append(f"{key}={value}")
    return " ".join(shown)


def _dotted(body: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        body = body.get(part) if isinstance(body, dict) else None
    return body


@app.command()
def report(
    store_path: Annotated[
        Path | None, typer.Argument(metavar="STORE", help="Run store (default: --store, i.e. runs).")
    ] = None,
    run_refs: Annotated[
        list[str],
        typer.Option("--run", "-r", help="A run to overlay (hash prefix or directory; repeatable)."),
    ] = [],  # noqa: B006 (typer reads the default)
    metric: Annotated[
        list[str],
        typer.Option("--metric", "-m", help="A record key to plot (repeatable); default eg and test/acc."),
    ] = [],  # noqa: B006 (typer reads the default)
    x: Annotated[
        str | None,
        typer.Option(help="The x axis: step, epoch or t (default: t for committee/theory runs, step else)."),
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Config key naming each line (default: the run name).")
    ] = None,
    out: Annotated[Path, typer.Option(help="A self-contained .html page, or a .png figure.")] = Path(
        "report.html"
    ),
    store: Store = Path("runs"),
) -> None:
    """One page of a store: the studies run into it (per study its figures, headline numbers beside the
    paper's, what was run and on what, failed runs), or, with --run/--metric, a .png or when the store holds
    no study, an overlay of its runs: one line per run against log x, replicas as mean and band (an overlay
    page's figure is also written beside it as .png, and said so). A study record or run that cannot be read
    is shown as corrupt, with its reason; the others are shown as ever."""
    import pandas as pd

    from .atomic import atomic_write
    from .report import (
        curve_panels,
        curves_png,
        load_study_records,
        plot_curves,
        run_labels,
        write_html,
        write_study_report,
    )
    from .store import find_run, load_runs

    store = store_path or store
    if out.suffix not in (".png", ".html"):
        raise LearnscopeError(f"--out {out}: must end in .png or .html")
    studies = load_study_records(store) if out.suffix == ".html" and not (run_refs or metric) else []
    corrupt = [r for r in studies if r.get("state") == "corrupt"]
    if studies and len(corrupt) == len(studies):  # nothing of the studies to show
        others = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        raise LearnscopeError(f"{corrupt[0]['error']}{others}")
    if studies:
        write_study_report(store, out, records=studies)
        names = ", ".join(r["study"] + (" (corrupt)" if r in corrupt else "") for r in studies)
        print(f"{out}: {len(studies)} studies ({names})")
        return
    names = None if not run_refs else {find_run(store, ref).name for ref in run_refs}
    table = load_runs(store, names)
    if table.empty:
        raise LearnscopeError(f"no runs in {store}")
    # By default the test error of committee/theory runs and the test accuracy of training runs, as present.
    metrics = metric or [m for m in ("eg", "test/acc") if m in table] or ["train/loss"]
    for key in [*([x] if x else []), *metrics]:
        if key not in table or not table[key].notna().any():
            keys = sorted(k for k in table.columns if "/" in k or k in ("eg", "step", "epoch", "t"))
            raise LearnscopeError(
                f"no record key {key!r} in these runs; some there are: {', '.join(keys[:12])}"
            )
    panels = curve_panels(table, metrics, x)  # x, where not given, per run: t or step (`report.run_x`)
    if not panels:
        against = f"--x {x}" if x else "its clock (t or step)"
        raise LearnscopeError(f"nothing to draw: no run records {' or '.join(metrics)} with {against}")
    # Joined, not set in place (nor `assign`ed): inserting a column into load_runs' table, a block per
    # column, is what pandas warns about past 100 columns (PerformanceWarning, e.g. per-layer probes).
    table = pd.concat([table, run_labels(table, label).rename("label")], axis=1)
    runs = table["run"].nunique()
    drawn = len(set().union(*(set(rows["run"]) for _, _, rows in panels)))
    xs = " and ".join(dict.fromkeys(key_x for _, key_x, _ in panels))
    title = f"learnscope report ({runs} runs in {store})"
    if out.suffix == ".png":
        plot_curves(table, metrics, out, label="label", title=title, x=x)
        also = ""
    else:  # the page embeds the figure; it is also written beside the page, and said so
        png = curves_png(table, metrics, label="label", title=title, x=x)
        write_html(table, [png], metrics, out, title)
        figure = out.with_suffix(".png")
        atomic_write(figure, lambda tmp: tmp.write_bytes(png))
        also = f" (its figure also in {figure})"
    print(f"{out}: {runs} runs, {', '.join(metrics)} against {xs}{also}")
    corrupt = table.loc[table["status"] == "corrupt", "run"].nunique() if "status" in table else 0
    if drawn + corrupt < runs:
        print(f"{runs - drawn - corrupt} of them without {' or '.join(metrics)}: not drawn")
    if corrupt:
        print(f"{corrupt} of them corrupt, not drawn: `learnscope runs ls --store {store}` says why")


@app.command(cls=_StudyCommand)
def study(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A study (`learnscope study list` names them), or `list`.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="key=value sets the base config of the study's runs; study.NAME=value a study option. A key "
            "that an axis sets is refused: replace the axis with --axis.",
        ),
    ] = None,
    scale: Annotated[
        str,
        typer.Option(
            metavar="demo|tiny|small|paper",
            help="demo (learnscope demo) | tiny (minutes on a laptop) | small | paper.",
        ),
    ] = "tiny",
    axis: Annotated[
        list[str],
        typer.Option(
            "--axis",
            metavar="NAME=V1,V2",
            help="Replace an axis of the study's grid (repeatable): --axis model.depth=4,8. "
            "`study list` names each study's axes.",
        ),
    ] = [],  # noqa: B006 (typer reads the default)
    store: Store = Path("runs"),
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Where the summary, run table and figures go (default figures/<study>)."
        ),
    ] = None,
    executor: ExecutorName = "serial",
    workers: Workers = None,
    slurm: SlurmOptions = [],  # noqa: B006 (typer reads the default)
    data: Annotated[
        str | None, typer.Option(metavar="KIND", help="Data kind for every run (= the override data=KIND).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(metavar="KIND", help="Model kind for every run (= model=KIND).")
    ] = None,
    retry_failed: RetryFailed = False,
    quiet: Quiet = False,
    dry_run: DryRun = False,
    estimate: EstimateCost = False,
    report: Annotated[
        bool, typer.Option("--report", help="Also write --out/report.html: the study's page.")
    ] = False,
    track: Track = [],  # noqa: B006
    plugin: Plugin = [],  # noqa: B006
) -> None:
    """Run a study's sweep at a scale (reusing finished runs); write its summary (JSON, text), a table of its
    runs (CSV) and its figures into --out, and print the summary. `study list` names the studies. Exit code 2
    when a run failed; 3 when none failed but some are running in another process (run it again once they
    are done)."""
    from .studies import STUDIES, Study, get_study, run_study

    load_plugins(plugin)
    if name == "list":
        for study_name in sorted(STUDIES):
            print(_describe_study(STUDIES[study_name]))
        return
    cls = get_study(name)
    if (data or model) and not cls.trains_networks:
        raise ConfigError(
            f"study {name} trains no network, so --data and --model do not apply; override its own keys "
            "(e.g. generator=dcgan K=3 eta=0.1)"
        )
    execution = _execution(executor, workers, slurm, quiet, retry_failed)
    _track(track)
    kinds = tuple(f"{key}={kind}" for key, kind in (("data", data), ("model", model)) if kind)
    everywhere = (*kinds, *(overrides or ()))
    axes = _grid_axes(axis, "--axis")
    if dry_run or estimate:
        chosen = cls(scale, everywhere, axes)
        planned = chosen.plan()
        if estimate:
            _print_estimate([config for config, _ in planned], store, execution)
            if type(chosen).refine is not Study.refine:
                print(f"study {name} adds runs as it goes (a bisection): this is its first round")
            return
        labels = [" ".join(f"{k}={shown_value(v)}" for k, v in point.items()) for _, point in planned]
        _print_plan([config for config, _ in planned], store, labels, names=False)
        return
    result = run_study(name, scale, everywhere, store, out, execution, axes=axes)
    print(result.text)
    paths = result.paths
    if report:
        from .report import write_study_report

        paths = [*paths, write_study_report(store, result.out / "report.html", records=[result.record])]
    print("wrote: " + ", ".join(str(p) for p in paths))


def _describe_study(cls) -> str:
    """A study as `study list` shows it: its paper, scales, axes (values at tiny) and options."""
    tiny = cls.scales["tiny"] if "tiny" in cls.scales else next(iter(cls.scales.values()))
    axes = "  ".join(f"{k}={','.join(shown_value(v) for v in vs)}" for k, vs in tiny.axes.items())
    lines = [f"{cls.name}: {cls.paper}"]
    lines += [f"  --scale {scale}: {spec.note}" for scale, spec in cls.scales.items()]
    lines.append(f"  axes (tiny): {axes or 'none'}")
    lines += [f"    {k}: {text}" for k, text in cls.axis_help.items()]
    options = ", ".join(f"study.{k}" for k in cls.Options.model_fields)
    lines.append(f"  options: {options or 'none'}")
    return "\n".join(lines)


@runs_app.command("ls")
def runs_ls(
    store: Store = Path("runs"),
    where: Annotated[
        list[str],
        typer.Option(
            "--where",
            metavar="KEY=VALUE",
            help="Only the runs whose config key (or status, name) has this value (repeatable, all must "
            "hold): --where model.depth=8 --where status=done.",
        ),
    ] = [],  # noqa: B006 (typer reads the default)
    sort: Annotated[
        str,
        typer.Option(
            metavar="KEY",
            help="Sort by a config key, status, name, step, test/acc or started (the time a run first "
            "started; the default). Runs without the key come last.",
        ),
    ] = "started",
) -> None:
    """One line per run, in the order they first started: hash, status, name, data (or generator), model (or
    method), the config keys whose values differ between the listed runs, last step, test/acc. A run that
    cannot be read is listed as corrupt, with the reason in place of its name."""
    from rich.markup import escape

    from .store import config_columns

    rows = []
    for path in run_dirs(store):
        body, status, records = read_run_or_corrupt(path)
        cfg = body["config"] if isinstance(body.get("config"), dict) else {}
        last = records[-1] if records else {}
        try:
            started = (path / "config.json").stat().st_mtime  # written once, when the run first starts
        except OSError:
            started = float("inf")
        acc = last.get("test/acc")
        keys = {
            **config_columns(body),  # a model passed in Python: its class, not the config's unused kind
            "status": shown_state(status),
            "name": cfg.get("name", ""),
            "step": last.get("step"),
            "test/acc": acc if isinstance(acc, float) else None,
            "started": started,
        }
        rows.append((path, status, keys))
    for item in where:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--where expects KEY=VALUE (e.g. model.depth=8), not {item!r}")
        key = key.strip()
        if rows and not any(key in keys for _, _, keys in rows):
            raise ConfigError(f"--where {key}: no run in {store} has the key {key}")
        rows = [row for row in rows if _same_value(row[2].get(key), text.strip())]
    if rows and not any(sort in keys for _, _, keys in rows):
        raise ConfigError(f"--sort {sort}: no run in {store} has the key {sort}")
    rows.sort(key=lambda row: _sort_key(row[2].get(sort), row[0].name))
    # columns of their own (model.id shows in the model's)
    own = {"name", "data.kind", "model.kind", "model.id", "status", "step", "test/acc", "started"}
    common = set.intersection(*(set(keys) for _, _, keys in rows)) if rows else set()
    differ = [
        k
        for k in (rows[0][2] if rows else {})
        if k in common
        and k not in own
        and all(_fits_column(keys[k]) for _, _, keys in rows)
        and len({json.dumps(keys[k], sort_keys=True, default=str) for _, _, keys in rows}) > 1
    ][:6]  # at most six, in the config's order: the table stays readable
    table = Table("run", "status", "name", "data", "model", *differ, "step", "test/acc")
    for path, status, keys in rows:
        acc = keys["test/acc"]
        cells = (
            path.name,
            keys["status"],
            status["error"] if status.get("state") == "corrupt" else keys["name"],
            _kind_of(keys, "data", "generator"),
            _kind_of(keys, "model", "method", keys.get("model.id")),
            *(_shown_cell(keys.get(k)) for k in differ),
            "-" if keys["step"] is None else keys["step"],
            "-" if acc is None else f"{acc:.4f}",
        )
        table.add_row(*(escape(str(cell)) for cell in cells))  # text, never rich markup
    console.print(table) if console.is_terminal else print_plain(table)


def _same_value(value: Any, text: str) -> bool:
    """Whether a run's value is the one `--where` gives as text (8 matches 8 and 8.0, done matches done)."""
    if value is None:
        return False
    wanted = parse_value(text)
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted or str(value).lower() == text.lower()
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return float(value) == float(wanted)
    return str(value) == str(wanted)


def _fits_column(value: Any) -> bool:
    """A config value that fits a column: a number, a short text, a short list of numbers or words."""
    if isinstance(value, list):
        return len(value) <= 4 and all(isinstance(v, int | float | str) for v in value)
    return not isinstance(value, dict) and len(str(value)) <= 24


def _sort_key(value: Any, name: str) -> tuple:
    """Numbers in order, then text, then runs without the key; ties by hash."""
    if value is None:
        return (2, 0.0, "", name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "", name)
    return (1, 0.0, str(value), name)


def _shown_cell(value: Any) -> str:
    """A config value in a table cell: integers as integers, floats short, lists compact."""
    return "-" if value is None else shown_value(value)


def _kind_of(flat: dict[str, Any], section: str, other: str, label: str | None = None) -> Any:
    """`runs ls`' data and model columns from a run's dotted keys: the section's kind (a section given as a
    bare kind too; a model or data passed in Python shows what it is), else the run kind's own key
    (generator, method); `label` (a model_id) after it in parentheses."""
    for key in (f"{section}.kind", section, other):
        if flat.get(key) is not None:
            return flat[key] if label is None else f"{flat[key]} ({label})"
    return "-"


def print_plain(table: Table) -> None:
    from rich.console import Console

    Console(file=sys.stdout, width=200).print(table)


@runs_app.command("show")
def runs_show(
    ref: Annotated[str, typer.Argument(metavar="RUN", help="Run directory or a unique prefix of its hash.")],
    store: Store = Path("runs"),
) -> None:
    """A run's config, status and last record."""
    path = find_run(store, ref)
    body, status, records = read_run(path)
    print(f"# run {body['hash']}  ({path})")
    print(f"# status: {json.dumps(status)}")
    print(f"# records: {len(records)}")
    if records:
        last = {k: _short(v) for k, v in records[-1].items()}
        print(f"# last: {json.dumps(last)}")
    # The stored config as it is (not validated again: a run of a plugin's kind shows without the plugin);
    # as JSON where TOML cannot hold it (a null in a list).
    import tomli_w

    try:
        print(tomli_w.dumps(_without_none(body["config"])))
    except (TypeError, ValueError):
        print(json.dumps(body["config"], indent=2))


def _without_none(value):
    """TOML has no null: keys whose value is None are left out (as `Config.to_dict` does)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _short(value):
    """Long text records (encoded predictions) as their length, so a record stays one readable line."""
    return f"<{len(value)} characters>" if isinstance(value, str) and len(value) > 40 else value


@runs_app.command("export")
def runs_export(
    ref: Annotated[str, typer.Argument(metavar="RUN", help="Run directory or a unique prefix of its hash.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="dic | csv.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
    store: Store = Path("runs"),
) -> None:
    """A run's records as text. dic: the ten-column log of the original clones programme (Refinetti et al.
    2023): (0) epoch, (1) step, loss and accuracy on (2-3) the training set (train/*), (4-5) its test set
    (clone_test/* for a clone, else test/*), (6-7) the real train set (real_train/* for a clone, else
    train/*) and (8-9) the real test set (test/*). Columns are nan where the run has no such record: 4-5 for
    a clone without data.test_n, and any set the evaluation probe skipped. The epoch column is fractional
    (the original's is the 1-based epoch in progress). csv: every record, one column per key."""
    from .report import export_run

    text = export_run(find_run(store, ref), fmt)
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"{fmt}: {out}")


@runs_app.command("collect")
def runs_collect(
    out: Annotated[Path, typer.Option("--out", "-o", help="A .csv or .parquet file.")],
    store: Store = Path("runs"),
) -> None:
    """Every run of the store as one table file: a row per record, the run's hash and status, its config as
    dotted columns (what `load_runs` returns). Parquet needs pyarrow (`pip install 'learnscope[parquet]'`);
    pandas, DuckDB and polars read it."""
    from .store import collect_runs

    table = collect_runs(store, out)
    print(f"{out}: {len(table)} rows ({table['run'].nunique()} runs) x {len(table.columns)} columns")


@data_app.command("fit-clone")
def data_fit_clone(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz (x, y): a clone of method 'file'.")],
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CONFIG|KEY=VALUE",
            help="A run config (its data section) or a clone table, then overrides of the clone's keys, "
            "with or without 'data.': method=gmm source.kind=mnist1d n=2000.",
        ),
    ] = None,
    grid: Annotated[Path | None, typer.Option(help="Also draw samples of each class to this PNG.")] = None,
    per_class: Annotated[int, typer.Option(min=1, help="Samples per class in the grid.")] = 8,
    plugin: Plugin = [],  # noqa: B006 (typer reads the default)
) -> None:
    """Fit a clone of a data set, write its samples to an .npz that data.method=file reads back, print how
    well it matches the source (relative errors of class means and covariances; gmm log-likelihood)."""
    from .data.clones import file_clone_overrides, fit_clone_to_file, format_clone_report, load_clone_config

    load_plugins(plugin)
    cfg = load_clone_config(args or [])
    if grid is not None:
        from .report import check_png, plot_clone_samples

        check_png(grid)  # before the fit, which may take minutes
    result = fit_clone_to_file(cfg, out)
    if grid is not None:
        plot_clone_samples(result, cfg, grid, per_class)
    shape = "x".join(str(n) for n in result.sample.x.shape[1:])
    print(f"{cfg.method} clone of {cfg.source.kind}: {len(result.sample)} samples of {shape} -> {out}")
    print(format_clone_report(result))
    if grid is not None:
        print(f"grid: {grid}")
    print(f"train on it: {' '.join(file_clone_overrides(cfg, out))}")


# --- data fetch | list: the official data sets in the data directory (docs/data.md) -------------------------

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        metavar="DIR",
        help="The data directory (default: $LEARNSCOPE_DATA, else ~/.cache/learnscope/data).",
    ),
]


@data_app.command("fetch")
def data_fetch(
    names: Annotated[
        list[str], typer.Argument(metavar="NAME", help="cifar10 | cifar100 | mnist | fashion_mnist.")
    ],
    directory: DataDir = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            metavar="BASE_URL",
            help="Download from this base URL (a local mirror holding the official file names) instead.",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Download the official files of a data set, check their MD5 sums and unpack them into the data
    directory, where a config with data.kind = NAME and no data.path finds them. An interrupted download
    resumes; a verified copy is left as it is."""
    from .fetch import DATASETS, data_dir, fetch

    unknown = [name for name in names if name not in DATASETS]
    if unknown:  # before any download
        raise ConfigError(f"unknown data set {unknown[0]!r} to fetch (allowed: {', '.join(DATASETS)})")
    for name in names:
        done = fetch(name, directory, mirror=mirror, quiet=quiet)
        state = "fetched and verified" if done.downloaded else "already fetched and verified"
        print(f"{name}: {state}: {done.path}")
    if directory is not None and data_dir(directory).absolute() != data_dir().absolute():
        print(f"configs without data.path look in {data_dir()}; for this copy: LEARNSCOPE_DATA={directory}")


@data_app.command("list")
def data_list(directory: DataDir = None) -> None:
    """Each data set `data fetch` knows: verified (and where a config without data.path finds it), not
    fetched, or incomplete (and why)."""
    from .fetch import DATASETS, data_dir, data_dir_origin, status

    root = data_dir(directory)
    print(f"data directory: {root} ({'--dir' if directory is not None else data_dir_origin()})")
    width = max(map(len, DATASETS)) + 2
    for name in DATASETS:
        found = status(name, root)
        if found.state == "verified":
            where = str(found.path)
        elif found.state == "not fetched":
            where = f"learnscope data fetch {name}"
            if name == "mnist":
                where += ' (its test split is bundled: data.train_prefix = data.test_prefix = "t10k")'
        else:
            where = f"{found.path}: {found.detail}; `learnscope data fetch {name}` completes it"
        print(f"{name:<{width}}{found.state:<13}{where}")


# --- theory: generator moments and the Gaussian-equivalence ODE (docs/studies/gaussian_equivalence.md) -----

theory_app = typer.Typer(
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Closed forms and ODEs: generator moments, committee-machine ODEs, double-descent curves.",
)
app.add_typer(theory_app, name="theory")


Settings = Annotated[
    list[str] | None, typer.Argument(metavar="KEY=VALUE", help="Settings, as in a config: eta=0.2 K=2 ...")
]


@theory_app.command("moments")
def theory_moments(settings: Settings = None, quiet: Quiet = False) -> None:
    """Omega = Cov(x), Phi = Cov(x, c) and the means of a generator's inputs x = G(c), written to an .npz
    that `theory ode` reads; prints the relative change of Omega and Phi between n/2 and n samples. Keys:
    out (required), generator (rand | dcgan | realnvp | iid), D, N, L, seed, weights, samples (1,000,000),
    batch_size, analytic."""
    from .config import apply_overrides
    from .runs.committee.generators import MomentsSettings, write_moments

    cfg = MomentsSettings.from_dict(apply_overrides({}, settings or []))
    path, moments, (D, N) = write_moments(cfg, quiet=quiet)
    print(f"wrote {path}: {cfg.generator} D={D} N={N} (delta = D/N = {D / N:.5g})")
    if moments.rel_change is None:
        print("closed-form moments: no sampling error")
    else:
        rel = moments.rel_change
        print(
            f"convergence, relative change from {moments.n_samples // 2} to {moments.n_samples} samples: "
            f"Omega {rel['omega']:.3e}  Phi {rel['phi']:.3e}"
        )


@theory_app.command("ode")
def theory_ode(settings: Settings = None, store: Store = Path("runs"), quiet: Quiet = False) -> None:
    """Integrate the Gaussian-equivalence ODEs on a moments file, delta = D/N from its shapes, stored as a run
    (kind ge_ode: `learnscope run` takes the same keys from a file) whose records (t, eg, Q, R, T, v)
    `load_runs` reads next to simulations. Keys: moments (required), init (weights .npz or a simulation's
    run directory), K, M, seed, eta, t_max, dt, points, g (erf | linear)."""
    from .config import apply_overrides
    from .runs.committee.kinds import MomentsODEConfig, run_ge_ode

    cfg = MomentsODEConfig.from_dict(apply_overrides({}, settings or []))
    result = run_ge_ode(cfg, store, quiet=quiet)
    spec = result.config.to_dict()
    print(
        f"{'done' if result.computed else 'done (read back)'}: {result.path}  "
        f"delta = D/N = {spec['D']}/{spec['N']}"
    )
    shown = [rec for rec in result.records if rec["replica"] == 0]
    for rec in shown[:: max(1, (len(shown) - 1) // 7)]:
        print(f"  t = {rec['t']:10.4g}   eg = {rec['eg']:.6f}")


@theory_app.command("double-descent")
def theory_double_descent(
    settings: Settings = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the curve here (CSV).")] = None,
    store: Store = Path("runs"),
) -> None:
    """The generalisation error over training time of the linear teacher–student model of Pezeshki et al.
    (2022), stored as a run (kind dd_theory: `learnscope run` and `sweep` take the same keys from a file);
    prints its first minimum, peak and second minimum (or what it does at the window's end) of eg, the paper's
    Eq. 6 ½(1 + σ² − 2R + Q); --out writes columns t, R, Q, eg, then eg_clean (½(1 − 2R + Q), noiseless
    labels) and, exact, eg_draw and eg_std. Keys: form (approx | exact), features (both | fast | slow;
    approx), dynamics (gd | flow; exact), n, d, p, kappa, sigma, l2, groups, power, draws, seed (exact),
    points, t_min, t_max (300 times from 1e-3 to 1e8)."""
    import pandas as pd

    from .config import apply_overrides
    from .runs.dd_theory import DoubleDescentTheoryConfig, run_dd_theory, summary

    cfg = DoubleDescentTheoryConfig.from_dict(apply_overrides({}, settings or []))
    result = run_dd_theory(cfg, store)
    curve = pd.DataFrame(result.records)
    found = summary(cfg, {c: curve[c].to_numpy() for c in curve.columns})
    print(f"{'done' if result.computed else 'done (read back)'}: {result.path}")
    when = "t+1" if cfg.form == "approx" else "t"
    first = "first minimum" if found["shape"] == "peak" else "minimum"
    for label, key in ((first, "first_min"), ("peak", "peak"), ("second minimum", "second_min")):
        if found[key] is not None:
            print(f"  {label:15s} eg = {found[key]:.4f} at {when} = {found[key + '_t']:.4g}")
    end = {"falling": "still falling", "rising": "rising", "flat": "flat"}[found["at_window_end"]]
    if found["shape"] == "peak" and found["second_min"] is None:
        print(f"  {'second minimum':15s} none inside the window: {end} at its end")
    elif found["shape"] != "peak":
        print(f"  {'peak':15s} none ({found['shape']}): {end} at the end of the window")
    verdict = "yes" if found["double_descent"] else "no"
    print(f"  {'end of window':15s} eg = {found['final']:.4f} at {when} = {found['final_t']:.4g}   "
          f"double descent: {verdict}")  # fmt: skip
    if out is not None:
        from .atomic import atomic_text

        extra = [c for c in ("eg_clean", "eg_draw", "eg_std") if c in curve]
        atomic_text(out, curve[["t", "R", "Q", "eg", *extra]].to_csv(index=False))
        print(f"wrote {out}")


# --- end of theory -----------------------------------------------------------------------------------------


def main() -> None:
    """The command: one line and exit code 2 for bad input or an error of the operating system (a full
    disk, a read-only store); 3 when runs of a sweep or study are running in another process (and none
    failed); 130 after Ctrl-C and 143 after SIGTERM, the run left resumable. Text the terminal's encoding
    cannot show (a run name in an ASCII locale) is printed with replacements, not a traceback."""
    _degrade_unencodable_output()
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        code = app(standalone_mode=False)  # returns the exit code of typer.Exit (130 on Ctrl-C)
    except LearnscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print("terminated: run the same command again to resume", file=sys.stderr)
        sys.exit(143)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as exc:  # click usage errors carry their own exit code
        if _is_click_exception(exc):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code == 130:
        print("interrupted: run the same command again to resume", file=sys.stderr)
    if isinstance(code, int) and code:
        sys.exit(code)


def _degrade_unencodable_output() -> None:
    """Let stdout and stderr write `?` for what their encoding cannot encode, where it cannot encode all of
    Unicode (LC_ALL=C without Python's UTF-8 mode: ASCII) and they would raise instead: a run's name or a
    help text then prints degraded, not as a UnicodeEncodeError. Done on the streams themselves, so rich's
    consoles and typer's help, which write to them, degrade alike. Undecodable bytes of a path (which Python
    holds as surrogates in such a locale) are still written back as they came."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "\u03b5\u2713\u2013".encode(encoding)
            continue
        except (UnicodeEncodeError, LookupError):
            pass
        raising = getattr(stream, "errors", None) in ("strict", "surrogateescape")
        if raising and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a closed or detached stream: leave it
                stream.reconfigure(errors=_REPLACE_UNENCODABLE)


_REPLACE_UNENCODABLE = "learnscope.replace"


def _replace_unencodable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """The error handler of `_degrade_unencodable_output`: surrogates of undecodable bytes as those bytes
    (surrogateescape), any other character the encoding lacks as `?`."""
    if isinstance(exc, UnicodeEncodeError):
        text = exc.object[exc.start : exc.end]
        if all("\udc80" <= char <= "\udcff" for char in text):
            return codecs.lookup_error("surrogateescape")(exc)
        return "?" * len(text), exc.end
    raise exc


codecs.register_error(_REPLACE_UNENCODABLE, _replace_unencodable)


def _is_click_exception(exc: Exception) -> bool:
    """A click usage error, from click itself or from the copy that typer >= 0.2x vendors."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


if __name__ == "__main__":
    main()
