"""Neural networks trained with SGD learn distributions of increasing complexity (Refinetti, Ingrosso, Goldt,
ICML 2023).

Method. One architecture is trained on a real dataset and on clones of it that keep progressively more of
its class-wise statistics (class means and an isotropic variance; per-feature variances; full covariances;
mixtures of Gaussians per class; samples of a generative model from a file). Every network of a seed starts
from the same initial weights, whatever it is trained on (the model is built from the global RNG seeded with
the run's seed before any data enters it), so all curves of a seed coincide at step 0. All networks are
evaluated on the *real* test set at about 100 log-spaced steps, and their predicted classes there are
recorded. Each run draws its own clone sample (the clone's seed is the run's seed), as in the original, whose
Gaussian pixels came from the unseeded global RNG: the spread over seeds includes the clone's sampling noise.

Analysis. Per clone, with seed-mean real-test accuracies a_real(t) and a_clone(t):

    tracking horizon  = the last probe step t such that a_real(s) - a_clone(s) > tol for every later step s,
                        i.e. the last step before the clone falls more than `tol` below the baseline for good
                        (the last step when it never falls; a dip that recovers is not the horizon),
    interval          = percentile bootstrap over seeds: resample seeds with replacement (pairs: a clone run
                        with the baseline run of the same seed), recompute both means and the horizon,
    final gap         = a_real(T) - a_clone(T), with the spread of the paired per-seed gaps,
    agreement(t)      = fraction of real test samples on which the clone-trained network and the real-trained
                        network of the same seed predict the same class (1 at t = 0).

The claim: clones track the baseline for a number of steps that grows with their fidelity (isotropic <
Gaussian < richer clones), then plateau below it. The figure is the README figure of the original code:
real-test accuracy against SGD steps (log x) with a band over seeds, one line per training distribution,
plus the agreement with the real-trained network.

Training goes through the one train loop and store, the sweep through `learnscope.sweep`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeFloat, PositiveInt

from ..config import Config, Strict
from ..errors import ConfigError, LearnscopeError
from ..report import PALETTE, colour, new_figure, save_figure
from ..store import flatten_config
from .base import Headline, Scale, Study, register_study

# How far the clone's seed-mean real-test accuracy may trail the baseline's before it counts as left behind.
# On MNIST-1D (tiny scale, 2,000 test samples) the paired per-seed gap real - clone scatters by 0.011 (std
# over 3 seeds, early steps), so a 3-seed mean gap has a standard error of about 0.007: 0.04 is six of them
# (five with 2 seeds), not crossed by seed noise alone, and it is the issue's "within 0.04" band for the
# early Gaussian clone. Where a clone leaves slowly the horizon depends on it (MNIST-1D's Gaussian clone
# trails by 0.03-0.07 from step ~80 to ~600); the bootstrap interval shows that. In the original's CIFAR-10
# figure the clones leave the baseline steeply, where the choice matters little (read off the plot).
TOLERANCE = 0.04

# The ladder of clones (options of data kind `clone`); `gmm<k>` and `file:<path>` are also understood.
DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "mean": {"method": "mean"},
    "isotropic": {"method": "isotropic"},  # the original's `gpiso`
    "diagonal": {"method": "diagonal"},
    "gaussian": {"method": "gaussian"},  # the original's `gp`: per class, per channel full covariance
    "gaussian_joint": {"method": "gaussian", "per_channel": False},
}


class StudyOptions(Strict):
    """How the study builds and reads its runs; override with `study.<key>=value` (the training distributions
    and the seeds are its axes: `--axis distribution=real,gaussian,gmm3 --axis seed=0,1`)."""

    real_train: bool = False  # also evaluate every network on the real train set
    clone_test: PositiveInt | None = None  # also a held-out sample of this many from each clone
    clone: dict[str, Any] = {}  # data options shared by every clone (e.g. study.clone.labels=counts)
    tolerance: NonNegativeFloat = TOLERANCE
    bootstrap: PositiveInt = 1000  # resamples of the seeds for the horizon's interval
    level: Annotated[float, Field(gt=0, lt=1)] = 0.9  # of the interval


def check_distributions(names: list[str]) -> None:
    """The axis `distribution`: known names, unique, with the real data (the baseline) among them."""
    if "real" not in names:
        raise ConfigError(f"--axis distribution must include 'real', the baseline; got {','.join(names)}")
    for name in names:
        try:
            clone_options(name)
        except ValueError as exc:
            raise ConfigError(f"--axis distribution: {exc}") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"--axis distribution: names must be unique, got {','.join(names)}")


# The CPU check (docs/studies/increasing_complexity.md §6): MNIST-1D (12,000 generated samples, 10,000
# train / 2,000 test, standardised), MLP 40-512-10, SGD(0.05, 0.9, wd 5e-4), batch 128, 4,000 steps at a
# constant rate; the demo cuts it short.
TINY_BASE = {
    "name": "increasing_complexity/tiny",
    "data": {"kind": "mnist1d", "num_samples": 12000, "train_split": 10000 / 12000},
    "model": {"kind": "mlp", "depth": 1, "width": 512},
    "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {"steps": 4000, "batch_size": 128, "checkpoint_every": 0},
    "probes": {
        "schedule": ["log"],
        "points": 100,
        "batch_size": 2000,
        "use": [{"kind": "evaluation"}, {"kind": "predictions"}],
    },
}

# Each scale: the real-data config (every clone wraps its `data` as its source), the axes (training
# distributions, seeds) and the study's options. Clone labels are uniform i.i.d. draws, as the original's.
DISTRIBUTIONS_SHOWN = ["real", "gaussian", "isotropic"]
SCALES: dict[str, Scale] = {
    # What `learnscope demo` runs (about a minute on 2 CPU cores): the tiny scale's data, model and optimiser,
    # cut to 1,500 steps, 50 log-spaced probes, 3 seeds and no real-train evaluation. By step 1,500 both
    # clones have left the baseline in order of fidelity (isotropic after ~20 steps, Gaussian after ~70) and
    # flattened below it; 3 seeds make the bootstrap interval of a horizon more than the two seeds' own.
    "demo": Scale(
        note="`learnscope demo`: the tiny scale cut to 1,500 steps",
        base={
            **TINY_BASE,
            "name": "increasing_complexity/demo",
            "train": {**TINY_BASE["train"], "steps": 1500},
            "probes": {**TINY_BASE["probes"], "points": 50},
        },
        axes={"distribution": DISTRIBUTIONS_SHOWN, "seed": [0, 1, 2]},
        options=StudyOptions(clone_test=2000, clone={"labels": "uniform"}),
    ),
    "tiny": Scale(
        note="the CPU check: MLP 40-512-10 on MNIST-1D, 4,000 steps",
        base=TINY_BASE,
        axes={"distribution": DISTRIBUTIONS_SHOWN, "seed": [0, 1, 2]},
        options=StudyOptions(real_train=True, clone_test=2000, clone={"labels": "uniform"}),
    ),
    # The bundled MNIST test split (first 8,000 of t10k train, the rest test), padded to 32x32 for the
    # original's LeNet, with the original's recipe: SGD(0.05, 0.9, 5e-4), cosine stepped per epoch.
    "small": Scale(
        note="LeNet on the bundled MNIST test split, 30 epochs",
        base={
            "name": "increasing_complexity/small",
            "data": {
                "kind": "mnist",
                "train_prefix": "t10k",
                "split_at": 8000,
                "pad": 2,
            },
            "model": {"kind": "lenet"},
            "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "train": {
                "epochs": 30,
                "batch_size": 128,
                "schedule": "cosine",
                "schedule_per_epoch": True,
                "checkpoint_every": 0,
            },
            "probes": {
                "schedule": ["log"],
                "points": 100,
                "batch_size": 1000,
                "use": [{"kind": "evaluation"}, {"kind": "predictions"}],
            },
        },
        axes={"distribution": ["real", "gaussian", "diagonal", "isotropic"], "seed": [0, 1, 2]},
        options=StudyOptions(clone_test=2000, clone={"labels": "uniform"}),
    ),
    # The README figure (docs/studies/increasing_complexity.md §5-6): ResNet-18 on CIFAR-10, SGD(0.05, 0.9,
    # wd 5e-4), batch 128, cosine over 50 epochs stepped per epoch (19,550 steps), random crop (padding 4) and
    # flip on real and clone images alike, evaluation at ~100 log-spaced steps; the clone's own test set of
    # 10,000 as the original logs it.
    # Add the WGAN or cifar5m samples with `--axis distribution=real,gaussian,isotropic,file:<path>`.
    "paper": Scale(
        note="ResNet-18 on CIFAR-10, 50 epochs (the original's README figure)",
        base={
            "name": "increasing_complexity/paper",
            "data": {"kind": "cifar10", "path": "data/cifar-10-batches-py", "crop_padding": 4, "flip": True},
            "model": {"kind": "resnet18"},
            "optim": {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "train": {
                "epochs": 50,
                "batch_size": 128,
                "schedule": "cosine",
                "schedule_per_epoch": True,
                "checkpoint_every": 2000,
            },
            "probes": {
                "schedule": ["log"],
                "points": 100,
                "batch_size": 1000,
                "use": [{"kind": "evaluation"}, {"kind": "predictions"}],
            },
        },
        axes={"distribution": DISTRIBUTIONS_SHOWN, "seed": [0, 1, 2]},
        options=StudyOptions(clone_test=10000, clone={"labels": "uniform"}),
    ),
}


# --- the runs ----------------------------------------------------------------------------------------------


def clone_options(name: str) -> dict[str, Any] | None:
    """The `clone` data options of a training distribution's name; None for the real data."""
    if name == "real":
        return None
    if name in DISTRIBUTIONS:
        return dict(DISTRIBUTIONS[name])
    if name.startswith("gmm") and name[3:].isdigit() and int(name[3:]) >= 1:
        return {"method": "gmm", "components": int(name[3:])}
    if name.startswith("file:") and len(name) > 5:
        return {"method": "file", "path": name[5:]}
    known = ", ".join(["real", *DISTRIBUTIONS, "gmm<k>", "file:<path>"])
    raise ValueError(f"unknown training distribution {name!r}; known: {known}")


