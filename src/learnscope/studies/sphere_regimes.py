"""Training scale-invariant networks on the sphere can happen in three regimes (Kodryan, Lobacheva, Nakhodnov,
Vetrov, NeurIPS 2022).

Method. A fully scale-invariant (SI) network — bias-free layers into BatchNorm without affine parameters, a
fixed head — has a loss that depends only on the direction of its SI weights. Trained by SGD restricted to the
sphere of its initial SI norm at a fixed effective learning rate (ELR; optim kind `sphere_sgd`), it ends in
one of three regimes as the ELR grows (docs/studies/sphere_regimes.md):

    convergence      the training loss falls towards 0, the angle turned per step shrinks
    equilibrium      a stationary, nonzero loss that rises with the ELR, degrees turned per step
    divergence       random guessing: loss at or above chance, accuracy near chance, ~90° per step

Runs: an ELR grid × seeds, every epoch probed (the `sphere` probe: train-mode loss over fixed batches, the
angle per step, the effective gradient norm, the ELR); each run is classified from the shape of its loss over
the second half of training, relative to its own fluctuation, its initial loss and chance (`classify`), and
the two boundaries are then located by bisection in log ELR across seeds (`refine` adds the runs at the
midpoints). Figures: train loss, test error and effective gradient norm against epoch, one line per ELR in
its regime's colour and line style; the diagram of train loss against effective gradient norm.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import Field, PositiveFloat, PositiveInt

from ..config import Config
from ..report import PALETTE, colour, new_figure, save_figure
from ..sections import Strict
from .base import Headline, Scale, Study, register_study

REGIMES = ("convergence", "equilibrium", "divergence")
UNSETTLED = ("not settled", "unclear")  # what `classify` calls a run it cannot place in a regime
# Figures: a regime is a colour and a line style (blue solid, orange dashed, black dotted; the others purple
# dash-dotted), an ELR within it a marker and a lighter shade the higher the ELR.
COLOURS = {"convergence": PALETTE[0], "equilibrium": PALETTE[1], "divergence": PALETTE[7],
           "not settled": PALETTE[4], "unclear": PALETTE[4]}  # fmt: skip
REGIME_LINES = {"convergence": "-", "equilibrium": "--", "divergence": ":", "not settled": "-.",
                "unclear": "-."}  # fmt: skip
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
# The paper's Fig. 1 (ConvNetSI c = 32 on CIFAR-10), as the ELR grid of its analysis notebook splits it.
PAPER_REGIMES = "convergence ≤ 1e-3, equilibrium 2e-3–5e-3, divergence ≥ 5e-2 (ConvNetSI, CIFAR-10)"

# The CPU protocol's run (docs/studies/sphere_regimes.md §5): a fully SI MLP (2 hidden layers of 128, a frozen
# head of norm 10) on the bundled digits, batch 64, 100 epochs.
SI_MLP_DIGITS = {
    "data": {"kind": "digits", "flatten": True},
    "model": {"kind": "mlp_si", "depth": 2, "width": 128, "head_norm": 10.0},
    "train": {"epochs": 100, "batch_size": 64, "drop_last": True, "checkpoint_every": 0},
}


class Finetune(Strict):
    """The fine-tuning protocol: train in equilibrium at ELR `start` for half the epochs, then at `then`;
    against `then` from scratch for as many steps."""

    start: PositiveFloat
    then: PositiveFloat


class AfSweep(Strict):
    """The weight-decay run's _af model on the sphere, at these ELRs for `epochs` epochs: its own
    convergence | equilibrium boundary, against which the weight-decay run's drifting ELR is set."""

    elrs: Annotated[list[PositiveFloat], Field(min_length=2)]
    epochs: PositiveInt


class Options(Strict):
    """The study's options (`study.NAME=value`)."""

    bisect_ratio: Annotated[float, Field(gt=1)] = 2.0  # bisect a boundary until hi/lo is at most this
    finetune: Finetune | None = None
    weight_decay: dict[str, Any] | None = None  # the config of the ordinary lr + wd run (its data and model)
    af_sweep: AfSweep | None = None  # needs weight_decay


