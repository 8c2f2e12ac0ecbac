"""Figures of runs (metric curves against log-spaced steps, one line per run), grids of samples, and exports
of a run's records (the original clones programme's ten-column log, CSV)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .errors import ConfigError, DataError

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: `learnscope study list` draws none
    from matplotlib.figure import Figure

# Okabe & Ito's colour-blind-safe palette (blue, orange, green, vermillion, purple, sky blue, yellow, black):
# every categorical colour of the library's figures comes from it, in this order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def colour(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **subplots):
    """A figure and its axes (as `Figure.subplots` returns them) on its own Agg canvas: how every figure of
    the library is made. Neither `matplotlib.use` nor pyplot is involved, so the user's backend (a notebook's
    inline one, say) is left as it is and no figure is registered with pyplot's figure manager; the figure is
    freed with its last reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig: Figure, path: Path | BinaryIO, title: str = "") -> Path | BinaryIO:
    """Small title (it carries the command), tight layout, 120 dpi: how every study saves figures. `path`
    may be a binary file object (a PNG is written to it)."""
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=None if isinstance(path, str | Path) else "png")
    return path


LEGEND_ENTRIES = 12  # at most this many lines are named in a legend; "+K more" stands for the rest
# Line styles that, crossed with the palette's colours, tell apart more lines than the palette has colours.
LINESTYLES = ("-", "--", ":", "-.")
X_ORDER = ("t", "step", "epoch")  # the panels of one metric, in this order of their x


def line_style(i: int) -> tuple[str, str]:
    """The i-th line's (colour, line style): the palette's colours first, then again with the next style,
    so that 8 x 4 lines are told apart before a pair repeats."""
    return colour(i), LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]


def run_x(table: pd.DataFrame, x: str | None = None) -> pd.Series:
    """The x key of each row: `x` if given, else its run's clock: `t` for runs that record it (committee
    machines and their ODEs, theory curves), `step` for the others (training runs)."""
    if x is not None:
        return pd.Series(x, index=table.index)
    if "t" not in table or "run" not in table:
        return pd.Series("step" if "t" not in table else "t", index=table.index)
    has_t = table["t"].notna().groupby(table["run"], sort=False).transform("any")
    return pd.Series(np.where(has_t, "t", "step"), index=table.index)


def curve_panels(
    table: pd.DataFrame, metrics: list[str], x: str | None = None
) -> list[tuple[str, str, pd.DataFrame]]:
    """The panels that have data: (metric, x, its rows) for each metric and each x of the runs that record
    it (`run_x`); a run without the metric, or without its x, is in none."""
    xs = run_x(table, x)
    panels = []
    for metric in metrics:
        if metric not in table:
            continue
        has = table[metric].notna()
        keys = sorted(set(xs[has]), key=lambda k: (X_ORDER.index(k) if k in X_ORDER else len(X_ORDER), k))
        for key in keys:
            if key not in table:
                continue
            rows = table[has & (xs == key) & table[key].notna()]
            if len(rows):
                panels.append((metric, key, rows))
    return panels