def distribution_of(row: Mapping[str, Any]) -> str:
    """The name of the training distribution of a run, from its dotted config keys (a `load_runs` row)."""
    if row.get("data.kind") != "clone":
        return "real"
    method = row.get("data.method")
    if method == "file":
        return f"file:{row.get('data.path')}"
    if method == "gmm":
        return f"gmm{int(row.get('data.components'))}"
    per_channel = row.get("data.per_channel")
    if method == "gaussian" and isinstance(per_channel, bool | np.bool_) and not per_channel:
        return "gaussian_joint"
    return str(method)


def configs(
    scale: str = "tiny", overrides: tuple[str, ...] = (), axes: dict[str, list] | None = None
) -> list[Config]:
    """Every run of a scale: each training distribution x each seed, in that order.

    `overrides`: `study.<key>=v` set the StudyOptions (e.g. `study.clone.labels=counts` every clone's data
    option); anything else the base config, whose `data` is the real dataset (`data=digits`,
    `data.num_samples=4000`, `model.width=256`, `train.steps=500`). `axes` replace the distributions and
    seeds ({"distribution": ["real", "gmm3"], "seed": [0]})."""
    return IncreasingComplexity(scale, overrides, axes).configs()


def _config(base: Config, name: str, seed: int, opts: StudyOptions, run_name: str) -> Config:
    """The run of distribution `name` at `seed`: the same model, optimiser and schedule as the baseline's,
    the same init seed; a clone wraps the real data as its source, and every run reports the real test set."""
    raw = base.to_dict()
    raw["seed"] = seed
    raw["name"] = run_name
    clone = clone_options(name)
    sets = ["test"]
    if clone is not None:
        raw["data"] = {"kind": "clone", "source": raw["data"], **opts.clone, **clone, "seed": seed}
        if opts.clone_test is not None and clone["method"] != "file":
            raw["data"]["test_n"] = opts.clone_test
            sets.append("clone_test")
    if opts.real_train:
        sets.append("train" if clone is None else "real_train")
    evaluations = [p for p in raw["probes"]["use"] if p["kind"] == "evaluation"]
    if not evaluations:
        raise ConfigError("probes.use: the study reads the real test set through the 'evaluation' probe")
    for probe in evaluations:
        probe["sets"] = sets
    return Config.from_dict(raw)


