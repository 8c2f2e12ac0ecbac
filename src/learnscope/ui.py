"""Progress display: a rich bar on a terminal, nothing when quiet or when output is not a TTY."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class Bar:
    """Updates are cheap no-ops when the bar is hidden."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task
        self._loss, self._probe = "", ""

    def update(self, completed: int, loss: str | None = None, probe: str | None = None) -> None:
        if self._progress is None:
            return
        self._loss = self._loss if loss is None else loss
        self._probe = self._probe if probe is None else probe
        self._progress.update(self._task, completed=completed, info=f"{self._loss}  {self._probe}".strip())


def notice(text: str) -> None:
    """One line on stderr about something found and done on the way (a file repaired, a tracker dropped),
    where it does not stop the work."""
    print(f"learnscope: {text}", file=sys.stderr)


def show_progress(quiet: bool) -> bool:
    return not quiet and console.is_terminal and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Bar]:
    if not show_progress(quiet):
        yield Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield Bar(progress, task)