# Scales: the base run config; the axes: the ELR grid and the seeds; the options.
SCALES: dict[str, Scale] = {
    "demo": Scale(
        note="`learnscope demo`: the tiny protocol at one ELR deep inside each regime, 2 seeds, no bisection",
        base=SI_MLP_DIGITS,
        axes={"optim.elr": [1e-3, 3e-2, 1.0], "seed": [1, 2]},
        options=Options(bisect_ratio=100.0),
    ),
    "tiny": Scale(
        note="the CPU protocol: an SI MLP on digits, 100 epochs, with the fine-tuning and lr + wd runs",
        base=SI_MLP_DIGITS,
        axes={"optim.elr": [1e-3, 1e-2, 3e-2, 1e-1, 1.0], "seed": [1, 2, 3]},
        options=Options(
            bisect_ratio=2.0,
            # train in equilibrium at ELR 3e-2 for half the epochs, then at 1e-3; against 1e-3 from scratch
            finetune=Finetune(start=3e-2, then=1e-3),
            # ordinary training with weight decay (the "lr + wd" mode) of the same MLP with affine BatchNorm
            # and a trained head: its ELR lr/ρ² drifts up as weight decay shrinks ρ, against the boundaries
            # found above
            weight_decay={
                "data": {"kind": "digits", "flatten": True},
                "model": {"kind": "mlp_si_af", "depth": 2, "width": 128},
                "optim": {"kind": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.01},
                "train": {"epochs": 300, "batch_size": 64, "checkpoint_every": 0},
            },
            # the same _af model on the sphere (its affine BatchNorm and head trained by SGD at the
            # weight-decay run's lr, `other_lr`), swept like the SI model: its own convergence | equilibrium
            # boundary, by bisection, is what the weight-decay run's drifting ELR is set against
            af_sweep=AfSweep(elrs=[3e-3, 1e-2, 3e-2, 1e-1], epochs=100),
        ),
    ),
    # A small ConvNetSI (c = 8) on the MNIST test split bundled with learnscope (8,000 train / 2,000 test),
    # batch 128, no augmentation, 20 epochs, 2 seeds (~50 CPU-minutes with the bisections).
    # The train-mode loss is the training set's measurement, so the eval-mode pass covers the test set only.
    "small": Scale(
        note="a ConvNetSI (c = 8) on the bundled MNIST test split, 20 epochs",
        base={
            "data": {"kind": "mnist", "train_prefix": "t10k", "test_prefix": "t10k", "split_at": 8000},
            "model": {"kind": "convnet_si", "width": 8, "head_norm": 10.0},
            "train": {"epochs": 20, "batch_size": 128, "checkpoint_every": 0},
            "probes": {"schedule": ["epochs"], "use": [{"kind": "evaluation", "sets": ["test"]}, "sphere"]},
        },
        axes={"optim.elr": [1e-3, 1e-2, 1e-1, 1.0, 10.0], "seed": [1, 2]},
        # the equilibrium band of this convnet is narrow: (0.01, 0.03) holds all of it
        options=Options(bisect_ratio=1.5),
    ),
    # The paper's Fig. 1: ConvNetSI (c = 32) on CIFAR-10, batch 128, no augmentation, 1000 epochs.
    "paper": Scale(
        note="the paper's Fig. 1: ConvNetSI (c = 32) on CIFAR-10, 1000 epochs",
        base={
            "data": {"kind": "cifar10", "path": "data/cifar-10-batches-py"},
            "model": {"kind": "convnet_si", "width": 32, "head_norm": 10.0},
            "train": {"epochs": 1000, "batch_size": 128, "checkpoint_every": 3910},
            # every 10 epochs (391 steps each) and at 30 log-spaced steps for the start: the train-mode loss
            # is a forward pass over the whole training set, ~1/2 of an epoch's training on a CPU, so probing
            # every epoch as the original does would cost as much as the training (benchmarks/bench_sphere.py)
            "probes": {
                "schedule": ["log", "every"],
                "points": 30,
                "every": 3910,
                "use": ["evaluation", "sphere"],
            },
        },
        axes={"optim.elr": [1e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 5e-2, 1e-1], "seed": [1, 2, 3]},
        options=Options(bisect_ratio=1.5),
    ),
}
MAX_BISECTIONS = 3  # per boundary: each halves the interval in log ELR


def sphere_config(
    base: dict,
    elr: float,
    seed: int,
    overrides: tuple[str, ...] = (),
    then: float | None = None,
    other_lr: float = 0.0,
) -> Config:
    """A run at a fixed ELR; with `then`, the ELR drops to `then` half-way (the fine-tuning protocol: the
    multistep schedule scales the sphere's lr, so the same number of steps as a run at `then` throughout).
    `other_lr`: the SGD rate of the trainable parameters that are not scale-invariant (an _af model's)."""
    optim = {"kind": "sphere_sgd", "elr": elr} | ({"other_lr": other_lr} if other_lr else {})
    body = {
        **base,
        "name": f"elr={elr:g} seed={seed}" + (f" then {then:g}" if then is not None else ""),
        "seed": seed,
        "optim": optim,
        "probes": base.get("probes", {"schedule": ["epochs"], "use": ["evaluation", "sphere"]}),
    }
    if then is not None:
        epochs = base["train"]["epochs"]
        body["train"] = {
            **base["train"],
            "schedule": "multistep",
            "milestones": [epochs / 2],
            "gamma": then / elr,
        }
    return Config.from_dict(body).override(*overrides)


def sweep_config(sweep: dict, elr: float, seed: int, overrides: tuple[str, ...] = ()) -> Config:
    """A fixed-ELR run of one of the study's sweeps (Study.sweeps)."""
    return sphere_config(sweep["base"], elr, seed, overrides, other_lr=sweep["other_lr"])


