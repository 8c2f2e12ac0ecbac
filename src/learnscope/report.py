"""Figures of runs: metric curves against log-spaced steps, one line per run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def plot_curves(
    table: pd.DataFrame,
    metrics: list[str],
    path: str | Path,
    label: str = "run",
    title: str = "",
) -> Path:
    """One panel per metric, x = step on a log axis (step 0 drawn at 0.5 so it stays visible)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for key, group in table.groupby(label, sort=False):
            rows = group.dropna(subset=[metric]).sort_values("step")
            ax.plot(rows["step"].clip(lower=0.5), rows[metric], marker=".", ms=3, label=str(key))
        ax.set_xscale("log")
        ax.set_xlabel("step (log; 0 drawn at 0.5)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
