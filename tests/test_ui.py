"""Progress: a bar on a terminal that keeps its count and time left at 80 columns; plain lines every so often
where there is no terminal (a log, CI); nothing with --quiet."""

import io
import re

from rich.console import Console
from rich.progress import Progress

from learnscope import ui


def test_the_bar_keeps_its_count_and_time_left_at_80_columns():
    out = io.StringIO()
    terminal = Console(file=out, width=80, force_terminal=True, color_system=None)
    with Progress(*ui.bar_columns(), console=terminal, auto_refresh=False, expand=True) as progress:
        task = progress.add_task("a run with a very long name that goes on", total=4000, info="")
        progress.update(task, completed=1234, info="loss 0.1234  test/acc 0.9812 and a long probe text")
        progress.refresh()
    lines = [line for line in out.getvalue().splitlines() if "1234" in line]
    assert lines, out.getvalue()
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", lines[-1]).rstrip()
    assert len(last) <= 80
    assert "1234/4000" in last  # the count whole
    assert len(re.findall(r"\d:\d\d:\d\d|-:--:--", last)) == 2  # elapsed and left, both whole
    assert "a run with" in last and "…" in last  # the long texts are the ones cut


def test_without_a_terminal_a_line_every_so_often_and_one_at_the_end(capsys):
    now = [0.0]
    lines = ui.Lines(100, "sweep", clock=lambda: now[0])
    for t, done in ((1, 10), (6, 20), (7, 30), (8, 50), (40, 60), (41, 70)):
        now[0] = float(t)
        lines.update(done, loss="loss 0.5")
    now[0] = 50.0
    lines.update(100)
    lines.close()
    said = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].split()[0] for line in said] == ["20/100", "50/100", "60/100", "100/100"]
    assert said[0] == "sweep: 20/100 (20%), 0:00:06 elapsed, 0:00:24 left  loss 0.5"
    assert said[-1] == "sweep: 100/100 (100%), 0:00:50 elapsed  loss 0.5"


def test_short_work_without_a_terminal_says_nothing(capsys):
    now = [0.0]
    lines = ui.Lines(10, "run", clock=lambda: now[0])
    for step in range(1, 11):
        now[0] = step * 0.1
        lines.update(step)
    lines.close()
    assert capsys.readouterr().err == ""


def test_quiet_prints_nothing_anywhere(capsys):
    with ui.progress_bar(10, "run", quiet=True) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""