# --- the regime of a run ------------------------------------------------------------------------------------
#
# A run's regime is read from the shape of its train-mode loss over the second half of training, measured
# against the run itself, and from its train accuracy against chance: no threshold is a loss in nats, so the
# rules carry to data they were not tuned on (docs/studies/sphere_regimes.md §5). The trend is the fall of
# the log-loss across the second half (the Theil–Sen line, which a few loss spikes near a boundary do not
# tilt) in units of the log-loss's own fluctuation about that line (1.4826 × its median absolute residual).
# Measured on the SI MLP, 100 epochs, 3 seeds: digits at the tiny grid and its bisections (57 runs, with
# the _af model's), MNIST-1D at ELR 1e-4 … 0.3 (24 runs) and at 3e-4 … 1e-2 for 400 epochs:
#   - trend: converging runs 3.9–40 (digits), 6.4–52 (MNIST-1D); stationary runs, equilibrium and
#     divergence, |trend| ≤ 1.34 (digits), ≤ 1.65 (MNIST-1D, where the equilibria at ELR 1e-3 and 3e-3 still
#     settle after 100 epochs: ≤ 0.75 at 400). FLAT = 2: the level moves across the half by less than the
#     width of its ±1 fluctuation band; FALLING = 3, below the slowest converging run; between them (and
#     above FLAT before the run fits its training set) a run is `not settled`.
#   - train accuracy as the fraction of the way from chance (1/C) to 1: diverging runs 0.04–0.17 (digits,
#     ELR 0.1 and 1), 0.03–0.08 (MNIST-1D, 5.48e-2 … 0.3); the equilibria nearest to them 0.23–0.24 (digits
#     5.48e-2) and 0.27–0.28 (MNIST-1D 3e-2): CHANCE between. Falling runs fit 0.95–1 of it: LEARNED below.
#   - the stationary level as a fraction of the loss at initialisation (a random direction's): equilibria
#     0.03–0.16 at their smallest ELR (digits 3e-2, mlp_si_af 5.48e-2, MNIST-1D 1e-3 and 3e-3), converged
#     runs ≤ 3.4e-4: FLOOR between, a factor 10 from each.
MIN_PROBES = 8  # probes in the second half of training below which no trend is read: `unclear`
FALLING = 3.0  # trend above this (in fluctuations): still falling
FLAT = 2.0  # |trend| at most this: stationary
CHANCE = 0.2  # train accuracy below this fraction of the way from chance to 1: guessing (divergence)
LEARNED = 0.9  # a falling run that fits less than this fraction of the way from chance to 1 is `not settled`
FLOOR = 3e-3  # a stationary loss below this fraction of the initial loss is ≈ 0: converged


def window_statistics(run: pd.DataFrame, num_classes: int = 10) -> dict[str, float]:
    """Of one run's records: the means over the third (q3) and last (q4) quarters of training of the
    train-mode loss (and its q4 standard deviation), over q4 of the train accuracy (`above_chance`: as the
    fraction of the way from chance 1/C to 1), the angle per step and the effective gradient norm; the final
    test accuracy; and the shape of the loss over the second half (`loss_shape`)."""
    run = run.sort_values("epoch")
    start = run.loc[run["epoch"] <= 0, "sphere/train_tm_loss"].dropna()
    initial = float(start.iloc[0]) if len(start) else math.nan
    run = run[run["epoch"] > 0]
    last = run["epoch"].max()
    q3 = run[(run["epoch"] > 0.5 * last) & (run["epoch"] <= 0.75 * last)]
    q4 = run[run["epoch"] > 0.75 * last]
    acc = float(q4["sphere/train_tm_acc"].mean())
    out = {
        "q3_loss": float(q3["sphere/train_tm_loss"].mean()),
        "q4_loss": float(q4["sphere/train_tm_loss"].mean()),
        "q4_loss_std": float(q4["sphere/train_tm_loss"].std(ddof=0)),
        "q4_acc": acc,
        "above_chance": _above_chance(acc, num_classes),
        "test_acc": float(run["test/acc"].iloc[-1]) if "test/acc" in run else math.nan,
    }
    for key, column in (("q4_angle", "sphere/angle"), ("q4_grad_norm", "sphere/effective_grad_norm")):
        out[key] = float(q4[column].mean()) if column in q4 else math.nan
    half = run[run["epoch"] > 0.5 * last]
    shape = loss_shape(half["epoch"].to_numpy(float), half["sphere/train_tm_loss"].to_numpy(float))
    reference = initial if math.isfinite(initial) and initial > 0 else math.log(num_classes)
    level = float(q4["sphere/train_tm_loss"].median()) / reference
    return out | shape | {"initial_loss": initial, "level": level}