def plot_curves(
    table: pd.DataFrame,
    metrics: list[str],
    path: str | Path,
    label: str = "run",
    title: str = "",
    x: str | None = None,
) -> Path:
    """A panel per metric (and per x, where runs of several kinds record it) against x on a log axis (0
    drawn at half the smallest positive x, so it stays visible), one line per value of `label`: colours of
    the palette, then line styles (`line_style`), the same for a line in every panel. x is `x` if given,
    else each run's clock (`run_x`: `t` or `step`). Runs with replicas (a `replica` column: committee
    simulations and ODEs) are drawn as the mean over replicas with their range as a band. The legend, right
    of the panels, names the first LEGEND_ENTRIES - 1 lines and counts the others. A DataError when no run
    records a metric: no empty figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(curves_figure(table, metrics, label, x), path, title)


def curves_png(
    table: pd.DataFrame, metrics: list[str], label: str = "run", title: str = "", x: str | None = None
) -> bytes:
    """`plot_curves` as PNG data, written nowhere (what an HTML page embeds)."""
    buffer = io.BytesIO()
    save_figure(curves_figure(table, metrics, label, x), buffer, title)
    return buffer.getvalue()


def curves_figure(
    table: pd.DataFrame, metrics: list[str], label: str = "run", x: str | None = None
) -> Figure:
    """The figure of `plot_curves`. Each panel's means, minima and maxima per (line, x) come from one
    grouping of its rows, so a store of a thousand runs draws in seconds."""
    panels = curve_panels(table, metrics, x)
    if not panels:
        raise DataError(f"nothing to draw: no run records {' or '.join(map(repr, metrics))} against its x")
    fig, axes = new_figure(1, len(panels), figsize=(4.2 * len(panels) + 1.6, 3.4), squeeze=False)
    # Styles, alike in each panel, and legend entries in the labels' natural order (depth=2 before depth=12).
    keys = sorted(table[label].drop_duplicates(), key=_natural_key)
    drawn: dict = {}  # a legend handle per line, in the order of `keys`
    for ax, (metric, key_x, rows) in zip(axes[0], panels, strict=True):
        positive = rows[key_x][rows[key_x] > 0]
        zero_at = 0.5 * float(positive.min()) if len(positive) else 0.5
        by_x = rows.groupby([label, key_x], sort=True)[metric]
        means = dict(list(by_x.mean().groupby(level=0, sort=False)))
        spread = set()
        if "replica" in rows:
            replicas = rows.groupby(label, sort=False)["replica"].nunique()
            spread = set(replicas.index[replicas > 1])
        if spread:
            lows = dict(list(by_x.min().groupby(level=0, sort=False)))
            highs = dict(list(by_x.max().groupby(level=0, sort=False)))
        for i, key in enumerate(keys):
            if key not in means:
                continue
            mean = means[key]
            color, style = line_style(i)
            xs = np.maximum(mean.index.get_level_values(1).to_numpy(dtype=float), zero_at)
            (line,) = ax.plot(xs, mean.values, style, marker=".", ms=3, color=color, label=_shown(key))
            drawn.setdefault(i, line)
            if key in spread:
                ax.fill_between(xs, lows[key].values, highs[key].values, color=color, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel(f"{key_x} (log; 0 drawn at {zero_at:.3g})")
        ax.set_ylabel(metric)
        if len(panels) > 1 and sum(m == metric for m, _, _ in panels) > 1:
            ax.set_title(f"{metric} of the runs that record {key_x}", fontsize=9)
        ax.grid(alpha=0.3)
    handles = [drawn[i] for i in sorted(drawn)]
    names = [h.get_label() for h in handles]
    if len(handles) > LEGEND_ENTRIES:
        more = len(handles) - (LEGEND_ENTRIES - 1)
        from matplotlib.lines import Line2D

        handles = [*handles[: LEGEND_ENTRIES - 1], Line2D([], [], linestyle="none")]
        names = [*names[: LEGEND_ENTRIES - 1], f"+{more} more"]
    # Outside the data: beside the last panel (save_figure's tight layout makes room for it).
    axes[0][-1].legend(
        handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0
    )
    return fig


def _natural_key(value) -> tuple:
    """A label's sort key with its runs of digits as numbers: "depth=2" before "depth=12"."""
    parts = re.split(r"(\d+)", str(value))
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _shown(value) -> str:
    """A config value as a label shows it: an integer-valued float (a column that is missing in some runs
    is float: `model.depth` 12.0) as the integer."""
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def run_labels(table: pd.DataFrame, key: str | None = None) -> pd.Series:
    """A legend label per row: the config value `key` (dotted) if given, else the run's name, followed where
    runs share a name by the config values that tell them apart (e.g. `method=ode`), else the short hash.

    A config value is a column constant within every run; only the columns that differ between runs of one
    name are checked for that, each once, so that a table of a thousand runs is labelled in a second."""
    if key is not None:
        if key not in table:
            raise ConfigError(f"--label {key!r}: no such config key in these runs")
        return table[key].map(_shown)
    per_run = table.groupby("run", sort=False).first()
    names = (
        per_run["name"].fillna("").astype(str) if "name" in per_run else pd.Series("", index=per_run.index)
    )
    # Values compared in a hashable form: config lists of tables (`probes.use`) are tuples of dicts, which
    # pandas cannot count.
    per_run_comparable = per_run.assign(
        **{k: per_run[k].map(_comparable) for k in per_run.columns if per_run[k].dtype == object}
    )
    config_columns = table.attrs.get("config_columns")  # load_runs says which columns are the config's
    candidates = [
        k
        for k in per_run.columns
        if k not in ("name", "status") and (config_columns is None or k in config_columns)
    ]
    constant: dict[str, bool] = {}

    def is_config(column: str) -> bool:  # constant within each run: a config key, not a record
        if column not in constant:
            values = _comparable_column(table[column])
            constant[column] = bool(values.groupby(table["run"], sort=False).nunique(dropna=False).max() <= 1)
        return constant[column]

    labels = {}
    for name, runs in per_run.groupby(names, sort=False):
        differing = []
        if len(runs) > 1:
            shown = per_run_comparable.loc[runs.index, candidates].astype(str)
            differing = [k for k in candidates if shown[k].nunique() > 1 and is_config(k)]
        for run, row in runs.iterrows():
            extra = (
                " ".join(f"{k}={_shown(row[k])}" for k in differing)
                if differing
                else (run[:8] if len(runs) > 1 else "")
            )
            labels[run] = f"{name} {extra}".strip() or run[:8]
    return table["run"].map(labels)


