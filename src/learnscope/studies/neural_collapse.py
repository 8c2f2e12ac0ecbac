"""Intermediate neural collapse and effective depth (Galanti, Galanti, Ben-Shaul, TMLR 2023).

Method. Deep classifiers (MLP-L-W: L x [Linear -> BN -> ReLU] + head; CONV-L-W: a 2x2-stride-2 stem, then
L x [3x3 conv -> BN -> ReLU] + head) are trained to fit their data, optionally with a fraction of the training
labels moved to other classes. At scheduled steps the collapse probe measures, for every layer i (the i-th
Linear/conv output, before BN), the class-distance normalised variance CDNV_i and the accuracy of the
nearest-class-centre classifier NCC_i built on the training features. The eps-effective depth is the lowest
layer from which on every layer classifies the training set by NCC with error <= eps. The claim: it is smaller
than L and roughly independent of L for clean labels, and it grows with label noise.

This module holds the configs at each scale, the analysis of a finished sweep and the figures; training goes
through the one train loop and store, the sweep through `learnscope.sweep`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..report import colour, new_figure, save_figure
from ..sweep import grid
from .base import Headline, Scale, Study, register_study

# The CPU check (docs/studies/neural_collapse.md §5); the demo cuts it to one depth, two noise levels and half
# the epochs.
TINY_BASE = {
    "name": "neural_collapse/tiny",
    "data": {"kind": "digits", "test_fraction": 0.3},
    "model": {"kind": "mlp", "width": 256, "batchnorm": True},
    "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {
        "epochs": 200,
        "batch_size": 128,
        "drop_last": True,
        "schedule": "multistep",
        "milestones": [100, 150],
        "gamma": 0.1,
        "checkpoint_every": 0,
    },
    "probes": {
        "schedule": ["log"],
        "points": 40,
        "batch_size": 2000,
        "use": [{"kind": "evaluation"}, {"kind": "collapse", "eps": 0.01}],
    },
}

# Each scale: a base config and its axes (docs/studies/neural_collapse.md §4-5). `tiny` is the CPU check
# (digits, 70/30 stratified split, MLP-L-256, 200 epochs, lr x0.1 at 50% and 75%; `--data mnist1d` runs it on
# MNIST-1D); `small` MNIST with CONV-L-64 (see its weight decay); `paper` the README recipe of the original
# code (its settings file uses milestones 60/100/200 x0.2: `train.milestones=[60,100,200] train.gamma=0.2`).
SCALES: dict[str, Scale] = {
    "demo": Scale(
        note="`learnscope demo`: the tiny recipe at L = 8, clean and 40 % label noise, half the epochs",
        base={
            **TINY_BASE,
            "name": "neural_collapse/demo",
            "train": {**TINY_BASE["train"], "epochs": 100, "milestones": [50, 75]},
            "probes": {**TINY_BASE["probes"], "points": 30},
        },
        axes={"model.depth": [8], "data.label_noise": [0.0, 0.4], "seed": [0]},
    ),
    "tiny": Scale(
        note="the CPU check: MLP-L-256 on digits, 200 epochs",
        base=TINY_BASE,
        axes={"model.depth": [8, 12], "data.label_noise": [0.0, 0.2, 0.4], "seed": [0]},
    ),
    "small": Scale(
        note="CONV-L-64 on the bundled MNIST test split, 100 epochs",
        base={
            "name": "neural_collapse/small",
            "data": {
                "kind": "mnist",
                "train_prefix": "t10k",
                "split_at": 8000,
                "subset_per_class": 200,
                "pad": 2,
            },
            "model": {"kind": "conv", "width": 64},
            # wd 5e-3, not the recipe's 5e-4: collapse after the fit proceeds on a time scale of ~1/(lr wd)
            # steps; at 5e-4 a CPU budget ends long before it (top NCC .993, layer 4 .942 at L = 8).
            "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
            "train": {
                "epochs": 100,
                "batch_size": 128,
                "drop_last": True,
                "schedule": "multistep",
                "warmup": 2,
                "milestones": [50, 75],
                "gamma": 0.1,
                "checkpoint_every": 500,
            },
            "probes": {
                "schedule": ["log"],
                "points": 30,
                "batch_size": 1000,
                "use": [{"kind": "evaluation"}, {"kind": "collapse", "eps": 0.01}],
            },
        },
        axes={"model.depth": [4, 8], "data.label_noise": [0.0, 0.2, 0.4], "seed": [0]},
    ),
    "paper": Scale(
        note="CONV-L-400 on CIFAR-10, 500 epochs (the original's README recipe)",
        base={
            "name": "neural_collapse/paper",
            "data": {"kind": "cifar10", "path": "data/cifar-10-batches-py", "crop_padding": 4, "flip": True},
            "model": {"kind": "conv", "width": 400},
            "optim": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
            "train": {
                "epochs": 500,
                "batch_size": 128,
                "schedule": "multistep",
                "milestones": [60, 120, 160],
                "gamma": 0.1,
                "checkpoint_every": 2000,
            },
            "probes": {
                "schedule": ["log", "epochs"],
                "points": 60,
                "batch_size": 500,
                "use": [{"kind": "evaluation"}, {"kind": "collapse", "eps": 0.01}],
            },
        },
        axes={"model.depth": [3, 5, 8, 12, 16, 20], "data.label_noise": [0.0], "seed": [0]},
    ),
}


def configs(
    scale: str = "tiny", overrides: tuple[str, ...] = (), axes: dict[str, list] | None = None
) -> list[Config]:
    """The runs of a scale: its base config with `overrides`, over its axes (with `axes` replacing some)."""
    return NeuralCollapse(scale, overrides, axes).configs()


def summarise(table: pd.DataFrame, eps: float = 0.01) -> pd.DataFrame:
    """One row per run at its last probe: depth L, label noise, fit, NCC/CDNV per layer, effective depth."""
    from ..probes.collapse import effective_depth  # torch: not at the top (`learnscope study list`)

    rows = []
    for run_id, group in table.groupby("run", sort=False):
        last = group.sort_values("step").iloc[-1]
        depth = int(last["model.depth"])
        ncc = [last[f"train/ncc/{i}"] for i in range(1, depth + 1)]
        rows.append(
            {
                "run": run_id,
                "data": str(last.get("data.kind", "")),
                "model": f"{last.get('model.kind', '')}-{depth}-{last.get('model.width', '')}",
                "L": depth,
                "noise": float(last.get("data.label_noise", 0.0)),
                "seed": int(last["seed"]),
                "train_acc": last["train/acc"],
                "test_acc": last["test/acc"],
                "effective_depth": effective_depth(ncc, eps),
                "depth_lo": last.get("train/effective_depth_lo"),
                "depth_hi": last.get("train/effective_depth_hi"),
                "ncc_train": ncc,
                "ncc_test": [last[f"test/ncc/{i}"] for i in range(1, depth + 1)],
                "cdnv_train": [last[f"train/cdnv/{i}"] for i in range(1, depth + 1)],
            }
        )
    return pd.DataFrame(rows).sort_values(["noise", "L", "seed"]).reset_index(drop=True)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as text: per-layer lists printed compactly."""
    shown = summary.drop(columns=["run"]).copy()
    for column in ("ncc_train", "ncc_test", "cdnv_train"):
        shown[column] = shown[column].apply(lambda v: " ".join(f"{x:.3f}" for x in v))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def figures(table: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path, title: str = "") -> list[Path]:
    """Fig. 1 of the paper (NCC train accuracy per layer vs epoch, a panel per L), CDNV per layer at the end,
    and effective depth against L and against label noise. Across the figures a depth L has one colour of
    the palette and a label-noise level one line style; a panel without data is left out, not drawn empty."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = _Styles(summary)
    return [
        save_figure(_ncc_figure(table, summary), out_dir / "ncc_train_per_layer.png", title),
        save_figure(_cdnv_figure(summary, styles), out_dir / "cdnv_per_layer.png", title),
        save_figure(_depth_figure(summary, styles), out_dir / "effective_depth.png", title),
    ]


class _Styles:
    """A colour of the palette per depth L and a line style per label-noise level, in increasing order."""

    LINESTYLES = ("-", "--", ":", "-.")

    def __init__(self, summary: pd.DataFrame):
        self.depths = sorted(int(d) for d in summary["L"].unique())
        self.noises = sorted(float(n) for n in summary["noise"].unique())

    def colour(self, depth) -> str:
        return colour(self.depths.index(int(depth)))

    def style(self, noise) -> str:
        return self.LINESTYLES[self.noises.index(float(noise)) % len(self.LINESTYLES)]


def _plain_ticks(axis) -> None:
    """Tick labels as plain numbers (0, 1, 10, 100), not powers of ten, and no labels on minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _grid(count: int, width: float, height: float, per_row: int = 3):
    """A figure of `count` panels, at most `per_row` a row; the axes that a last, shorter row does not use
    are removed (no empty panel). Returns the figure and the `count` axes."""
    ncols = min(count, per_row)
    nrows = -(-count // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.remove()
    return fig, flat[:count]


def _ncc_figure(table: pd.DataFrame, summary: pd.DataFrame):
    """NCC train accuracy of every layer against epochs, a panel per depth L, of the clean-label runs (of the
    least noisy ones where no run is clean: the panels say so), one seed each. Each panel has its own colour
    bar of layers 1..L; the effective-depth layer is drawn bold and marked on it."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D

    noise = float(summary["noise"].min())
    chosen = summary[summary["noise"] == noise].sort_values(["L", "seed"]).drop_duplicates("L")
    fig, axes = _grid(len(chosen), 5.0, 3.8)
    for ax, (_, run) in zip(axes, chosen.iterrows(), strict=True):
        depth = int(run["L"])
        rows = table[table["run"] == run["run"]].sort_values("step")
        cmap = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0, 0.9, depth)))
        found = run["effective_depth"]
        marked = None if pd.isna(found) else int(found)  # the effective depth: its layer drawn bold
        # As the paper's Fig. 1: an inset zooms on 0.97-1.0, where eps = 0.01 decides the effective depth.
        inset = ax.inset_axes([0.5, 0.08, 0.46, 0.36])
        for target, lw in ((ax, 1.5), (inset, 0.9)):
            for i in range(1, depth + 1):
                target.plot(rows["epoch"], rows[f"train/ncc/{i}"], color=cmap(i - 1),
                            lw=2.6 * lw if i == marked else lw, zorder=3 if i == marked else 2)  # fmt: skip
            target.plot(rows["epoch"], rows["train/acc"], "--", color="black", lw=lw)
        last_epoch = max(float(rows["epoch"].max()), 1.0)
        inset.set_xscale("log")  # the last decade of epochs (a run probed only in its first epoch gets 0.1-1)
        inset.set_xlim(last_epoch / 10, last_epoch)
        inset.set_xticks([last_epoch / 10, last_epoch])
        _plain_ticks(inset.xaxis)
        inset.set_ylim(0.97, 1.002)
        inset.set_yticks([0.97, 0.98, 0.99, 1.0])
        inset.tick_params(labelsize=7)
        inset.grid(alpha=0.3)
        ax.set_xscale("symlog", linthresh=1)
        _plain_ticks(ax.xaxis)
        ax.set_ylim(None, 1.02)
        noise_note = "" if noise == 0 else f", label noise {noise:.0%} (no clean run)"
        depth_note = f"effective depth {marked}" if marked else "no effective depth"
        ax.set_title(f"L = {depth}{noise_note}: {depth_note} (ε = 0.01)", fontsize=9)
        ax.set_xlabel("epoch (0, then log)")
        ax.set_ylabel("NCC train accuracy")
        ax.grid(alpha=0.3)
        bounds = np.arange(0.5, depth + 1)
        bar = ax.figure.colorbar(
            ScalarMappable(BoundaryNorm(bounds, cmap.N), cmap),
            ax=ax, pad=0.02, fraction=0.05, aspect=25,
        )  # fmt: skip
        every = 1 if depth <= 12 else 2
        ticks = {*range(1, depth + 1, every), *([marked] if marked else [])}
        ticks = sorted(ticks | ({depth} if depth - 1 not in ticks else set()))
        bar.set_ticks(ticks, labels=[f"{t} ◀" if t == marked else str(t) for t in ticks])
        bar.ax.tick_params(labelsize=7, length=2)
        bar.set_label("layer (bold, ◀: the effective depth)", fontsize=8)
    axes[0].legend(
        handles=[Line2D([], [], ls="--", color="black", label="network (train acc.)")],
        fontsize=7,
        loc="upper left",
    )
    return fig


def _cdnv_figure(summary: pd.DataFrame, styles: _Styles):
    """CDNV of each layer on the training set at the last probe, a line per (L, noise): its mean over seeds
    (geometric), their range as a band. Colour: L; line style: noise."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure(figsize=(5.6, 3.8))
    for (depth, noise), rows in summary.groupby(["L", "noise"], sort=True):
        values = np.array(rows["cdnv_train"].tolist(), dtype=float)  # (seeds, layers)
        layers = np.arange(1, int(depth) + 1)
        colour_, style = styles.colour(depth), styles.style(noise)
        ax.plot(layers, np.exp(np.log(values).mean(0)), style, color=colour_, marker="o", ms=3.5, lw=1.6)
        if len(values) > 1:
            ax.fill_between(layers, values.min(0), values.max(0), color=colour_, alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("CDNV (train), last probe")
    ax.grid(alpha=0.3)
    handles, heading = _key(styles)
    ax.legend(handles=handles, title=heading, fontsize=7, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.02, 1), borderaxespad=0)  # fmt: skip
    return fig


def _key(styles: _Styles) -> tuple[list, str | None]:
    """Legend entries and title: a coloured line per depth and a black one per noise level's style; with one
    depth, a line per noise level in its colour; a level that does not vary is the title."""
    from matplotlib.lines import Line2D

    depths, noises = styles.depths, styles.noises
    if len(depths) == 1:
        depth = depths[0]
        keys = [
            Line2D([], [], color=styles.colour(depth), ls=styles.style(n), marker="o", ms=3.5,
                   label=f"L = {depth}, label noise {n:.0%}")
            for n in noises
        ]  # fmt: skip
        return keys, None
    keys = [Line2D([], [], color=styles.colour(d), lw=2.5, label=f"L = {d}") for d in depths]
    if len(noises) == 1:
        return keys, f"label noise {noises[0]:.0%}"
    keys += [Line2D([], [], color="black", ls=styles.style(n), label=f"label noise {n:.0%}") for n in noises]
    return keys, None


def _depth_figure(summary: pd.DataFrame, styles: _Styles):
    """Effective depth against L (a line per noise level) and against label noise (a line per L): a panel
    only where there is more than one L, or more than one noise level, to compare. A network whose top layer
    misses eps is drawn at L + 1 with an open marker (the bootstrap's convention), so "not reached" stays
    on the figure instead of vanishing as NaN."""
    from matplotlib.ticker import MaxNLocator

    shown = summary.assign(
        reached=summary["effective_depth"].notna(),
        effective_depth=summary["effective_depth"].fillna(summary["L"] + 1).astype(float),
        depth_lo=pd.to_numeric(summary["depth_lo"], errors="coerce"),
        depth_hi=pd.to_numeric(summary["depth_hi"], errors="coerce"),
    )
    panels = [p for p, values in (("L", styles.depths), ("noise", styles.noises)) if len(values) > 1] or ["L"]
    fig, axes = _grid(len(panels), 4.6, 3.6)
    for ax, panel in zip(axes, panels, strict=True):
        (_depth_against_l if panel == "L" else _depth_against_noise)(ax, shown, styles)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("effective depth (open: none, at L + 1)")
        ax.grid(alpha=0.3)
    if panels == ["L"] and len(styles.depths) == 1:
        axes[0].set_title("one depth and one noise level: nothing to compare yet", fontsize=8)
    return fig


def _depth_against_l(ax, shown: pd.DataFrame, styles: _Styles) -> None:
    """A black line per noise level (its style) through the mean effective depth at each L, the bootstrap's
    90 % interval as error bars; a marker per network in the colour of its L, a little apart per noise."""
    depths = styles.depths
    gap = min(np.diff(depths), default=1) * 0.06
    for j, (noise, group) in enumerate(shown.groupby("noise", sort=True)):
        shift = (j - (len(styles.noises) - 1) / 2) * gap
        agg, yerr = _mean_and_interval(group, "L")
        ax.errorbar(agg.index + shift, agg["effective_depth"], yerr=yerr, ls=styles.style(noise),
                    color="black", lw=1.2, capsize=3, label=f"label noise {noise:.0%}")  # fmt: skip
        for depth, rows in group.groupby("L"):
            _depth_markers(ax, rows.assign(L=rows["L"] + shift), "L", styles.colour(depth))
    reference = {"color": "0.6", "lw": 0.8, "label": "effective depth = L"}
    if len(depths) > 1:
        ax.plot([depths[0], depths[-1]], [depths[0], depths[-1]], **reference)
    else:
        ax.axhline(depths[0], **reference)
    ax.set_xticks(depths)
    ax.set_xlabel("depth L (marker colour: L)")
    ax.legend(fontsize=7)


def _depth_against_noise(ax, shown: pd.DataFrame, styles: _Styles) -> None:
    """A line per depth L (its colour) through the mean effective depth at each noise level, the bootstrap's
    90 % interval as error bars, a little apart per L."""
    gap = min(np.diff(styles.noises), default=1) * 0.03
    for j, (depth, group) in enumerate(shown.groupby("L", sort=True)):
        shift = (j - (len(styles.depths) - 1) / 2) * gap
        agg, yerr = _mean_and_interval(group, "noise")
        ax.errorbar(agg.index + shift, agg["effective_depth"], yerr=yerr, color=styles.colour(depth), lw=1.6,
                    capsize=3, label=f"L = {depth}")  # fmt: skip
        _depth_markers(ax, group.assign(noise=group["noise"] + shift), "noise", styles.colour(depth))
    ax.set_xticks(styles.noises, [f"{n:.0%}" for n in styles.noises])
    ax.set_xlabel("label noise")
    ax.legend(fontsize=7)


def _mean_and_interval(group: pd.DataFrame, by: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The mean effective depth and bootstrap bounds over the networks at each value of `by`, and the bounds
    as error bar lengths (none where a run has no bounds)."""
    agg = group.groupby(by)[["effective_depth", "depth_lo", "depth_hi"]].mean()
    err = np.array([agg["effective_depth"] - agg["depth_lo"], agg["depth_hi"] - agg["effective_depth"]])
    return agg, np.nan_to_num(err).clip(0)


def _depth_markers(ax, group: pd.DataFrame, x: str, colour) -> None:
    """Filled markers where the effective depth was reached, open ones (at L + 1) where it was not."""
    for reached, rows in group.groupby("reached"):
        ax.plot(
            rows[x], rows["effective_depth"], "o", color=colour, mfc=colour if reached else "white", zorder=3
        )


@register_study
class NeuralCollapse(Study):
    name = "neural_collapse"
    paper = (
        "Galanti, Galanti, Ben-Shaul, TMLR 2023: Comparative generalization bounds for deep neural networks"
    )
    scales = SCALES

    def configs(self) -> list[Config]:
        """The product of the axes over the base config, each run named by its axis values."""
        runs = grid(Config.from_dict(self.base), self.axes)
        return [run.model_copy(update={"name": self.run_name(self.axis_values(run))}) for run in runs]

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        return summarise(table)

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        out = []
        for (depth, noise), rows in summary.groupby(["L", "noise"], sort=True):
            found = rows["effective_depth"].dropna()
            value = (
                f"{found.mean():.3g} of {depth} layers" if len(found) else f"none of {depth} (top NCC > ε)"
            )
            paper = None
            if noise == 0.0 and depth >= 8:
                paper = "≈ 6–7 of L = 8…20 (CONV-L-400, CIFAR-10, Fig. 1)"
            ran = ", ".join(sorted({f"{m} on {d}" for m, d in zip(rows["model"], rows["data"], strict=True)}))
            seeds = f"{len(rows)} seeds" if len(rows) > 1 else f"seed {rows['seed'].iloc[0]}"
            note = f"{ran}, {seeds}; test accuracy {rows['test_acc'].mean():.3f}; ε = 0.01"
            out.append(Headline(f"effective depth, L = {depth}, label noise {noise:.0%}", value, paper, note))
        if summary["noise"].nunique() > 1:
            by_noise = summary.groupby("noise")["effective_depth"].mean()
            rises = bool(by_noise.iloc[-1] > by_noise.iloc[0])
            out.append(Headline("effective depth rises with label noise", "yes" if rises else "no", "yes"))
        # the clean, deepest network first: the number `learnscope demo` prints
        return sorted(out, key=lambda h: ("noise 0%" not in h.name, "rises" in h.name))

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        return figures(table, summary, out, self.command)

    def format_summary(self, summary: pd.DataFrame) -> str:
        return format_summary(summary)