# --- the analysis ------------------------------------------------------------------------------------------


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (distribution, seed, step) of a `load_runs` table: real-test accuracy, the real train
    and the clone's own test accuracy where measured, and the encoded real-test predictions."""
    frames = []
    for _, group in table.groupby("run", sort=False):
        first = group.iloc[0]
        name = distribution_of(first)
        real_train = "train/acc" if name == "real" else "real_train/acc"
        frame = pd.DataFrame(
            {
                "distribution": name,
                "seed": int(first["seed"]),
                "step": group["step"].astype(int).to_numpy(),
                "test_acc": group["test/acc"].to_numpy(float),
                "real_train_acc": _column(group, real_train),
                "clone_test_acc": _column(group, "clone_test/acc"),
                "pred": group["test/pred"].to_numpy() if "test/pred" in group else None,
            }
        )
        frames.append(frame)
    if not frames:
        raise LearnscopeError("no runs to analyse")
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["distribution", "seed", "step"], kind="stable").reset_index(drop=True)


def _column(group: pd.DataFrame, name: str) -> np.ndarray:
    return group[name].to_numpy(float) if name in group else np.full(len(group), np.nan)


def accuracy_matrix(curves: pd.DataFrame, name: str, column: str = "test_acc") -> pd.DataFrame:
    """Seeds x steps of one distribution (NaN where a run has no probe at that step)."""
    rows = curves[curves["distribution"] == name]
    return rows.pivot_table(index="seed", columns="step", values=column, aggfunc="first")


