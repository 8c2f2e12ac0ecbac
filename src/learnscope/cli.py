"""The `learnscope` command: thin over the library. Bad input exits with code 2 and one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import __version__
from .config import Config
from .errors import LearnscopeError
from .registry import load_plugins
from .store import find_run, read_run, run_dirs
from .ui import console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Experiments on the training dynamics of neural networks.",
)
runs_app = typer.Typer(no_args_is_help=True, help="Inspect a run store.")
app.add_typer(runs_app, name="runs")

Store = Annotated[Path, typer.Option("--store", "-s", help="Run store directory.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Plugin = Annotated[
    list[str], typer.Option("--plugin", help="Import this module first (registers its kinds).")
]


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Config file (.toml or .json).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides: optim.lr=0.1 ...")] = None,
    store: Store = Path("runs"),
    quiet: Quiet = False,
    plugin: Plugin = [],  # noqa: B006 (typer reads the default)
) -> None:
    """Train one config; a finished run is returned from the store without work, a killed one resumes."""
    from .train import run as run_config

    load_plugins(plugin)
    cfg = Config.load(config, overrides or [])
    result = run_config(cfg, store, quiet=quiet)
    last = result.records[-1] if result.records else {}
    shown = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.endswith(("/acc", "/loss")))
    print(f"{result.status}: {result.path}  step {last.get('step', '-')}  {shown}")


@app.command()
def demo(
    store: Store = Path("demo-runs"),
    quiet: Quiet = False,
) -> None:
    """Train an MLP on the bundled digits, probe it at log-spaced steps, and draw its curves."""
    from .report import plot_curves
    from .train import run as run_config

    cfg = Config(name="demo: mlp on digits")
    result = run_config(cfg, store, quiet=quiet)
    table = result.table()
    table["run"] = cfg.name
    figure = plot_curves(table, ["train/acc", "test/acc", "test/loss"], store / "demo.png", title=cfg.name)
    print(
        table[["step", "epoch", "train/acc", "test/acc", "test/loss"]]
        .iloc[:: max(1, len(table) // 12)]
        .to_string(index=False, float_format=lambda v: f"{v:.4f}")
    )
    print(
        f"\n{result.status}: test accuracy {result.final('test/acc'):.4f} after {result.final('step')} steps"
    )
    print(f"run directory: {result.path}\nfigure: {figure}")


STUDIES = ("neural_collapse",)


@app.command()
def study(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(STUDIES)}.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Overrides applied to every run.")] = None,
    scale: Annotated[str, typer.Option(help="tiny (minutes on a laptop) | small | paper.")] = "tiny",
    store: Store = Path("runs"),
    out: Annotated[Path | None, typer.Option(help="Figure directory (default figures/<study>).")] = None,
    executor: Annotated[str, typer.Option(help="serial | local (a process pool).")] = "serial",
    workers: Annotated[int, typer.Option(help="Processes for the local executor.")] = 2,
    quiet: Quiet = False,
) -> None:
    """Run a study's sweep at a scale (reusing finished runs), print its summary and draw its figures."""
    import importlib

    if name not in STUDIES:
        raise LearnscopeError(f"unknown study {name!r}; available: {', '.join(STUDIES)}")
    module = importlib.import_module(f"learnscope.studies.{name}")
    if scale not in module.SCALES:
        raise LearnscopeError(f"study {name} has no scale {scale!r}; it has: {', '.join(module.SCALES)}")
    if executor not in ("serial", "local"):
        raise LearnscopeError(f"--executor must be serial or local, not {executor!r}")
    summary, paths = module.run_study(
        scale, store, out or Path("figures") / name, tuple(overrides or ()), executor, workers, quiet
    )
    print(module.format_summary(summary))
    print("figures: " + ", ".join(str(p) for p in paths))


@runs_app.command("ls")
def runs_ls(root: Annotated[Path, typer.Argument(help="Run store directory.")] = Path("runs")) -> None:
    """One line per run: hash, status, name, data, model, last step and accuracies."""
    table = Table("run", "status", "name", "data", "model", "step", "test/acc")
    for path in run_dirs(root):
        body, status, records = read_run(path)
        cfg = body["config"]
        last = records[-1] if records else {}
        acc = last.get("test/acc")
        table.add_row(
            path.name,
            status.get("state", "?"),
            cfg.get("name", ""),
            cfg["data"]["kind"],
            cfg["model"]["kind"],
            str(last.get("step", "-")),
            "-" if acc is None else f"{acc:.4f}",
        )
    console.print(table) if console.is_terminal else print_plain(table)


def print_plain(table: Table) -> None:
    from rich.console import Console

    Console(file=sys.stdout, width=200).print(table)


@runs_app.command("show")
def runs_show(
    ref: Annotated[str, typer.Argument(help="Run directory or a unique prefix of its hash.")],
    store: Store = Path("runs"),
) -> None:
    """A run's config, status and last record."""
    path = find_run(store, ref)
    body, status, records = read_run(path)
    print(f"# run {body['hash']}  ({path})")
    print(f"# status: {json.dumps(status)}")
    print(f"# records: {len(records)}")
    if records:
        print(f"# last: {json.dumps(records[-1])}")
    print(Config.from_dict(body["config"]).to_toml())


def main() -> None:
    try:
        app(standalone_mode=False)
    except LearnscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