def _comparable_column(column: pd.Series) -> pd.Series:
    """`_comparable` of each value of an object column, computed once per distinct object (a config column
    repeats one object per run over its rows); other columns as they are."""
    if column.dtype != object:
        return column
    values = column.tolist()
    ids = list(map(id, values))
    distinct = dict(zip(ids, values, strict=True))  # every value is alive, so ids tell objects apart
    shown = {i: _comparable(v) for i, v in distinct.items()}
    return pd.Series(list(map(shown.__getitem__, ids)), index=column.index, dtype=object)


def _comparable(value):
    """A dict, tuple or list (which may hold dicts) as its canonical JSON; anything else as it is."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_html(
    table: pd.DataFrame, figures: list[Path | bytes], metrics: list[str], path: Path, title: str
) -> Path:
    """One self-contained HTML page: the figures (files, or PNG data) embedded as PNG data, and a table of
    the runs (hash, label, status, the last value of each metric; a corrupt run's reason beside its status).
    Nothing in it is fetched or executed."""
    first = table.drop_duplicates("run")
    present = [m for m in metrics if m in table]
    last = table.groupby("run", sort=False)[present].last() if present else None  # last non-missing
    rows = []
    for run, label, status, error in zip(
        first["run"],
        first["label"],
        first["status"] if "status" in first else [""] * len(first),
        first["error"] if "error" in first else [None] * len(first),
        strict=True,
    ):
        shown = f"{status}: {error}" if status == "corrupt" and isinstance(error, str) else status or ""
        cells = [run[:12], label, shown]
        values = [last.at[run, m] if m in present else None for m in metrics]
        cells += [f"{v:.6g}" if _is_number(v) else "" for v in values]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "label", "status", *metrics])
    images = "".join(
        f'<img alt="{html.escape("figure" if isinstance(f, bytes) else f.name)}" src="data:image/png;base64,'
        f'{base64.b64encode(f if isinstance(f, bytes) else f.read_bytes()).decode()}">'
        for f in figures
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_STYLE} img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>{images}
<h2>Runs</h2><table><tr>{head}</tr>{"".join(rows)}</table></body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(page))
    return path


def _is_number(value) -> bool:
    """A number to show (NaN and bools are not)."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return number and value == value


# -- samples of a dataset ----------------------------------------------------------------------------------


def plot_sample_grid(
    x,
    y,
    num_classes: int,
    path: str | Path,
    per_class: int = 8,
    title: str = "",
    value_range: tuple[float, float] | None = None,
) -> Path:
    """A row per class of its first `per_class` samples: images (C, H, W) as one mosaic (grey for one
    channel, RGB for three, the channel mean otherwise), signals (C, L) or vectors (D,) as line plots side by
    side. Values map through `value_range` (default: the samples' range) so that rows are comparable."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    scale = hi - lo if hi > lo else 1.0
    rows = [x[y == k][:per_class] for k in range(num_classes)]
    head = 0.3 if title else 0.0
    if x.ndim == 4 and min(x.shape[2:]) > 1:
        c, h, w = x.shape[1:]
        rgb = c == 3
        gap = max(1, min(h, w) // 8)
        mosaic = np.full(
            (num_classes * (h + gap) - gap, per_class * (w + gap) - gap, 3 if rgb else 1), np.nan
        )
        for k, samples in enumerate(rows):
            for j, sample in enumerate(samples):
                cell = sample.transpose(1, 2, 0) if rgb else sample.mean(0)[:, :, None]
                top, left = k * (h + gap), j * (w + gap)
                mosaic[top : top + h, left : left + w] = (cell - lo) / scale
        cell_in = min(0.8, 10 / max(per_class * (w + gap), 1) * w)  # inches per image, at most 10 in wide
        fig, ax = new_figure(figsize=(cell_in * per_class + 0.5, cell_in * num_classes + 0.2 + head))
        if rgb:
            ax.imshow(np.where(np.isnan(mosaic), 1.0, np.clip(mosaic, 0, 1)), interpolation="nearest")
        else:
            import matplotlib

            cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
            ax.imshow(mosaic[:, :, 0], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([k * (h + gap) + (h - 1) / 2 for k in range(num_classes)], map(str, range(num_classes)))
        ax.tick_params(length=0, labelsize=8)
        for spine in ax.spines.values():
            spine.set_visible(False)
    else:
        signals = x.reshape(len(x), 1 if x.ndim <= 2 else x.shape[1], -1)  # (N, channels, length)
        rows = [signals[y == k][:per_class] for k in range(num_classes)]
        length = signals.shape[-1]
        gap = max(1, length // 8)
        fig, axes = new_figure(
            num_classes, 1, figsize=(1.3 * per_class + 0.5, 0.7 * num_classes + 0.2 + head), squeeze=False
        )
        for k, (ax, samples) in enumerate(zip(axes[:, 0], rows, strict=True)):
            for j, sample in enumerate(samples):
                for i, signal in enumerate(sample[:3]):
                    ax.plot(j * (length + gap) + np.arange(length), signal, lw=0.8, color=f"C{i}")
            ax.set_xlim(-gap / 2, per_class * (length + gap) - gap / 2)
            ax.set_ylim(lo - 0.05 * scale, hi + 0.05 * scale)
            ax.set_xticks([j * (length + gap) - gap / 2 for j in range(1, per_class)], [])
            ax.grid(axis="x", color="0.6", lw=0.8)  # a line between neighbouring samples
            ax.tick_params(length=0)
            ax.set_yticks([])
            ax.set_ylabel(str(k), rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - head / fig.get_figheight()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def check_png(path: str | Path) -> None:
    """A figure drawn as PNG: its name is checked before the work that feeds it (a DataError otherwise)."""
    if Path(path).suffix != ".png":
        raise DataError(f"{path}: the grid is drawn as a PNG; its name must end in .png")


def plot_clone_samples(result, cfg, path: str | Path, per_class: int = 8) -> Path:
    """The figure of `learnscope data fit-clone --grid`: `per_class` samples of each class of a built clone
    (the arrays of a `data.clones.CloneResult`, for the clone config `cfg`), on the source's value range so
    that the clone reads against the data it copies."""
    source = result.source.x
    return plot_sample_grid(
        result.sample.x.numpy(),
        result.sample.y.numpy(),
        result.num_classes,
        path,
        per_class=per_class,
        title=f"{cfg.method} clone of {cfg.source.kind}",
        value_range=(float(source.min()), float(source.max())),
    )


# -- export of a run's records -----------------------------------------------------------------------------

# The original programme's log (docs/studies/increasing_complexity.md §5.3): ten comma-separated columns.
DIC_COLUMNS = (
    "epoch",
    "step",
    "train loss",
    "train accuracy",
    "test loss",
    "test accuracy",
    "cifar train loss",
    "cifar train accuracy",
    "cifar test loss",
    "cifar accuracy",
)
EXPORT_FORMATS = ("dic", "csv")


def dic_sources(config: dict) -> tuple[str, ...]:
    """The record key behind each of the ten columns.

    Columns 2-5 are the training distribution's train and test sets, 6-9 the real data's. Without a clone
    both are the real train and test sets (6-9 repeat 2-5, as the original's log). With a clone, 2-3 are the
    clone (`train/*`), 4-5 its held-out sample (`clone_test/*`, recorded when the clone has `test_n`; the
    original fits a second clone on the real test set), 6-7 the real train set (`real_train/*`) and 8-9 the
    real test set (`test/*`). A key a run did not record (`clone_test/*` without `test_n`; a set the
    evaluation probe was told to skip) is written as nan."""
    data = config.get("data") or {}
    kind = data.get("kind") if isinstance(data, dict) else data
    real = ("train/loss", "train/acc", "test/loss", "test/acc")
    if kind == "clone":
        clone = ("train/loss", "train/acc", "clone_test/loss", "clone_test/acc")
        return ("epoch", "step", *clone, "real_train/loss", "real_train/acc", "test/loss", "test/acc")
    return ("epoch", "step", *real, *real)


def dic_table(config: dict, records: list[dict]) -> pd.DataFrame:
    """The original's ten columns from our records, one row per record (a key it lacks: nan). `epoch` is
    ours, fractional (steps / steps per epoch); the original wrote the 1-based epoch in progress."""
    import numpy as np

    sources = dic_sources(config)
    rows = [[r.get(key, np.nan) for key in sources] for r in records if "step" in r]
    table = pd.DataFrame(rows, columns=list(DIC_COLUMNS), dtype=float)
    table["step"] = table["step"].astype(int)
    return table


def dic_log(config: dict, records: list[dict], run: str = "") -> str:
    """The original's log file: four `#` header lines, then `epoch, step, ` and eight `%.4g` values per line
    (loadable with `np.loadtxt(f, delimiter=",")`, as the original's)."""
    table = dic_table(config, records)
    data = config.get("data") or {}
    model = config.get("model") or {}
    clone = data.get("method") if data.get("kind") == "clone" else None
    dataset = (data.get("source") or {}).get("kind", "?") if clone else data.get("kind", "?")
    nan_columns = [str(i) for i, name in enumerate(DIC_COLUMNS) if table[name].isna().all()]
    nan_note = f"; nan columns: {', '.join(nan_columns)}" if nan_columns else ""
    legend = ", ".join(f"({i}) {name}" for i, name in enumerate(DIC_COLUMNS))
    lines = [
        f"# Distributions of increasing complexity (learnscope run {run or '?'}{nan_note})",
        f"# Dataset: {dataset}, clone: {clone}, model {model.get('kind', '?')}",
        f"# Arguments: {json.dumps(config, sort_keys=True)}",
        f"# {legend}",
    ]
    for row in table.itertuples(index=False):
        values = ", ".join(f"{v:.4g}" for v in row[2:])
        lines.append(f"{row[0]:.4g}, {row[1]}, {values}")
    return "\n".join(lines) + "\n"


def records_csv(records: list[dict]) -> str:
    """Every record as a CSV row (step and epoch first, then the keys in the order they first appear)."""
    table = pd.DataFrame(records)
    first = [c for c in ("step", "epoch") if c in table]
    table = table[first + [c for c in table.columns if c not in first]]
    return table.to_csv(index=False)


def export_run(path: str | Path, fmt: str) -> str:
    """A stored run's records as text: `dic` (the original's ten-column log) or `csv` (all records)."""
    from .errors import ConfigError
    from .store import read_run

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    body, _, records = read_run(Path(path))
    if fmt == "csv":
        return records_csv(records)
    return dic_log(body.get("config", {}), records, body.get("hash", Path(path).name))


# -- the study report: one self-contained page of the studies recorded in a store ---------------------------

VERSIONS = ("learnscope", "torch", "numpy", "python")
PROBLEM_COLUMNS = ("run", "name", "state", "error")

PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
.meta{color:#555;font-size:90%} code,pre{background:#f4f4f4;padding:1px 4px;font-size:88%}
pre{padding:.6em;overflow-x:auto;white-space:pre}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:3px 9px;text-align:left;
font-size:92%;vertical-align:top} th{background:#f0f0f0}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:85%;color:#555}
.failed{color:#D55E00;font-weight:bold} .done{color:#009E73;font-weight:bold}
"""


def load_study_records(store: str | Path) -> list[dict]:
    """The studies recorded in a store, in the order of their files' names. A record that cannot be read, or
    breaks the rules of one (`study_record_problem`), is `{"study": <its file's stem>, "state": "corrupt",
    "error": <why, one line>}`: the report shows it as such beside the others."""
    from .store import STUDY_RECORDS, StoreError, read_json

    records = []
    for path in sorted((Path(store) / STUDY_RECORDS).glob("*.json")):
        try:
            record = read_json(path)
        except StoreError as exc:
            error = f"study record {exc}"
        else:
            problem = study_record_problem(record)
            if problem is None:
                records.append(record)
                continue
            error = f"study record {path}: {problem}"
        records.append({"study": path.stem, "state": "corrupt", "error": " ".join(error.split())})
    return records


# What each key of a study record must be (studies.base.run_study writes them): absent, or of this type.
STUDY_RECORD_TYPES = {
    "study": str,
    "scale": str,
    "state": str,
    "paper": str,
    "command": str,
    "out": str,
    "error": str,
    "text": str,
    "machine": dict,
    "wall_s": int | float,
    "runs": list,
    "headlines": list,
    "problems": list,
    "figures": list,
    "overrides": list,
}
STUDY_RECORD_ITEMS = {"runs": dict, "headlines": dict, "problems": dict, "figures": str, "overrides": str}


def study_record_problem(record) -> str | None:
    """What breaks the rules of a study record (None: nothing): an object with a `study` name, each key of
    STUDY_RECORD_TYPES of its type (the items of its lists too), figures named as files of its `out`."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    if not isinstance(record.get("study"), str) or not record["study"]:
        return "has no 'study' name: not a study record"
    for key, kind in STUDY_RECORD_TYPES.items():
        if key in record and not isinstance(record[key], kind):
            return f"{key!r} is {_clip(record[key])}, not {_TYPE_NAMES.get(key, 'a string')}"
    for key, kind in STUDY_RECORD_ITEMS.items():
        bad = [item for item in record.get(key, ()) if not isinstance(item, kind)]
        if bad:
            return f"{key!r} holds {_clip(bad[0])}, not {'an object' if kind is dict else 'a string'}"
    if any("/" in name or name in ("", ".", "..") for name in record.get("figures", ())):
        return "'figures' names a file outside its folder"
    return None


_TYPE_NAMES = {"machine": "an object", "wall_s": "a number", **dict.fromkeys(STUDY_RECORD_ITEMS, "a list")}


def _clip(value, width: int = 40) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(head: Sequence[str], rows: list[list[str]]) -> str:
    """An HTML table; the cells are HTML already (escaped by the caller)."""
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _figure_html(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        return f'<p class="failed">figure {html.escape(str(path))} is missing</p>'
    kind = {".png": "image/png", ".svg": "image/svg+xml"}.get(path.suffix)
    if kind is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(name)}" src="data:{kind};base64,{data}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
    )


def _study_section(record: dict, store: Path) -> str:
    name, scale = record["study"], record.get("scale", "?")
    state = record.get("state", "done")
    if state == "corrupt":  # a record that cannot be read: its file and why
        return (
            f'<h2 id="{html.escape(f"{name}-{scale}")}">{html.escape(name)}</h2>\n'
            f'<p class="failed">corrupt: {html.escape(record.get("error", ""))}</p>'
        )
    machine = record.get("machine") or {}
    versions = ", ".join(f"{k} {machine[k]}" for k in VERSIONS if k in machine)
    cpus, processor, device = (machine.get(k, "?") for k in ("cpus", "processor", "device"))
    wall = record.get("wall_s")
    took = f"{wall:.0f} s wall this time" if isinstance(wall, int | float) else "wall time unknown"
    runs = len(record.get("runs") or []) or record.get("configs", "?")
    where = f"{cpus} CPUs ({processor}), device {device}"
    meta = [f"{runs} runs", took, where, versions, machine.get("date", "")]
    status = "done" if state == "done" else "failed"
    rerun = f"{record.get('command', '')} --store {store}"
    parts = [
        f'<h2 id="{html.escape(f"{name}-{scale}")}">{html.escape(name)} <small>({html.escape(scale)} scale)'
        "</small></h2>",
        f"<p>{html.escape(record.get('paper', ''))}</p>",
        f'<p class="meta">State: <span class="{status}">{html.escape(state)}</span> · '
        + " · ".join(html.escape(str(m)) for m in meta if m)
        + "</p>",
        f"<p>Rerun: <code>{html.escape(rerun)}</code></p>",
    ]
    if state != "done":
        parts.append(f'<p class="failed">{html.escape(record.get("error", ""))}</p>')
    headlines = record.get("headlines") or []
    if headlines:
        rows = [
            [_cell(h.get(k)) for k in ("name", "value", "paper")] + [_cell(h.get("note", ""))]
            for h in headlines
        ]
        parts.append(f"<h3>Headline numbers</h3>{_table(('quantity', 'here', 'paper', 'note'), rows)}")
    folder = Path(record.get("out", ""))
    figures = "".join(_figure_html(folder, f) for f in record.get("figures") or [])
    if figures:
        parts.append(f"<h3>Figures</h3>{figures}")
    problems = record.get("problems") or []
    if problems:
        table = _table(PROBLEM_COLUMNS, [[_cell(p.get(k)) for k in PROBLEM_COLUMNS] for p in problems])
        parts.append(f"<h3>Runs that did not finish cleanly</h3>{table}")
    if record.get("text"):
        text = html.escape(record["text"])
        parts.append(f"<details><summary>Summary table</summary><pre>{text}</pre></details>")
    overrides = record.get("overrides") or []
    if overrides:
        parts.append(f'<p class="meta">Overrides: <code>{html.escape(" ".join(overrides))}</code></p>')
    return "\n".join(parts)


def study_report_html(records: list[dict], store: str | Path, title: str) -> str:
    """One self-contained page: a contents table (study, scale, state, first headline), then per study what
    was run, its headline numbers beside the paper's, its figures (embedded) and any runs that failed or
    diverged. Plain HTML and CSS: nothing fetched, nothing executed."""
    store = Path(store)
    contents = []
    for r in records:
        first = (r.get("headlines") or [{}])[0]
        headline = f"{_cell(first.get('name'))}: {_cell(first.get('value'))}" if first else ""
        if first and first.get("paper") is not None:
            headline += f" (paper {_cell(first.get('paper'))})"
        anchor = html.escape(f"{r['study']}-{r.get('scale', '?')}")
        link = f'<a href="#{anchor}">{html.escape(r["study"])}</a>'
        contents.append([link, _cell(r.get("scale")), _cell(r.get("state", "done")), headline])
    sections = "\n".join(_study_section(r, store) for r in records)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{PAGE_STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">Store <code>{html.escape(str(store))}</code>; written by <code>learnscope report</code>.</p>
{_table(("study", "scale", "state", "headline"), contents)}
{sections}
</body></html>
"""


def write_study_report(
    store: str | Path, path: str | Path, title: str = "", records: list[dict] | None = None
) -> Path:
    """The study report of a store (or of the given `records`) as `path`, written atomically."""
    records = load_study_records(store) if records is None else records
    if not records:
        raise ConfigError(
            f"no studies recorded in {store} (run `learnscope study NAME --store {store}` first)"
        )
    page = study_report_html(records, store, title or f"learnscope: {len(records)} studies in {store}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(page))
    return path