def paired(curves: pd.DataFrame, name: str, baseline: str = "real") -> tuple[np.ndarray, ...]:
    """(steps, baseline (S, T), clone (S, T)) over the seeds both have and the steps every such run has."""
    a, b = accuracy_matrix(curves, baseline), accuracy_matrix(curves, name)
    seeds = a.index.intersection(b.index)
    steps = a.columns.intersection(b.columns)
    a, b = a.loc[seeds, steps], b.loc[seeds, steps]
    keep = (a.notna() & b.notna()).all(axis=0).to_numpy()
    return steps.to_numpy()[keep], a.to_numpy()[:, keep], b.to_numpy()[:, keep]


# Accuracies are counts over N samples: a gap of exactly the tolerance (80/2000 = 0.04) counts as within it,
# whatever the rounding of the subtraction.
_TIE = 1e-9


def tracking_horizon(steps: np.ndarray, baseline: np.ndarray, clone: np.ndarray, tolerance: float) -> float:
    """The last step at which `clone` is within `tolerance` of `baseline` with it more than `tolerance` behind
    at every later step (accuracy curves at `steps`; the last step if it never falls behind for good; NaN if
    it is behind from the first step on)."""
    within = ~(np.asarray(baseline) - np.asarray(clone) > tolerance + _TIE)
    idx = np.flatnonzero(within)
    return float(steps[idx[-1]]) if len(idx) else float("nan")


