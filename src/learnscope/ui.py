"""Progress display: a rich bar on a terminal; on a log file or a pipe (no terminal: CI, `make demo > log`)
a plain line every so often; nothing when quiet."""

from __future__ import annotations

import contextlib
import sys
import time
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
from rich.table import Column

console = Console(stderr=True)

# Where there is no terminal: the first line once the work has taken FIRST_S seconds (short work prints
# nothing), then one every EVERY_S seconds or every STRIDE of the total, whichever comes first, and one at
# the end.
FIRST_S, EVERY_S, STRIDE = 5.0, 30.0, 0.25


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

    def close(self) -> None:
        pass


class Lines(Bar):
    """Progress as plain lines on stderr (see FIRST_S): `description: 120/400 (30%), 0:00:12 elapsed, 0:00:28
    left  loss 0.31`."""

    def __init__(self, total: int, description: str, clock=time.monotonic):
        super().__init__(None, None)
        self._total, self._description, self._clock = max(total, 1), description, clock
        self._start = clock()
        self._said_at: float | None = None  # the clock and the count at the last line
        self._said_count = 0
        self._completed = 0

    def update(self, completed: int, loss: str | None = None, probe: str | None = None) -> None:
        self._loss = self._loss if loss is None else loss
        self._probe = self._probe if probe is None else probe
        self._completed = completed
        now = self._clock()
        if self._said_at is None:
            due = now - self._start >= FIRST_S
        else:
            due = now - self._said_at >= EVERY_S or completed - self._said_count >= STRIDE * self._total
        if due and completed < self._total:
            self._say(now)

    def close(self) -> None:
        if self._said_at is not None and self._said_count != self._completed:
            self._say(self._clock())  # the end, where a line was said before

    def _say(self, now: float) -> None:
        elapsed = now - self._start
        share = self._completed / self._total
        left = elapsed * (1 - share) / share if share > 0 else None
        info = f"{self._loss}  {self._probe}".strip()
        line = (
            f"{self._description}: {self._completed}/{self._total} ({share:.0%}), {_clock(elapsed)} elapsed"
        )
        line += f", {_clock(left)} left" if left is not None and self._completed < self._total else ""
        print(line + (f"  {info}" if info else ""), file=sys.stderr, flush=True)
        self._said_at, self._said_count = now, self._completed


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def notice(text: str) -> None:
    """One line on stderr about something found and done on the way (a file repaired, a tracker dropped),
    where it does not stop the work."""
    print(f"learnscope: {text}", file=sys.stderr)


def on_terminal() -> bool:
    return console.is_terminal and sys.stderr.isatty()


def bar_columns() -> tuple:
    """The bar's columns, sized so that at 80 columns the count, the time elapsed and the time left stay
    whole: the description and the loss/probe text are the ones cut (with an ellipsis)."""
    return (
        TextColumn(
            "[bold]{task.description}", table_column=Column(max_width=18, no_wrap=True, overflow="ellipsis")
        ),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
    )


@contextlib.contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Bar]:
    if quiet:
        yield Bar(None, None)
        return
    if not on_terminal():
        lines = Lines(total, description)
        try:
            yield lines
        finally:
            lines.close()
        return
    with Progress(*bar_columns(), console=console, transient=False, expand=True) as progress:
        task = progress.add_task(description, total=total, info="")
        yield Bar(progress, task)
