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
angle per step, the effective gradient norm, the ELR); each run is classified from windowed statistics of its
loss (`classify`), and the two boundaries are then located by bisection in log ELR across seeds (`refine`
adds the runs at the midpoints). Figures: train loss, test error and effective gradient norm against epoch,
one line per ELR coloured by regime; the diagram of train loss against effective gradient norm.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..report import PALETTE, colour, new_figure, save_figure
from .base import Headline, Study, register_study

REGIMES = ("convergence", "equilibrium", "divergence")
COLOURS = {"convergence": PALETTE[0], "equilibrium": PALETTE[1], "divergence": PALETTE[3], "unclear": "grey"}
LINE_STYLES = ("-", "--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)), (0, (1, 3)))
# The paper's Fig. 1 (ConvNetSI c = 32 on CIFAR-10), as the ELR grid of its analysis notebook splits it.
PAPER_REGIMES = "convergence ≤ 1e-3, equilibrium 2e-3–5e-3, divergence ≥ 5e-2 (ConvNetSI, CIFAR-10)"

# The CPU protocol's run (docs/studies/sphere_regimes.md §5): a fully SI MLP (2 hidden layers of 128, a frozen
# head of norm 10) on the bundled digits, batch 64, 100 epochs.
SI_MLP_DIGITS = {
    "data": {"kind": "digits", "flatten": True},
    "model": {"kind": "mlp_si", "depth": 2, "width": 128, "head_norm": 10.0},
    "train": {"epochs": 100, "batch_size": 64, "drop_last": True, "checkpoint_every": 0},
}

# Scales: the base run config, the ELR grid, seeds, and the bisection's stopping ratio hi/lo.
SCALES: dict[str, dict] = {
    # `learnscope demo`: the tiny protocol at one ELR deep inside each regime, 2 seeds, no bisection.
    "demo": {
        "config": SI_MLP_DIGITS,
        "elrs": [1e-3, 3e-2, 1.0],
        "seeds": [1, 2],
        "bisect_ratio": 100.0,
    },
    # The CPU protocol (SI_MLP_DIGITS).
    "tiny": {
        "config": SI_MLP_DIGITS,
        "elrs": [1e-3, 1e-2, 3e-2, 1e-1, 1.0],
        "seeds": [1, 2, 3],
        "bisect_ratio": 2.0,
        # train in equilibrium at ELR 3e-2 for half the epochs, then at 1e-3; against 1e-3 from scratch
        "finetune": {"from": 3e-2, "to": 1e-3},
        # ordinary training with weight decay (the "lr + wd" mode) of the same MLP with affine BatchNorm and a
        # trained head: its ELR lr/ρ² drifts up as weight decay shrinks ρ, against the boundaries found above
        "weight_decay": {
            "data": {"kind": "digits", "flatten": True},
            "model": {"kind": "mlp_si_af", "depth": 2, "width": 128},
            "optim": {"kind": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.01},
            "train": {"epochs": 300, "batch_size": 64, "checkpoint_every": 0},
        },
        # the same _af model on the sphere (its affine BatchNorm and head trained by SGD at the weight-decay
        # run's lr, `other_lr`), swept like the SI model: its own convergence | equilibrium boundary, by
        # bisection, is what the weight-decay run's drifting ELR is set against
        "af_sweep": {"elrs": [3e-3, 1e-2, 3e-2, 1e-1], "epochs": 100},
    },
    # A small ConvNetSI (c = 8) on the MNIST test split bundled with learnscope (8,000 train / 2,000 test),
    # batch 128, no augmentation, 20 epochs, 2 seeds (~50 CPU-minutes with the bisections).
    # The train-mode loss is the training set's measurement, so the eval-mode pass covers the test set only.
    "small": {
        "config": {
            "data": {"kind": "mnist", "train_prefix": "t10k", "test_prefix": "t10k", "split_at": 8000},
            "model": {"kind": "convnet_si", "width": 8, "head_norm": 10.0},
            "train": {"epochs": 20, "batch_size": 128, "checkpoint_every": 0},
            "probes": {"schedule": ["epochs"], "use": [{"kind": "evaluation", "sets": ["test"]}, "sphere"]},
        },
        "elrs": [1e-3, 1e-2, 1e-1, 1.0, 10.0],
        "seeds": [1, 2],
        "bisect_ratio": 1.5,  # the equilibrium band of this convnet is narrow: (0.01, 0.03) holds all of it
    },
    # The paper's Fig. 1: ConvNetSI (c = 32) on CIFAR-10, batch 128, no augmentation, 1000 epochs.
    "paper": {
        "config": {
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
        "elrs": [1e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 5e-2, 1e-1],
        "seeds": [1, 2, 3],
        "bisect_ratio": 1.5,
    },
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


def window_statistics(run: pd.DataFrame) -> dict[str, float]:
    """Means over the third (q3) and last (q4) quarters of training of the train-mode loss, and over q4 of the
    train accuracy, the angle per step and the effective gradient norm."""
    run = run[run["epoch"] > 0]
    last = run["epoch"].max()
    q3 = run[(run["epoch"] > 0.5 * last) & (run["epoch"] <= 0.75 * last)]
    q4 = run[run["epoch"] > 0.75 * last]
    out = {
        "q3_loss": float(q3["sphere/train_tm_loss"].mean()),
        "q4_loss": float(q4["sphere/train_tm_loss"].mean()),
        "q4_loss_std": float(q4["sphere/train_tm_loss"].std(ddof=0)),
        "q4_acc": float(q4["sphere/train_tm_acc"].mean()),
        "test_acc": float(run["test/acc"].iloc[-1]) if "test/acc" in run else math.nan,
    }
    for key, column in (("q4_angle", "sphere/angle"), ("q4_grad_norm", "sphere/effective_grad_norm")):
        out[key] = float(q4[column].mean()) if column in q4 else math.nan
    return out


def classify(stats: dict[str, float], num_classes: int) -> str:
    """The regime from windowed statistics (the rules of docs/studies/sphere_regimes.md §5):
    divergence — random guessing: the train accuracy within 0.15 of chance (1/C);
    convergence — the loss is below 0.05 and not rising (q4 ≤ q3);
    equilibrium — a nonzero loss that is stationary (q4/q3 within [0.5, 2]);
    anything else (still falling fast, rising) is `unclear`. A loss above ln C alone is not divergence: with
    a head of norm 10 a chaotic run can be confidently wrong on some samples and still classify three times
    better than chance."""
    q3, q4, acc = stats["q3_loss"], stats["q4_loss"], stats["q4_acc"]
    if acc < 1 / num_classes + 0.15:
        return "divergence"
    if q4 < 0.05 and q4 <= q3:
        return "convergence"
    if q3 > 0 and 0.5 <= q4 / q3 <= 2:
        return "equilibrium"
    return "unclear"


def run_table(table: pd.DataFrame, classes: int = 10, model: str | None = None) -> pd.DataFrame:
    """One row per run at a fixed ELR (of the model kind `model`, if given): ELR, seed, the window statistics
    and the regime (`classes`: chance is 1/classes)."""
    rows = []
    for run_id, run in _fixed_elr(table, model).groupby("run", sort=False):
        stats = window_statistics(run)
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


def finetune_table(table: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Per seed: the final test accuracy after training in equilibrium then at the small ELR, and after
    training at the small ELR from scratch for as many steps."""
    if "finetune" not in spec or "train.schedule" not in table:
        return pd.DataFrame()
    high, low = spec["finetune"]["from"], spec["finetune"]["to"]
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
    """The regime of each ELR: the one most of its seeds are in (ties: the higher regime)."""
    order = {r: i for i, r in enumerate((*REGIMES, "unclear"))}

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

    def configs(self) -> list:
        spec = self.scales[self.scale]
        base, overrides = spec["config"], self.overrides
        runs = [sphere_config(base, elr, seed, overrides) for elr in spec["elrs"] for seed in spec["seeds"]]
        if "finetune" in spec:
            high, low = spec["finetune"]["from"], spec["finetune"]["to"]
            runs += [sphere_config(base, high, seed, overrides, then=low) for seed in spec["seeds"]]
            if low not in spec["elrs"]:
                runs += [sphere_config(base, low, seed, overrides) for seed in spec["seeds"]]
        if "weight_decay" in spec:
            runs += [weight_decay_config(spec["weight_decay"], seed, overrides) for seed in spec["seeds"]]
        for sweep in self.sweeps()[1:]:
            runs += [
                sweep_config(sweep, elr, seed, overrides) for elr in sweep["elrs"] for seed in spec["seeds"]
            ]
        return runs

    def sweeps(self) -> list[dict]:
        """The ELR sweeps on the sphere: the SI model's (every boundary located), then, with `af_sweep`, the
        weight-decay run's _af model's (its convergence | equilibrium boundary only)."""
        spec = self.scales[self.scale]
        out = [{"model": spec["config"]["model"]["kind"], "base": spec["config"], "elrs": spec["elrs"],
                "other_lr": 0.0, "boundaries": None}]  # fmt: skip
        if "af_sweep" in spec:
            wd, af = spec["weight_decay"], spec["af_sweep"]
            base = {**spec["config"], "model": wd["model"], "data": wd["data"]}
            base["train"] = {**spec["config"]["train"], "epochs": af["epochs"]}
            only = ["convergence|equilibrium"]
            out.append({"model": wd["model"]["kind"], "base": base, "elrs": af["elrs"],
                        "other_lr": wd["optim"]["lr"], "boundaries": only})  # fmt: skip
        return out

    def refine(self, table: pd.DataFrame) -> list:
        """Bisection in log ELR, per sweep: one midpoint per boundary whose interval is wider than
        `bisect_ratio`, run at every seed, at most MAX_BISECTIONS times per boundary."""
        spec = self.scales[self.scale]
        more = []
        for sweep in self.sweeps():
            runs = run_table(table, model=sweep["model"])
            grid = set(sweep["elrs"])
            for b in boundaries(runs):
                if sweep["boundaries"] is not None and b["boundary"] not in sweep["boundaries"]:
                    continue
                inside = [e for e in runs["elr"].unique() if e not in grid and b["lo"] < e < b["hi"]]
                wide = b["hi"] / b["lo"] > spec["bisect_ratio"]
                if not wide or len(_bisections(runs, grid, b)) >= MAX_BISECTIONS or inside:
                    continue  # narrow enough, bisected enough, or a midpoint ran and was 'unclear' inside
                mid = float(np.round(math.sqrt(b["lo"] * b["hi"]), 6))
                more += [sweep_config(sweep, mid, seed, self.overrides) for seed in spec["seeds"]]
        return more

    @property
    def model_kind(self) -> str:
        return self.scales[self.scale]["config"]["model"]["kind"]

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        self.finetune = finetune_table(table, self.scales[self.scale])  # shown by format_summary
        runs = run_table(table, model=self.model_kind)
        self.af_runs = run_table(table, model=self.sweeps()[1]["model"]) if len(self.sweeps()) > 1 else None
        self.wd_boundary = self.weight_decay_boundary(runs)  # shown by format_summary and headlines
        self.weight_decay = weight_decay_table(table, self.wd_boundary)
        regimes = elr_regimes(runs)
        grouped = runs.groupby("elr")
        columns = ["q3_loss", "q4_loss", "q4_loss_std", "q4_acc", "test_acc", "q4_angle", "q4_grad_norm"]
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
        model = self.scales[self.scale]["config"]["model"]
        data = self.scales[self.scale]["config"]["data"]["kind"]
        return f"{model['kind']} on {data}"

    def format_summary(self, summary: pd.DataFrame) -> str:
        runs = summary.rename(columns={"regimes of seeds": "seeds' regimes"})
        text = runs.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        lines = [text, "", "boundaries (the largest ELR in the lower regime, the smallest in the upper one):"]
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


def _lower_boundary(runs: pd.DataFrame) -> dict | None:
    """The convergence | equilibrium interval, if the sweep located it."""
    found = [b for b in boundaries(runs) if b["boundary"] == "convergence|equilibrium"]
    return found[0] if found else None


def _bisections(runs: pd.DataFrame, grid: set, boundary: dict) -> list[float]:
    """The midpoints already added near this boundary (ELRs not on the grid between its grid neighbours)."""
    below = max((e for e in grid if e <= boundary["lo"]), default=0.0)
    above = min((e for e in grid if e >= boundary["hi"]), default=math.inf)
    return [e for e in runs["elr"].unique() if e not in grid and below < e < above]


def training_figure(curves: pd.DataFrame, regimes: dict, path: Path, title: str = "") -> Path:
    """The paper's Fig. 1: train loss (log), test error and mean effective gradient norm (log) against epoch,
    one line per ELR (mean over seeds), coloured by the ELR's regime."""
    fig, axes = new_figure(ncols=3, figsize=(16, 4))
    rank: dict[str, int] = {}  # ELRs of one regime told apart by line style, smallest solid
    for elr, c in curves.groupby("optim.elr"):
        regime = regimes.get(elr, "unclear")
        rank[regime] = rank.get(regime, -1) + 1
        style = {"color": COLOURS[regime], "ls": LINE_STYLES[rank[regime] % len(LINE_STYLES)], "lw": 1.2}
        axes[0].plot(c["epoch"], c["sphere/train_tm_loss"], label=f"ELR {elr:.3g} ({regime})", **style)
        if "test/acc" in c:
            axes[1].plot(c["epoch"], 1 - c["test/acc"], **style)
        if "sphere/effective_grad_norm" in c:
            axes[2].plot(c["epoch"], c["sphere/effective_grad_norm"], **style)
    axes[0].set(yscale="log", xlabel="epoch", ylabel="train loss, nats (BatchNorm in train mode)")
    axes[1].set(xlabel="epoch", ylabel="test error (fraction misclassified)", ylim=(0, 1))
    axes[2].set(yscale="log", xlabel="epoch", ylabel="mean effective gradient norm ρ‖∇L‖")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[2].legend(handles, labels, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return save_figure(fig, path, title)


def diagram_figure(curves: pd.DataFrame, regimes: dict, path: Path, title: str = "") -> Path:
    """Train loss against effective gradient norm, one curve per ELR, a star at its start."""
    fig, ax = new_figure(figsize=(5.5, 4.5))
    for elr, c in curves.groupby("optim.elr"):
        if "sphere/effective_grad_norm" not in c:
            continue
        shade = COLOURS[regimes.get(elr, "unclear")]
        ax.plot(c["sphere/train_tm_loss"], c["sphere/effective_grad_norm"], color=shade, lw=1,
                label=f"{elr:.3g}")  # fmt: skip
        start = c.iloc[0]
        ax.plot(start["sphere/train_tm_loss"], start["sphere/effective_grad_norm"], "*", color=shade, ms=9)
    ax.set(xscale="log", yscale="log", xlabel="train loss", ylabel="mean effective gradient norm")
    ax.legend(title="ELR", frameon=False, fontsize=7)
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