def bootstrap_horizon(
    steps: np.ndarray,
    baseline: np.ndarray,
    clone: np.ndarray,
    tolerance: float,
    resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the horizon of the seed means, seeds (rows of the paired (S, T) baseline and
    clone accuracies) resampled with replacement. Its ends are probe steps."""
    baseline, clone = np.asarray(baseline, float), np.asarray(clone, float)
    S = len(baseline)
    idx = np.random.default_rng(seed).integers(S, size=(resamples, S))
    gap = baseline[idx].mean(1) - clone[idx].mean(1)  # (resamples, T)
    within = ~(gap > tolerance + _TIE)
    any_within = within.any(1)
    last = within.shape[1] - 1 - np.argmax(within[:, ::-1], axis=1)
    horizons = np.where(any_within, np.asarray(steps, float)[last], np.nan)
    if np.isnan(horizons).all():
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    lo = np.nanquantile(horizons, tail, method="lower")
    hi = np.nanquantile(horizons, 1 - tail, method="higher")
    return float(lo), float(hi)


def agreement_curves(curves: pd.DataFrame, baseline: str = "real") -> pd.DataFrame:
    """Per clone, seed and step: the fraction of real test samples on which the clone-trained network and the
    baseline network of the same seed predict the same class. Rows named `<baseline> (seeds)`: the mean over
    pairs of different seeds of the baseline, the agreement of two real-trained networks (a yardstick)."""
    from ..probes.predictions import decode_predictions  # torch: not at the top (`learnscope study list`)

    if curves["pred"].isna().all():
        return pd.DataFrame(columns=["distribution", "seed", "step", "agreement"])
    decoded = {
        key: np.stack([decode_predictions(p) for p in group["pred"]])
        for key, group in curves.dropna(subset=["pred"]).groupby(["distribution", "seed"])
    }
    steps_of = {
        key: group["step"].to_numpy()
        for key, group in curves.dropna(subset=["pred"]).groupby(["distribution", "seed"])
    }
    rows = []

    def compare(a, b, label, seed):
        common, ia, ib = np.intersect1d(steps_of[a], steps_of[b], return_indices=True)
        agree = (decoded[a][ia] == decoded[b][ib]).mean(1)
        rows.extend(
            {"distribution": label, "seed": seed, "step": s, "agreement": v}
            for s, v in zip(common, agree, strict=True)
        )

    for name, seed in decoded:
        if name != baseline and (baseline, seed) in decoded:
            compare((name, seed), (baseline, seed), name, seed)
    base_seeds = sorted(s for n, s in decoded if n == baseline)
    for s, t in combinations(base_seeds, 2):
        compare((baseline, s), (baseline, t), f"{baseline} (seeds)", s)
    table = pd.DataFrame(rows)
    if len(table) and (table["distribution"] == f"{baseline} (seeds)").any():
        cross = table["distribution"] == f"{baseline} (seeds)"
        mean = table[cross].groupby("step", as_index=False)["agreement"].mean()
        mean["distribution"], mean["seed"] = f"{baseline} (seeds)", -1
        table = pd.concat([table[~cross], mean], ignore_index=True)
    return table


def summarise(
    table: pd.DataFrame,
    tolerance: float = TOLERANCE,
    resamples: int = 1000,
    level: float = 0.9,
    order: list[str] | None = None,
) -> pd.DataFrame:
    """One row per training distribution: seeds, final real-test accuracy (seed mean and std), the real train
    and own-test accuracies where measured, and for clones the tracking horizon with its bootstrap interval,
    the final gap to the baseline and the prediction agreement with it at the horizon and at the end. The
    baseline's row holds, as agreement, that of real-trained networks of different seeds (a yardstick)."""
    data = curves(table)
    agree = agreement_curves(data)
    names = list(dict.fromkeys([*(order or []), *data["distribution"].unique()]))
    names = [n for n in names if (data["distribution"] == n).any()]
    if "real" not in names:
        raise LearnscopeError("the runs hold no baseline trained on the real data")
    rows = []
    for name in names:
        runs = data[data["distribution"] == name]
        last = runs.loc[runs.groupby("seed")["step"].idxmax()]
        row: dict[str, Any] = {
            "distribution": name,
            "seeds": len(last),
            "final_step": int(last["step"].max()),
            "final_acc": last["test_acc"].mean(),
            "final_acc_std": last["test_acc"].std(ddof=1) if len(last) > 1 else 0.0,
            "final_real_train_acc": last["real_train_acc"].mean(),
            "final_clone_test_acc": last["clone_test_acc"].mean(),
        }
        if name == "real":
            ref = agree[agree["distribution"] == "real (seeds)"] if len(agree) else agree
            row["agreement_final"] = ref.loc[ref["step"].idxmax(), "agreement"] if len(ref) else np.nan
            rows.append(row)
            continue
        steps, base, clone = paired(data, name)
        horizon = tracking_horizon(steps, base.mean(0), clone.mean(0), tolerance) if len(steps) else np.nan
        lo, hi = (
            bootstrap_horizon(steps, base, clone, tolerance, resamples, level)
            if len(steps)
            else (np.nan,) * 2
        )
        gaps = base[:, -1] - clone[:, -1] if len(steps) else np.array([np.nan])
        mine = (
            agree[(agree["distribution"] == name)].groupby("step")["agreement"].mean() if len(agree) else None
        )
        row |= {
            "horizon": horizon,
            "horizon_lo": lo,
            "horizon_hi": hi,
            "tracks_to_end": bool(len(steps) and horizon == steps[-1]),
            "final_gap": gaps.mean(),
            "final_gap_std": gaps.std(ddof=1) if len(gaps) > 1 else 0.0,
            "agreement_at_horizon": _at(mine, horizon),
            "agreement_final": _at(mine, steps[-1] if len(steps) else np.nan),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _at(series: pd.Series | None, step: float) -> float:
    if series is None or not len(series) or not np.isfinite(step) or step not in series.index:
        return np.nan
    return float(series.loc[step])


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as text: accuracy as mean +- std over seeds, horizons with their interval."""

    def fmt(v, spec=".3f"):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)

    lines = [
        f"{'distribution':<16} {'seeds':>5} {'step':>6} {'real test acc':>15} {'real train':>10} "
        f"{'own test':>8} {'horizon [interval]':>20} {'final gap':>15} {'agree@hor':>9} {'agree@end':>9}"
    ]
    for _, r in summary.iterrows():
        horizon = "-"
        if "horizon" in r and np.isfinite(r.get("horizon", np.nan)):
            horizon = f"{r['horizon']:.0f} [{fmt(r['horizon_lo'], '.0f')}, {fmt(r['horizon_hi'], '.0f')}]"
            horizon += "+" if r["tracks_to_end"] else ""
        gap = "-"
        if np.isfinite(r.get("final_gap", np.nan)):
            gap = f"{r['final_gap']:+.3f} ± {r['final_gap_std']:.3f}"
        lines.append(
            f"{r['distribution']:<16} {r['seeds']:>5} {r['final_step']:>6} "
            f"{r['final_acc']:>7.3f} ± {r['final_acc_std']:.3f} {fmt(r['final_real_train_acc']):>10} "
            f"{fmt(r['final_clone_test_acc']):>8} {horizon:>20} {gap:>15} "
            f"{fmt(r.get('agreement_at_horizon', np.nan)):>9} {fmt(r.get('agreement_final', np.nan)):>9}"
        )
    lines.append(
        "horizon: last step before the seed-mean real-test accuracy falls for good more than the tolerance "
        "below the baseline's (+: never falls); agreement: with the real-trained network of the same seed "
        "(real row: real networks of different seeds)"
    )
    return "\n".join(lines)


# --- the headline numbers ----------------------------------------------------------------------------------

# The original's README figure (ResNet-18 on CIFAR-10, docs/studies/increasing_complexity.md §6), read off
# the plot: steps a clone tracks the baseline and final real-test accuracy. Its "tracking" is read by eye,
# not with `TOLERANCE`. Clones from files are matched by name in their path (`file:.../cifar5m.npz`).
PAPER_FIGURE: dict[str, dict[str, float | str]] = {
    "real": {"final_acc": 0.90},
    "gaussian": {"horizon": 50.0, "final_acc": "0.25-0.28"},
    "wgan": {"horizon": 1000.0, "final_acc": "0.63-0.65"},
    "cifar5m": {"horizon": 2000.0, "final_acc": 0.85},
}


def _paper_key(name: str) -> str | None:
    if name in PAPER_FIGURE:
        return name
    if name.startswith("file:"):
        return next((k for k in ("wgan", "cifar5m") if k in name.lower()), None)
    return None


def headlines(
    summary: pd.DataFrame, comparable: bool, tolerance: float = TOLERANCE, level: float = 0.9
) -> list[Headline]:
    """The tracking horizon of each clone (the Gaussian clone's first: the paper's effect in one number),
    then the final real-test accuracy of each training distribution; beside them the README figure's numbers
    where the runs are its setting (`comparable`: ResNet-18 on CIFAR-10), else the note says what it shows."""
    rows = {r["distribution"]: r for _, r in summary.iterrows()}
    clones = [n for n in rows if n != "real"]
    clones.sort(key=lambda n: n != "gaussian")  # stable: the Gaussian clone first, the others as listed

    def paper(name: str, what: str) -> tuple[float | str | None, str]:
        key = _paper_key(name)
        figure = PAPER_FIGURE.get(key, {}).get(what) if key else None
        if figure is None:
            return None, "the paper's figure gives no number for it"
        if comparable:
            return figure, "paper: read off the original's README figure"
        shown = f"{figure:g}" if isinstance(figure, float) else figure
        return None, f"the paper gives none at this scale (ResNet-18 on CIFAR-10: {shown})"

    out = []
    for name in clones:
        r = rows[name]
        horizon, lo, hi = (float(r.get(k, np.nan)) for k in ("horizon", "horizon_lo", "horizon_hi"))
        figure, about = paper(name, "horizon")
        note = f"SGD steps at tolerance {tolerance:g}"
        if np.isfinite(lo):
            note += f", {level:.0%} bootstrap interval over {int(r['seeds'])} seeds [{lo:.0f}, {hi:.0f}]"
        note += "; never fell behind (the last step)" if r.get("tracks_to_end") else ""
        out.append(
            Headline(
                f"steps the {name} clone tracks the real-data baseline",
                horizon if np.isfinite(horizon) else "none (behind from the first probe)",
                figure,
                f"{note}; {about}",
            )
        )
    for name in ["real", *clones]:
        r = rows[name]
        figure, about = paper(name, "final_acc")
        trained_on = "the real data" if name == "real" else f"the {name} clone"
        spread = f"std {float(r['final_acc_std']):.3f} over {int(r['seeds'])} seeds"
        note = f"at step {int(r['final_step'])}, {spread}"
        out.append(
            Headline(
                f"final real-test accuracy, trained on {trained_on}",
                float(r["final_acc"]),
                figure,
                f"{note}; {about}",
            )
        )
    return out


# --- the figure --------------------------------------------------------------------------------------------


def figures(
    data: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: str | Path,
    title: str = "",
    tolerance: float = TOLERANCE,
) -> list[Path]:
    """The README figure of the original: real-test accuracy vs SGD step (log x), a line per training
    distribution (seed mean) with a min-max band over seeds and each clone's horizon (dashed, its bootstrap
    interval shaded); and the agreement of predictions with the real-trained network of the same seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(summary["distribution"])
    clones = [n for n in names if n != "real"]
    # Okabe-Ito: the baseline black (the palette's last), the clones its colours in order.
    colours = {"real": PALETTE[-1]} | {n: colour(i % (len(PALETTE) - 1)) for i, n in enumerate(clones)}
    agree = agreement_curves(data)
    fig, axes = new_figure(1, 2, figsize=(10.5, 3.9))
    ax = axes[0]
    for name in names:
        m = accuracy_matrix(data, name)
        steps = m.columns.to_numpy()
        ax.plot(steps, m.mean(axis=0), color=colours[name], lw=1.5, label=f"{name} ({len(m)} seeds)")
        ax.fill_between(steps, m.min(axis=0), m.max(axis=0), color=colours[name], alpha=0.2, lw=0)
    for _, r in summary.iterrows():
        if r["distribution"] != "real" and np.isfinite(r.get("horizon", np.nan)):
            c = colours[r["distribution"]]
            ax.axvline(r["horizon"], color=c, ls="--", lw=1)
            if np.isfinite(r["horizon_lo"]):
                ax.axvspan(r["horizon_lo"], r["horizon_hi"], color=c, alpha=0.08, lw=0)
    ax.set_ylabel("test accuracy (real test set)")
    ax.set_title(f"mean, min-max band over seeds; dashed: horizon (tol {tolerance:g})", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax = axes[1]
    for name in names:
        rows = agree[agree["distribution"] == name] if len(agree) else agree
        if not len(rows):
            continue
        g = rows.groupby("step")["agreement"]
        steps = g.mean().index.to_numpy()
        ax.plot(steps, g.mean(), color=colours[name], lw=1.5, label=name)
        ax.fill_between(steps, g.min(), g.max(), color=colours[name], alpha=0.2, lw=0)
    cross = agree[agree["distribution"] == "real (seeds)"] if len(agree) else agree
    if len(cross):
        ax.plot(cross["step"], cross["agreement"], color="grey", ls=":", label="real vs real, other seed")
    ax.set_ylabel("agreement with the real-trained network")
    ax.set_title("fraction of real test samples predicted alike (same seed)", fontsize=8)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=1)  # log, with step 0 at the left edge
        ax.set_xlim(left=0)
        ax.set_xlabel("SGD steps (log)")
        ax.grid(alpha=0.3)
    return [save_figure(fig, out_dir / "accuracy_vs_step.png", title)]


@register_study
class IncreasingComplexity(Study):
    """The runs of a scale; the summary (tracking horizons, agreement) with the scale's `study.*` options;
    the accuracy figure; the curves (without predictions) as an extra table."""

    name = "increasing_complexity"
    paper = (
        "Refinetti, Ingrosso, Goldt 2023: Neural networks trained with SGD learn distributions of increasing "
        "complexity"
    )
    scales = SCALES
    Options = StudyOptions
    axis_help = {
        "distribution": "the training data: real, or a clone ("
        + ", ".join([*DISTRIBUTIONS, "gmm<k>", "file:<path>"])
        + ")",
    }

    def configs(self) -> list[Config]:
        """Each training distribution x each seed, from the base config (the real data set)."""
        check_distributions(self.axes["distribution"])
        base = Config.from_dict(self.base)
        return [
            _config(base, p["distribution"], p["seed"], self.options, self.run_name(p)) for p in self.points()
        ]

    def axis_values(self, config: Config) -> dict:
        return {"distribution": distribution_of(flatten_config(config.to_dict())), "seed": config.seed}

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        opts = self.options
        order = self.axes["distribution"]
        return summarise(table, opts.tolerance, opts.bootstrap, opts.level, order=order)

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        return figures(curves(table), summary, out, self.command, self.options.tolerance)

    def format_summary(self, summary: pd.DataFrame) -> str:
        return format_summary(summary)

    def extra_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {"curves": curves(table).drop(columns=["pred"])}

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        # The README figure's numbers compare only with its setting.
        real = next(c for c in self.configs() if c.data.kind != "clone")
        comparable = real.data.kind == "cifar10" and real.model.kind == "resnet18"
        out = headlines(summary, comparable, self.options.tolerance, self.options.level)
        ran = f"{real.model.kind} on {real.data.kind}"  # what ran, as the overrides left it
        return [replace(h, note=f"{ran}; {h.note}") for h in out]