def loss_shape(epochs: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """The shape of a loss curve (the second half of a run): `drift`, the fall of log-loss across it (the
    Theil–Sen line: the median of the pairwise slopes, so that a few spikes do not tilt it); `fluctuation`,
    the robust spread of log-loss about that line (1.4826 × the median absolute residual: the standard
    deviation for normal noise); `trend` = drift / fluctuation; `probes`, the points read."""
    keep = np.isfinite(loss) & (loss > 0) & np.isfinite(epochs)
    x, y = epochs[keep], np.log(loss[keep])
    out = {"drift": math.nan, "fluctuation": math.nan, "trend": math.nan, "probes": len(x)}
    if len(x) < 3 or x.max() == x.min():
        return out
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    slope = float(np.median((y[j] - y[i])[dx != 0] / dx[dx != 0]))
    residual = y - slope * x
    residual -= np.median(residual)
    fluctuation = max(1.4826 * float(np.median(np.abs(residual))), 1e-6)  # float32 losses: never exactly 0
    drift = -slope * float(x.max() - x.min())
    return out | {"drift": drift, "fluctuation": fluctuation, "trend": drift / fluctuation}


def _above_chance(acc: float, num_classes: int) -> float:
    """An accuracy as the fraction of the way from chance (1/C) to 1."""
    return (acc - 1 / num_classes) / (1 - 1 / num_classes)


def classify(stats: dict[str, float], num_classes: int) -> str:
    """The regime of a run from `window_statistics` (the thresholds and their measurements above):

    convergence  — the loss still falls (trend > FALLING) and the run fits the training set (≥ LEARNED of the
                   way from chance to 1); or it is stationary at ≈ 0 (below FLOOR × the initial loss);
    not settled  — the loss still falls, but slowly (FLAT < trend ≤ FALLING) or before the run has fitted the
                   training set: it may yet converge or stop at an equilibrium (train longer);
    divergence   — random guessing: the train accuracy below CHANCE of the way from chance to 1, and the
                   loss not falling;
    equilibrium  — a stationary (|trend| ≤ FLAT), nonzero loss above chance;
    unclear      — a rising loss, or too few probes (< MIN_PROBES in the second half) to read a trend.

    A loss still falling at the end is never equilibrium, and a loss above ln C alone is not divergence:
    with a head of norm 10 a chaotic run can be confidently wrong on some samples and still classify three
    times better than chance."""
    trend, level, acc = stats["trend"], stats["level"], stats["q4_acc"]
    if stats["probes"] < MIN_PROBES or not all(math.isfinite(v) for v in (trend, level, acc)):
        return "unclear"
    learned = _above_chance(acc, num_classes)
    if trend > FALLING and learned >= LEARNED:
        return "convergence"
    if trend > FLAT:
        return "not settled"
    if learned < CHANCE:
        return "divergence"
    if trend < -FLAT:
        return "unclear"
    return "convergence" if level < FLOOR else "equilibrium"


def run_table(table: pd.DataFrame, classes: int = 10, model: str | None = None) -> pd.DataFrame:
    """One row per run at a fixed ELR (of the model kind `model`, if given): ELR, seed, the window statistics
    and the regime (`classes`: chance is 1/classes)."""
    rows = []
    for run_id, run in _fixed_elr(table, model).groupby("run", sort=False):
        stats = window_statistics(run, classes)
        rows.append(
            {"run": run_id, "elr": float(run["optim.elr"].iloc[0]), "seed": int(run["seed"].iloc[0]), **stats,
             "regime": classify(stats, classes)}
        )  # fmt: skip
    if not rows:
        return pd.DataFrame(columns=["run", "elr", "seed", "regime"])
    return pd.DataFrame(rows).sort_values(["elr", "seed"]).reset_index(drop=True)


def _fixed_elr(table: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """The runs on the sphere at one ELR throughout (not the fine-tuning protocol's, whose ELR drops
    half-way, nor ordinary training with weight decay), of the model kind `model` if given."""
    table = table[table["optim.kind"] == "sphere_sgd"]
    if model is not None:
        table = table[table["model.kind"] == model]
    if "train.schedule" not in table:
        return table
    return table[table["train.schedule"].fillna("constant") == "constant"]


def weight_decay_config(base: dict, seed: int, overrides: tuple[str, ...] = ()) -> Config:
    body = {
        **base,
        "name": f"lr+wd seed={seed}",
        "seed": seed,
        "probes": {"schedule": ["epochs"], "use": ["evaluation", {"kind": "sphere", "grad_batches": 10}]},
    }
    return Config.from_dict(body).override(*overrides)


SPIKE = (
    3.0  # a loss spike: the train-mode loss at least this many times its minimum over the 10 epochs before
)


def weight_decay_table(table: pd.DataFrame, boundary: dict | None) -> pd.DataFrame:
    """Per run of ordinary training with weight decay: the first loss spike after epoch 20 (epoch, loss, the
    ELR lr/ρ² logged there), the ELR it settles at (mean over the second half), each against the
    convergence | equilibrium interval (lo, hi) the sphere sweep located."""
    if "optim.kind" not in table:
        return pd.DataFrame()
    rows = []
    for run_id, run in table[table["optim.kind"] == "sgd"].groupby("run", sort=False):
        run = run[run["epoch"] > 0].sort_values("epoch")
        loss, elr, epoch = (run[c].to_numpy() for c in ("sphere/train_tm_loss", "sphere/elr", "epoch"))
        spikes = [
            i for i in range(10, len(loss)) if epoch[i] > 20 and loss[i] >= SPIKE * loss[i - 10 : i].min()
        ]
        first = spikes[0] if spikes else None
        settled = float(elr[epoch > epoch.max() / 2].mean())
        row = {"run": run_id, "seed": int(run["seed"].iloc[0]), "spikes": len(spikes),
               "first_spike_epoch": float(epoch[first]) if first is not None else math.nan,
               "first_spike_loss": float(loss[first]) if first is not None else math.nan,
               "elr_at_first_spike": float(elr[first]) if first is not None else math.nan,
               "settled_elr": settled}  # fmt: skip
        if boundary is not None:
            row["first_spike / boundary lo"] = row["elr_at_first_spike"] / boundary["lo"]
            row["settled / boundary lo"] = settled / boundary["lo"]
            row["settled / boundary hi"] = settled / boundary["hi"]
        rows.append(row)
    return pd.DataFrame(rows)


def finetune_table(table: pd.DataFrame, finetune: Finetune | None) -> pd.DataFrame:
    """Per seed: the final test accuracy after training in equilibrium then at the small ELR, and after
    training at the small ELR from scratch for as many steps."""
    if finetune is None or "train.schedule" not in table:
        return pd.DataFrame()
    high, low = finetune.start, finetune.then
    last = table.sort_values("step").groupby("run").last()
    protocol = last[(last["train.schedule"] == "multistep") & (last["optim.elr"] == high)]
    scratch = last[(last["train.schedule"].fillna("constant") == "constant") & (last["optim.elr"] == low)]
    rows = []
    for seed in sorted(set(protocol["seed"]) & set(scratch["seed"])):
        a, b = protocol[protocol["seed"] == seed].iloc[0], scratch[scratch["seed"] == seed].iloc[0]
        rows.append({"seed": int(seed), f"test_acc {high:g} then {low:g}": a["test/acc"],
                     f"test_acc {low:g} throughout": b["test/acc"],
                     "train_tm_loss then": a["sphere/train_tm_loss"],
                     "train_tm_loss throughout": b["sphere/train_tm_loss"]})  # fmt: skip
    return pd.DataFrame(rows)


def elr_regimes(runs: pd.DataFrame) -> pd.Series:
    """The regime of each ELR: the one most of its seeds are in (ties: the higher regime, then `not settled`,
    then `unclear`)."""
    order = {r: i for i, r in enumerate((*REGIMES, *UNSETTLED))}

    def majority(regimes: pd.Series) -> str:
        counts = regimes.value_counts()
        best = counts[counts == counts.max()].index
        return max(best, key=lambda r: order[r])

    return runs.groupby("elr")["regime"].agg(majority)


def boundaries(runs: pd.DataFrame) -> list[dict]:
    """Each boundary between consecutive regimes as the interval (lo, hi) of ELRs run: lo the largest ELR in
    the lower regime below the smallest ELR in the upper one."""
    regimes = elr_regimes(runs)
    rank = {regime: i for i, regime in enumerate(REGIMES)}
    out = []
    for lower, upper in itertools.pairwise(REGIMES):
        upper_elrs = [e for e, r in regimes.items() if r in rank and rank[r] >= rank[upper]]
        if not upper_elrs:
            continue
        hi = min(upper_elrs)
        lower_elrs = [e for e, r in regimes.items() if r == lower and e < hi]
        if lower_elrs:
            out.append({"boundary": f"{lower}|{upper}", "lo": float(max(lower_elrs)), "hi": float(hi)})
    return out


@register_study
class SphereRegimes(Study):
    name = "sphere_regimes"
    paper = (
        "Kodryan, Lobacheva, Nakhodnov, Vetrov, NeurIPS 2022: Training scale-invariant neural networks on "
        "the sphere can happen in three regimes"
    )
    scales = SCALES
    Options = Options
    fixed_keys = {
        "optim.kind": "every run is on the sphere (sphere_sgd) at the ELRs of the axis optim.elr",
        "train.schedule": "each run keeps its ELR (the fine-tuning protocol: study.finetune)",
        "train.milestones": "each run keeps its ELR (the fine-tuning protocol: study.finetune)",
        "train.gamma": "each run keeps its ELR (the fine-tuning protocol: study.finetune)",
    }

    def plan(self) -> list[tuple[Config, dict]]:
        """The grid of ELRs x seeds; then the fine-tuning protocol's and the lr + wd runs (shown by name);
        then the _af model's ELR sweep."""
        base, overrides, seeds = self.scales[self.scale].base, self.config_overrides, self.axes["seed"]
        grid = self.points("optim.elr", "seed")
        runs = [(sphere_config(base, p["optim.elr"], p["seed"], overrides), p) for p in grid]
        if self.options.finetune is not None:
            high, low = self.options.finetune.start, self.options.finetune.then
            runs += [(sphere_config(base, high, seed, overrides, then=low), {}) for seed in seeds]
            if low not in self.axes["optim.elr"]:
                runs += [(sphere_config(base, low, seed, overrides), {}) for seed in seeds]
        if self.options.weight_decay is not None:
            runs += [(weight_decay_config(self.options.weight_decay, seed, overrides), {}) for seed in seeds]
        for sweep in self.sweeps()[1:]:
            runs += [
                (sweep_config(sweep, elr, seed, overrides), {"model.kind": sweep["model"], "optim.elr": elr,
                                                             "seed": seed})
                for elr in sweep["elrs"]
                for seed in seeds
            ]  # fmt: skip
        return runs

    def sweeps(self) -> list[dict]:
        """The ELR sweeps on the sphere: the SI model's (every boundary located), then, with `af_sweep`, the
        weight-decay run's _af model's (its convergence | equilibrium boundary only)."""
        base = self.scales[self.scale].base
        out = [{"model": self.model_kind, "base": base, "elrs": self.axes["optim.elr"], "other_lr": 0.0,
                "boundaries": None}]  # fmt: skip
        wd, af = self.options.weight_decay, self.options.af_sweep
        if af is not None and wd is not None:
            model = Config.from_dict({**wd, "name": ""}).override(*self.config_overrides).model.kind
            swept = {**base, "model": wd["model"], "data": wd["data"]}
            swept["train"] = {**base["train"], "epochs": af.epochs}
            only = ["convergence|equilibrium"]
            out.append({"model": model, "base": swept, "elrs": af.elrs, "other_lr": wd["optim"]["lr"],
                        "boundaries": only})  # fmt: skip
        return out

    def refine(self, table: pd.DataFrame) -> list:
        """Bisection in log ELR, per sweep: one midpoint per boundary whose interval is wider than
        `bisect_ratio`, run at every seed, at most MAX_BISECTIONS times per boundary."""
        more = []
        for sweep in self.sweeps():
            runs = run_table(table, model=sweep["model"])
            grid = set(sweep["elrs"])
            for b in boundaries(runs):
                if sweep["boundaries"] is not None and b["boundary"] not in sweep["boundaries"]:
                    continue
                inside = [e for e in runs["elr"].unique() if e not in grid and b["lo"] < e < b["hi"]]
                wide = b["hi"] / b["lo"] > self.options.bisect_ratio
                if not wide or len(_bisections(runs, grid, b)) >= MAX_BISECTIONS or inside:
                    continue  # narrow enough, bisected enough, or a midpoint ran and was 'unclear' inside
                mid = float(np.round(math.sqrt(b["lo"] * b["hi"]), 6))
                more += [sweep_config(sweep, mid, seed, self.config_overrides) for seed in self.axes["seed"]]
        return more

    @property
    def model_kind(self) -> str:
        """The model kind of the SI sweep's runs (as the overrides leave it)."""
        return sphere_config(self.scales[self.scale].base, 1.0, 0, self.config_overrides).model.kind

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        self.finetune = finetune_table(table, self.options.finetune)  # shown by format_summary
        runs = run_table(table, model=self.model_kind)
        self.af_runs = run_table(table, model=self.sweeps()[1]["model"]) if len(self.sweeps()) > 1 else None
        self.wd_boundary = self.weight_decay_boundary(runs)  # shown by format_summary and headlines
        self.weight_decay = weight_decay_table(table, self.wd_boundary)
        self.ran = ran(_fixed_elr(table, self.model_kind))  # what the summary is of: shown by setting
        regimes = elr_regimes(runs)
        grouped = runs.groupby("elr")
        columns = ["q3_loss", "q4_loss", "q4_loss_std", "q4_acc", "test_acc", "q4_angle", "q4_grad_norm",
                   "level", "trend", "above_chance"]  # fmt: skip
        summary = grouped[columns].mean()
        summary["seeds"] = grouped.size()
        summary["regime"] = regimes
        summary["regimes of seeds"] = grouped["regime"].agg(lambda r: ",".join(r))
        return summary.reset_index()

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        shown = " · ".join(f"{e:g} {r}" for e, r in zip(summary["elr"], summary["regime"], strict=True))
        out = [
            Headline("regime of each ELR (majority of seeds)", shown, PAPER_REGIMES, "here: " + self.setting)
        ]
        for b in boundaries(summary.assign(seed=0)):
            interval = f"({b['lo']:.3g}, {b['hi']:.3g})"
            note = "the largest ELR in the lower regime, the smallest in the upper one"
            out.append(Headline(f"{b['boundary']} boundary: ELR interval", interval, note=note))
        for _, row in summary.iterrows():
            if row["regime"] in REGIMES:
                out.append(Headline(
                    f"ELR {row['elr']:g} ({row['regime']}): train loss q4, accuracy, angle per step",
                    f"{row['q4_loss']:.3g}, {row['q4_acc']:.3f}, {row['q4_angle']:.3g}°"))  # fmt: skip
        finetune = getattr(self, "finetune", pd.DataFrame())
        if len(finetune):
            then, throughout = (c for c in finetune.columns if c.startswith("test_acc"))
            out.append(Headline(
                f"fine-tuning: {then} vs {throughout} (mean of seeds)",
                f"{finetune[then].mean():.4f} vs {finetune[throughout].mean():.4f}", "the first is better",
            ))  # fmt: skip
        weight_decay = getattr(self, "weight_decay", pd.DataFrame())
        if len(weight_decay) and "first_spike / boundary lo" in weight_decay:
            ratios = weight_decay["first_spike / boundary lo"].dropna()
            if len(ratios):
                out.append(Headline(
                    "lr + wd: ELR at the first loss spike / convergence | equilibrium boundary (lo) of the "
                    f"{(self.wd_boundary or {}).get('model', '?')} model, range over seeds",
                    f"{ratios.min():.2f}–{ratios.max():.2f}", "≈ 1 (spikes as the ELR leaves convergence)",
                ))  # fmt: skip
        return out

    @property
    def setting(self) -> str:
        """What ran: from the runs' records once `summarise` has read them (their model and data kinds,
        epochs, ELRs, seeds), else the model and data of the scale's base config with the overrides."""
        if getattr(self, "ran", ""):
            return self.ran
        config = sphere_config(self.scales[self.scale].base, 1.0, 0, self.config_overrides)
        return f"{config.model.kind} on {config.data.kind}"

    def format_summary(self, summary: pd.DataFrame) -> str:
        runs = summary.rename(columns={"regimes of seeds": "seeds' regimes"})
        text = runs.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        lines = [f"runs: {self.setting}", text, ""]
        lines.append("boundaries (the largest ELR in the lower regime, the smallest in the upper one):")
        for b in boundaries(summary.assign(regime=summary["regime"], seed=0)):
            lines.append(f"  {b['boundary']:<25} ({b['lo']:.3g}, {b['hi']:.3g})")
        finetune = getattr(self, "finetune", pd.DataFrame())
        if len(finetune):
            lines += ["", "fine-tuning protocol (final test accuracy, same number of steps):"]
            lines.append(finetune.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        af = getattr(self, "af_runs", None)
        if af is not None and len(af):
            regimes = elr_regimes(af)
            lines += [
                "",
                f"the {self.sweeps()[1]['model']} model on the sphere (affine and head at other_lr):",
            ]
            lines.append("  " + ", ".join(f"{e:g} {r}" for e, r in regimes.items()))
            found = _lower_boundary(af)
            if found is not None:
                lines.append(f"  convergence|equilibrium     ({found['lo']:.3g}, {found['hi']:.3g})")
        weight_decay = getattr(self, "weight_decay", pd.DataFrame())
        if len(weight_decay):
            lines += [
                "",
                "ordinary SGD with weight decay (_af model): its drifting ELR against the convergence | "
                f"equilibrium boundary of the {(self.wd_boundary or {}).get('model', '?')} model:",
            ]
            lines.append(
                weight_decay.drop(columns="run").to_string(index=False, float_format=lambda v: f"{v:.4g}")
            )
        return "\n".join(lines)

    def extra_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        tables = {"runs_regimes": run_table(table, model=self.model_kind)}
        if getattr(self, "af_runs", None) is not None:
            tables["af_runs_regimes"] = self.af_runs
        for name in ("finetune", "weight_decay"):
            extra = getattr(self, name, pd.DataFrame())
            if len(extra):
                tables[name] = extra
        return tables

    def weight_decay_boundary(self, runs: pd.DataFrame) -> dict | None:
        """The convergence | equilibrium interval the weight-decay runs are set against: the _af model's own
        (its sphere sweep) where the scale has one, else the SI model's (`runs`); `model` says whose."""
        af = getattr(self, "af_runs", None)
        found = _lower_boundary(af) if af is not None and len(af) else None
        if found is not None:
            return {**found, "model": self.sweeps()[1]["model"]}
        found = _lower_boundary(runs)
        return {**found, "model": self.model_kind} if found is not None else None

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        regimes = dict(zip(summary["elr"], summary["regime"], strict=True))
        probed = _fixed_elr(table, self.model_kind)
        probed = probed[probed["epoch"] > 0]
        curves = probed.groupby(["optim.elr", "epoch"]).mean(numeric_only=True).reset_index()
        paths = [
            training_figure(curves, regimes, out / "regimes.png", self.command),
            diagram_figure(curves, regimes, out / "diagram.png", self.command),
        ]
        if "optim.kind" in table and (table["optim.kind"] == "sgd").any():
            runs = table[table["optim.kind"] == "sgd"]
            boundary = self.weight_decay_boundary(run_table(table, model=self.model_kind))
            paths.append(weight_decay_figure(runs, boundary, out / "weight_decay.png", self.command))
        return paths


def ran(runs: pd.DataFrame) -> str:
    """What a table's runs are, from their records: the model and data kinds, epochs, ELRs and seeds
    (e.g. "mlp_si on mnist1d, 100 epochs, ELR 0.001–1 (7 values), 3 seeds")."""
    if not len(runs):
        return ""

    def kinds(column: str) -> str:
        values = runs[column].dropna().unique() if column in runs else []
        return "/".join(sorted(f"{v:g}" if isinstance(v, float) else str(v) for v in values)) or "?"

    elrs = sorted(runs["optim.elr"].unique())
    shown = f"ELR {elrs[0]:g}" if len(elrs) == 1 else f"ELR {elrs[0]:g}–{elrs[-1]:g} ({len(elrs)} values)"
    return (
        f"{kinds('model.kind')} on {kinds('data.kind')}, {kinds('train.epochs')} epochs, {shown}, "
        f"{runs['seed'].nunique()} seeds"
    )


def _lower_boundary(runs: pd.DataFrame) -> dict | None:
    """The convergence | equilibrium interval, if the sweep located it."""
    found = [b for b in boundaries(runs) if b["boundary"] == "convergence|equilibrium"]
    return found[0] if found else None


def _bisections(runs: pd.DataFrame, grid: set, boundary: dict) -> list[float]:
    """The midpoints already added near this boundary (ELRs not on the grid between its grid neighbours)."""
    below = max((e for e in grid if e <= boundary["lo"]), default=0.0)
    above = min((e for e in grid if e >= boundary["hi"]), default=math.inf)
    return [e for e in runs["elr"].unique() if e not in grid and below < e < above]


def elr_styles(regimes: dict[float, str]) -> dict[float, dict]:
    """Each ELR's style in the figures: its regime's colour and line style (COLOURS, REGIME_LINES), and
    within the regime a marker of its own and a lighter shade the higher the ELR, so that the legend's entry
    for each ELR matches its line."""
    from matplotlib.colors import to_rgb

    out = {}
    for regime in (*REGIMES, *UNSETTLED):
        elrs = sorted(e for e, r in regimes.items() if (r if r in COLOURS else "unclear") == regime)
        for i, elr in enumerate(elrs):
            white = 0.45 * i / max(len(elrs) - 1, 1)
            rgb = [(1 - white) * c + white for c in to_rgb(COLOURS[regime])]
            out[elr] = {"color": tuple(rgb), "ls": REGIME_LINES[regime], "marker": MARKERS[i % len(MARKERS)]}
    return out


def _label(elr: float, regimes: dict) -> str:
    return f"ELR {elr:.3g}  {regimes.get(elr, 'unclear')}"


def _readable_log_ticks(axis) -> None:
    """Plain tick labels on a log axis (0.001, 0.1, 10), at least 3 where the view allows: at each decade,
    else at 1, 2 and 5 times each, else at 1, 1.5, 2, 3, 5 and 7 times each (where matplotlib would label
    the crowded minor ticks, or none)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.autoscale_view()  # the limits of the data drawn (matplotlib computes them lazily)
    lo, hi = axis.get_view_interval()
    choices = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
    subs = choices[-1]
    if lo > 0:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        inside = [sum(lo <= m * 10**d <= hi for d in decades for m in c) for c in choices]
        subs = next((c for c, n in zip(choices, inside, strict=True) if n >= 3), choices[-1])
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def training_figure(curves: pd.DataFrame, regimes: dict, path: Path, title: str = "") -> Path:
    """The paper's Fig. 1: train loss (log), test error and mean effective gradient norm (log) against epoch,
    one line per ELR (mean over seeds) in its regime's colour and line style (`elr_styles`)."""
    fig, axes = new_figure(ncols=3, figsize=(16, 4))
    styles = elr_styles({elr: regimes.get(elr, "unclear") for elr in curves["optim.elr"].unique()})
    for i, (elr, c) in enumerate(curves.groupby("optim.elr")):
        every = max(1, len(c) // 8)  # markers at 8 points, staggered between lines
        style = {**styles[elr], "lw": 1.2, "ms": 4, "markevery": (i * every // 3 % every, every)}
        axes[0].plot(c["epoch"], c["sphere/train_tm_loss"], label=_label(elr, regimes), **style)
        if "test/acc" in c:
            axes[1].plot(c["epoch"], 1 - c["test/acc"], **style)
        if "sphere/effective_grad_norm" in c:
            axes[2].plot(c["epoch"], c["sphere/effective_grad_norm"], **style)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="train loss, nats (BatchNorm in train mode)")
    axes[1].set(xlabel="epoch", ylabel="test error (fraction misclassified)", ylim=(0, 1))
    axes[2].set(yscale="log", xlabel="epoch", ylabel="mean effective gradient norm ρ‖∇L‖")
    for ax in (axes[0], axes[2]):
        _readable_log_ticks(ax.yaxis)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[2].legend(handles, labels, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return save_figure(fig, path, title)


def diagram_figure(curves: pd.DataFrame, regimes: dict, path: Path, title: str = "") -> Path:
    """Train loss against effective gradient norm, one curve per ELR (styled as in `training_figure`), a
    star at its start."""
    fig, ax = new_figure(figsize=(7.5, 4.5))
    styles = elr_styles({elr: regimes.get(elr, "unclear") for elr in curves["optim.elr"].unique()})
    for elr, c in curves.groupby("optim.elr"):
        if "sphere/effective_grad_norm" not in c:
            continue
        every = max(1, len(c) // 6)
        ax.plot(c["sphere/train_tm_loss"], c["sphere/effective_grad_norm"], lw=1, ms=4, markevery=every,
                label=_label(elr, regimes), **styles[elr])  # fmt: skip
        start = c.iloc[0]
        ax.plot(start["sphere/train_tm_loss"], start["sphere/effective_grad_norm"], "*",
                color=styles[elr]["color"], ms=10, mec="white", mew=0.5)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="train loss (★: first epoch)")
    ax.set_ylabel("mean effective gradient norm")
    _readable_log_ticks(ax.xaxis)
    _readable_log_ticks(ax.yaxis)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return save_figure(fig, path, title)


def weight_decay_figure(runs: pd.DataFrame, boundary: dict | None, path: Path, title: str = "") -> Path:
    """Ordinary SGD with weight decay: train loss and the drifting ELR lr/ρ² against epoch, one line per seed,
    the sphere sweep's convergence | equilibrium interval shaded, the first loss spike marked."""
    fig, axes = new_figure(ncols=2, figsize=(11, 4))
    for i, (_, run) in enumerate(runs[runs["epoch"] > 0].groupby("run", sort=False)):
        shade = colour(i)
        axes[0].plot(
            run["epoch"], run["sphere/train_tm_loss"], color=shade, lw=1, label=f"seed {run['seed'].iloc[0]}"
        )
        axes[1].plot(run["epoch"], run["sphere/elr"], color=shade, lw=1)
        spikes = weight_decay_table(run, boundary)
        if len(spikes) and not math.isnan(spikes["first_spike_epoch"].iloc[0]):
            e, elr = spikes["first_spike_epoch"].iloc[0], spikes["elr_at_first_spike"].iloc[0]
            axes[1].plot(e, elr, "v", color=shade, ms=7)
    if boundary is not None:
        label = f"{boundary.get('model', '')} on the sphere: convergence | equilibrium"
        axes[1].axhspan(boundary["lo"], boundary["hi"], color=COLOURS["equilibrium"], alpha=0.2, label=label)
        axes[1].legend(frameon=False, fontsize=8)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="train loss (BatchNorm in train mode)")
    axes[1].set(yscale="log", xlabel="epoch", ylabel="effective learning rate lr/ρ² (▼ first spike)")
    axes[0].legend(frameon=False, fontsize=8)
    return save_figure(fig, path, title)
