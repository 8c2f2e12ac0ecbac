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

import matplotlib
import numpy as np
import pandas as pd

from ..config import Config
from ..probes.collapse import effective_depth
from ..report import new_figure, save_figure
from ..sweep import grid
from .base import Headline, Study, register_study

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

# Each scale: a base config and its sweep axes (docs/studies/neural_collapse.md §4-5). `tiny` is the CPU check
# (digits, 70/30 stratified split, MLP-L-256, 200 epochs, lr x0.1 at 50% and 75%; `--data mnist1d` runs it on
# MNIST-1D); `small` MNIST with CONV-L-64 (see its weight decay); `paper` the README recipe of the original
# code (its settings file uses milestones 60/100/200 x0.2: `train.milestones=[60,100,200] train.gamma=0.2`).
SCALES: dict[str, dict] = {
    # `learnscope demo`: the tiny recipe at L = 8, clean and with 40 % label noise, for half the epochs.
    "demo": {
        "base": {
            **TINY_BASE,
            "name": "neural_collapse/demo",
            "train": {**TINY_BASE["train"], "epochs": 100, "milestones": [50, 75]},
            "probes": {**TINY_BASE["probes"], "points": 30},
        },
        "axes": {"model.depth": [8], "data.label_noise": [0.0, 0.4]},
    },
    "tiny": {"base": TINY_BASE, "axes": {"model.depth": [8, 12], "data.label_noise": [0.0, 0.2, 0.4]}},
    "small": {
        "base": {
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
        "axes": {"model.depth": [4, 8], "data.label_noise": [0.0, 0.2, 0.4]},
    },
    "paper": {
        "base": {
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
        "axes": {"model.depth": [3, 5, 8, 12, 16, 20], "data.label_noise": [0.0]},
    },
}


def configs(scale: str = "tiny", overrides: tuple[str, ...] = (), axes: dict | None = None) -> list[Config]:
    """The sweep of a scale: its base config with `overrides`, over its axes (or `axes`)."""
    spec = SCALES[scale]
    base = Config.from_dict(spec["base"]).override(*overrides)
    return grid(base, axes or spec["axes"])


def summarise(table: pd.DataFrame, eps: float = 0.01) -> pd.DataFrame:
    """One row per run at its last probe: depth L, label noise, fit, NCC/CDNV per layer, effective depth."""
    rows = []
    for run_id, group in table.groupby("run", sort=False):
        last = group.sort_values("step").iloc[-1]
        depth = int(last["model.depth"])
        ncc = [last[f"train/ncc/{i}"] for i in range(1, depth + 1)]
        rows.append(
            {
                "run": run_id,
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
    and effective depth against L and against label noise."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    clean = table[table["data.label_noise"] == 0.0]
    depths = sorted(clean["model.depth"].unique())
    fig, axes = new_figure(1, len(depths), figsize=(4.2 * len(depths), 3.4), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        rows = clean[(clean["model.depth"] == depth) & (clean["seed"] == clean["seed"].min())].sort_values(
            "step"
        )
        colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, depth))
        # As the paper's Fig. 1: an inset zooms on 0.97-1.0, where eps = 0.01 decides the effective depth.
        inset = ax.inset_axes([0.52, 0.06, 0.45, 0.36])
        found = summary[(summary["L"] == depth) & (summary["noise"] == 0.0)]["effective_depth"].dropna()
        marked = int(found.iloc[0]) if len(found) else None  # the effective depth: its layer drawn bold
        for target, kwargs in ((ax, {}), (inset, {"lw": 0.8})):
            for i in range(1, depth + 1):
                bold = {"lw": 2.8 * kwargs.get("lw", 1.5) / 1.5} if i == marked else {}
                label = f"layer {i}" + (" = effective depth" if i == marked else "")
                target.plot(rows["epoch"], rows[f"train/ncc/{i}"], color=colours[i - 1], label=label,
                            **{**kwargs, **bold})  # fmt: skip
            target.plot(rows["epoch"], rows["train/acc"], "k--", label="network", **kwargs)
        inset.set_xscale("symlog", linthresh=1)
        inset.set_ylim(0.97, 1.002)
        # The last decade of epochs (a run probed only within its first epoch still gets a range).
        last_epoch = max(rows["epoch"].max(), 1.0)
        inset.set_xlim(last_epoch / 10, last_epoch)
        inset.tick_params(labelsize=6)
        inset.grid(alpha=0.3)
        ax.set_xscale("symlog", linthresh=1)
        depth_note = f", effective depth {marked} (ε = 0.01)" if marked else ", no effective depth"
        ax.set_title(f"L = {depth}{depth_note}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("NCC train accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=1 + depths[-1] // 9, loc="upper left", bbox_to_anchor=(1.02, 1))
    paths.append(save_figure(fig, out_dir / "ncc_train_per_layer.png", title))

    fig, ax = new_figure(figsize=(4.8, 3.6))
    for _, row in summary.iterrows():
        style = "-" if row["noise"] == 0 else ":"
        ax.plot(
            range(1, row["L"] + 1),
            row["cdnv_train"],
            style,
            marker="o",
            ms=3,
            label=f"L={row['L']}, noise {row['noise']:.0%}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("CDNV (train) at the end")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    paths.append(save_figure(fig, out_dir / "cdnv_per_layer.png", title))

    # A network whose top layer misses eps is drawn at L + 1 with an open marker (the bootstrap's convention),
    # so "not reached" stays on the figure instead of vanishing as NaN.
    shown = summary.assign(
        reached=summary["effective_depth"].notna(),
        effective_depth=summary["effective_depth"].fillna(summary["L"] + 1),
    )
    fig, axes = new_figure(1, 2, figsize=(8.4, 3.4))
    for noise, group in shown.groupby("noise"):
        agg = group.groupby("L")[["effective_depth", "depth_lo", "depth_hi"]].mean()
        err = [agg["effective_depth"] - agg["depth_lo"], agg["depth_hi"] - agg["effective_depth"]]
        line = axes[0].errorbar(
            agg.index, agg["effective_depth"], yerr=err, capsize=3, label=f"noise {noise:.0%}"
        )
        _depth_markers(axes[0], group, "L", line[0].get_color())
    axes[0].plot(axes[0].get_xlim(), axes[0].get_xlim(), "k:", lw=0.8, label="depth = L")
    axes[0].set_xlabel("L")
    axes[0].set_ylabel("effective depth (90% bootstrap)")
    axes[0].legend(fontsize=7)
    for depth, group in shown.groupby("L"):
        agg = group.groupby("noise")["effective_depth"].mean()
        line = axes[1].plot(agg.index, agg.values, label=f"L = {depth}")
        _depth_markers(axes[1], group, "noise", line[0].get_color())
    axes[1].set_xlabel("label noise")
    axes[1].set_ylabel("effective depth (open: none, L + 1)")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    paths.append(save_figure(fig, out_dir / "effective_depth.png", title))
    return paths


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
        return configs(self.scale, self.overrides)

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
            note = f"test accuracy {rows['test_acc'].mean():.3f}; ε = 0.01"
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
