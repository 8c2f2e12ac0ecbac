"""Multi-scale feature learning and epoch-wise double descent (Pezeshki, Mitra, Bengio, Lajoie, ICML 2022).

Method. A linear student learns a linear teacher through a modulation matrix F whose p fast directions have
singular value 1 and d − p slow ones 1/κ (docs/studies/double_descent.md §2). Trained by gradient descent, its
test error falls while the fast features are fit, rises as they overfit, and falls again once the slow
features are learned: epoch-wise double descent, predicted in closed form per data draw (§3) and by the
paper's approximate fast–slow formula (Eqs. 12 and 14 into Eq. 6; §4). The study reproduces the paper's
figures from stored runs:

    fast_slow.png       error vs time, fast features only, slow only, both (κ = 100; the paper's Fig. 1)
    heatmap.png         error over (weight decay λ, time): the formula beside a network trained with label
                        noise, every epoch evaluated (Fig. 2)
    phase_diagram.png   the (R, Q) plane coloured by the error, with trajectories for κ from 1 to 1e5 and
                        their error curves (Fig. 3)
    gd_vs_theory.png    gradient descent through the train loop over the exact and the approximate curves
                        (κ = 1, 100, 1e4)
    width1_network.png  a trained ReLU network that descends twice at CPU scale (one hidden unit on the
                        linear teacher with label noise) beside the closed form of the linear student
                        trained on the same draws with the same learning rate (`tiny`, `small`, `paper`)

Runs: theory curves are runs of kind `dd_theory` (runs/dd_theory.py); gradient descent is the ordinary train
loop on the data kind `linear_teacher` (a linear student from w = 0, the summed loss, lr = 1/λ_max(XᵀX));
the network heatmap is a training sweep over weight decay × seeds (the axes `optim.weight_decay` and `seed`):
`key=value` overrides set the heatmap's network runs; the theory curves, gradient descent and the width-1
network keep the settings of the paper and of docs/studies/double_descent.md §6 (other settings: `learnscope
theory double-descent`, or the width-1 run's config as a file: §6).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from ..config import Config
from ..errors import ConfigError, LearnscopeError
from ..report import PALETTE, colour, line_style, new_figure, save_figure
from ..sections import Strict
from ..sweep import grid
from ..theory.double_descent import SUMMARY_KEYS, curve_summary, describe_summary, exact_curves
from .base import Headline, Scale, Study, register_study

if TYPE_CHECKING:
    from ..runs.dd_theory import DoubleDescentTheoryConfig

# The paper's analytic settings (its figure scripts' defaults).
FIG1 = {"n": 150, "d": 100, "p": 70, "kappa": 100.0}
HEATMAP = {"n": 120, "d": 100, "p": 80, "kappa": 40.0, "sigma": 0.2}
PHASE = {"n": 110, "d": 100, "p": 70}
PHASE_KAPPAS = (1.0, 7.0, 12.0, 30.0, 100.0, 1000.0, 1e5)
GD_KAPPAS = (1.0, 100.0, 1e4)
GD_STEPS = 100_000

# Network heatmaps: weight decay λ = 10^-x over the heatmap's x, seeds, the run config. The paper:
# ResNet-18 on CIFAR-10, Adam lr 1e-4 (coupled L2 = λ), batch 128, 1001 epochs, 20% of the labels permuted
# among themselves (its code; its text says 15%: `data.label_noise_mode=redraw data.label_noise=0.15`).
# At CPU scale: the 1-D LeNet on MNIST-1D with 20% of the labels permuted (`small`: the heatmap of
# docs/studies/double_descent.md; `tiny`: the same pipeline for 20 epochs at three λ).
NETWORK_PROBES = {"schedule": ["epochs"], "use": [{"kind": "evaluation", "sets": ["test"]}]}
MNIST1D_LENET = {
    "data": {"kind": "mnist1d", "label_noise": 0.2, "label_noise_mode": "permute"},
    "model": {"kind": "lenet"},
    "optim": {"kind": "adam", "lr": 1e-3},
    "train": {"epochs": 200, "batch_size": 128, "checkpoint_every": 0},
    "probes": NETWORK_PROBES,
}
PAPER_NETWORK = {
    "data": {
        "kind": "cifar10",
        "path": "data/cifar-10-batches-py",
        "normalize": False,
        "crop_padding": 4,
        "flip": True,
        "label_noise": 0.2,
        "label_noise_mode": "permute",
    },
    "model": {"kind": "resnet18", "width": 64},
    "optim": {"kind": "adam", "lr": 1e-4},
    "train": {"epochs": 1001, "batch_size": 128, "checkpoint_every": 3910},
    "probes": NETWORK_PROBES,
}

# A trained network that descends twice at CPU scale (docs/studies/double_descent.md §6): one hidden ReLU
# unit, f(x) = a·relu(wᵀx + b) + c (103 parameters for n = 150 points), full-batch GD on the MSE, on the
# linear teacher with κ = 30 and label noise σ = 0.2; its test error is the MSE on the draw's 1,000 noiseless
# test points. Each draw (`data.seed`) is also the run's seed. Wide MLPs show one descent here (§6).
WIDTH1 = {"n": 150, "d": 100, "p": 70, "kappa": 30.0, "sigma": 0.2}
WIDTH1_NETWORK = {
    "data": {"kind": "linear_teacher", **WIDTH1},
    "model": {"kind": "mlp", "depth": 1, "width": 1},
    "optim": {"kind": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "train": {"steps": 200_000, "batch_size": "full", "loss": "mse", "checkpoint_every": 50_000,
              "log_every": 10_000},
    "probes": {"schedule": ["log"], "points": 60, "use": ["evaluation"]},
}  # fmt: skip
# Its double descent: a rise of 0.03 above the first minimum and a fall of 0.05 below the peak, in MSE (§6).
WIDTH1_RISE, WIDTH1_FALL = 0.03, 0.05
WIDTH1_THEORY_STEPS = 1e8  # the linear student's second descent comes at 3-6e7 steps of the same lr
WIDTH1_STEPS = np.unique(np.append(0.0, np.round(np.geomspace(1, WIDTH1_THEORY_STEPS, 200))))  # its curve's


def width1_config(draw: int) -> Config:
    """The width-1 network on data draw `draw` (its seed too)."""
    cfg = {**WIDTH1_NETWORK, "data": {**WIDTH1_NETWORK["data"], "seed": draw}}
    return Config.from_dict({"name": f"width-1 network draw={draw}", "seed": draw, **cfg})


def weight_decays(x: list[float]) -> list[float]:
    """λ = 10^-x: the heatmap's weight decays from its x axis."""
    return [float(10**-v) for v in x]


class Options(Strict):
    """The study's options (`study.NAME=value`): the theory's and gradient descent's resolution."""

    heatmap_x: PositiveInt = 25  # columns of the formula's heatmap over x = -log10 λ in [0.1, 8]
    exact_draws: PositiveInt = 32  # data draws averaged by the exact curves
    gd_draws: NonNegativeInt = 2  # draws trained by gradient descent, at each κ of gd_kappas
    gd_kappas: list[PositiveFloat] = list(GD_KAPPAS)
    width1_draws: list[NonNegativeInt] = []  # data draws trained by the width-1 network (§6), ~40 s each


# Per scale: the network runs' config and axes (weight decay, seeds), and the options.
SCALES: dict[str, Scale] = {
    "demo": Scale(
        note="`learnscope demo`: the theory and gradient descent only",
        base=MNIST1D_LENET,
        axes={"optim.weight_decay": [], "seed": []},
        options=Options(gd_kappas=[100.0]),
    ),
    "tiny": Scale(
        note="the theory, gradient descent, the LeNet on MNIST-1D for 20 epochs at three λ, and the width-1 "
        "network on one draw",
        base={**MNIST1D_LENET, "train": {**MNIST1D_LENET["train"], "epochs": 20}},
        axes={"optim.weight_decay": weight_decays([1.0, 3.0, 8.0]), "seed": [0]},
        options=Options(width1_draws=[0]),
    ),
    "small": Scale(
        note="the heatmap of docs/studies/double_descent.md: LeNet on MNIST-1D, 200 epochs, 12 λ x 3 seeds; "
        "the width-1 network on 6 draws",
        base=MNIST1D_LENET,
        axes={
            "optim.weight_decay": weight_decays(np.linspace(1, 8, 12).round(3).tolist()),
            "seed": [0, 1, 2],
        },
        options=Options(heatmap_x=100, exact_draws=200, gd_draws=4, width1_draws=[0, 1, 2, 3, 4, 5]),
    ),
    "paper": Scale(
        note="ResNet-18 on CIFAR-10 with 20% permuted labels, 1001 epochs, 100 λ x 5 seeds; the width-1 "
        "network on 10 draws",
        base=PAPER_NETWORK,
        axes={
            "optim.weight_decay": weight_decays(np.linspace(0.1, 8, 100).round(4).tolist()),
            "seed": [0, 1, 2, 3, 4],
        },
        options=Options(heatmap_x=100, exact_draws=1000, gd_draws=8, width1_draws=list(range(10))),
    ),
}

NETWORK_FALL = 0.03


def gd_config(kappa: float, seed: int, steps: int | None = None) -> Config:
    """Gradient descent of a linear student from w = 0 on one draw of the teacher data (configs/
    linear_teacher_gd.toml): the summed loss ½‖Xw − y‖², lr = 1/λ_max(XᵀX), GD_STEPS steps by default."""
    steps = GD_STEPS if steps is None else steps
    return Config.from_dict(
        {
            "name": f"gd kappa={kappa:g} draw={seed}",
            "data": {"kind": "linear_teacher", **FIG1, "kappa": kappa, "seed": seed},
            "model": {"kind": "linear", "bias": False, "init": "zeros"},
            "optim": {"kind": "sgd", "lr": "1/sharpness", "momentum": 0.0, "weight_decay": 0.0},
            "train": {"steps": steps, "batch_size": "full", "loss": "sse", "checkpoint_every": 0,
                      "log_every": 1000},
            "probes": {"schedule": ["log"], "points": 60, "use": ["teacher"]},
        }
    )  # fmt: skip


def theory(name: str, base: dict, **settings) -> DoubleDescentTheoryConfig:
    """A theory run: the paper's setting `base` with `settings` changed."""
    # The run kinds import torch (the teachers' data) when used, not at the top: `learnscope study list`
    # reads the studies without it.
    from ..runs.dd_theory import DoubleDescentTheoryConfig

    return DoubleDescentTheoryConfig.from_dict({"name": name, **base, **settings})


@register_study
class DoubleDescent(Study):
    name = "double_descent"
    paper = "Pezeshki et al. 2022, Multi-scale feature learning dynamics: insights for double descent"
    scales = SCALES
    Options = Options

    def plan(self) -> list[tuple]:
        """The theory curves of the paper's figures, gradient descent and the width-1 network (shown by
        name), then the heatmap's network runs over the axes (weight decay x seeds)."""
        opts = self.options
        runs: list = [theory(f"fig1 {f}", FIG1, features=f) for f in ("fast", "slow", "both")]
        for x in np.linspace(0.1, 8, opts.heatmap_x):
            runs.append(theory(f"heatmap x={x:.3f}", HEATMAP, l2=float(10**-x)))
        runs += [theory(f"phase kappa={k:g}", PHASE, kappa=k) for k in PHASE_KAPPAS]
        for k in GD_KAPPAS:
            runs.append(theory(f"approx kappa={k:g}", FIG1, kappa=k))
            runs.append(theory(f"exact kappa={k:g}", FIG1, kappa=k, form="exact", draws=opts.exact_draws))
            if k in opts.gd_kappas:
                runs += [gd_config(k, seed) for seed in range(opts.gd_draws)]
        runs += [width1_config(draw) for draw in opts.width1_draws]
        networks = self.points()
        if self.config_overrides and not networks:
            raise ConfigError(
                f"double_descent at scale {self.scale} trains no network, so {self.config_overrides[0]} has "
                "nothing to apply to (the theory keeps the paper's settings); add networks with "
                "--axis optim.weight_decay=... --axis seed=..."
            )
        base = Config.from_dict(self.base)
        trained = [grid(base, {k: [v] for k, v in point.items()})[0] for point in networks]
        named = [
            run.model_copy(update={"name": self.run_name(p)})
            for run, p in zip(trained, networks, strict=True)
        ]
        return [(run, {}) for run in runs] + list(zip(named, networks, strict=True))

    # --- analysis ------------------------------------------------------------------------------------------

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        from ..runs.dd_theory import reported_t

        rows = []
        theory_runs = _theory(table)
        # Each curve is summarised over its figure's window of time: to 1e5 steps (Fig. 1, gradient descent),
        # to 1e7 (the phase diagram's curves). Whether a curve descends twice depends on the window: at
        # κ = 1e4 the second descent comes after 1e5 steps. The approximate curves are summarised in the
        # paper's Eq. 6 (`eg`); the exact ones, which stand for gradient descent on these draws, in the error
        # it makes (`eg_draw`, each draw's own ‖w‖²/d): Eq. 6 takes ‖w‖²/d as 1, which offsets the mean of a
        # few draws (by -0.029 for the 32 draws of `tiny`, whose Eq. 6 curve at κ = 1 ends below zero).
        settings = [(f"fig1 {f}", FIG1, {"features": f}, 1e5) for f in ("fast", "slow", "both")]
        settings += [(f"phase kappa={k:g}", PHASE, {"kappa": k}, 1e7) for k in PHASE_KAPPAS]
        settings += [(f"exact kappa={k:g}", FIG1, {"kappa": k, "form": "exact"}, 1e5) for k in GD_KAPPAS]
        settings += [(f"approx kappa={k:g}", FIG1, {"kappa": k}, 1e5) for k in GD_KAPPAS]
        for name, base, changed, window in settings:
            curve = _curve(theory_runs, base, **changed)
            t = reported_t(curve["form"].iloc[0], curve["t"].to_numpy())
            shown = (t >= 1) & (t <= window)
            column = "eg_draw" if changed.get("form") == "exact" else "eg"
            found = curve_summary(t[shown], curve[column].to_numpy()[shown])
            rows.append({"part": "theory", "setting": name, "error": column, "window": window, **found})
        for kappa, gap_exact, gap_approx in gd_gaps(table):
            rows.append(
                {
                    "part": "gd",
                    "setting": f"kappa={kappa:g}",
                    "gd_vs_exact": gap_exact,
                    "gd_vs_approx": gap_approx,
                }
            )
        # A network's second descent must fall NETWORK_FALL below its peak: above the seed-to-seed standard
        # deviation late in training (0.01-0.02 for the LeNet on MNIST-1D, 3 seeds; docs/studies/
        # double_descent.md §6); the ResNet-18 of the paper falls 0.089.
        net = network_curves(table)
        for x, curve in net.groupby("x", sort=True):
            curve = curve[curve["epoch"] >= 1]
            found = curve_summary(
                curve["epoch"].to_numpy(), curve["error"].to_numpy(), rise=NETWORK_FALL, fall=NETWORK_FALL
            )
            rows.append(
                {
                    "part": "network",
                    "setting": f"lambda=1e-{x:g}",
                    "error": "test error",
                    "window": curve["epoch"].max(),
                    **found,
                }
            )
        rows += width1_summary(table)
        return pd.DataFrame(rows)

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        rows = summary.set_index("setting")
        out = []

        def descent(setting: str, time: str = "t", digits: int = 4) -> str:
            found = _found(rows.loc[setting])
            verdict = "yes" if found["double_descent"] else "no"
            return f"{describe_summary(found, time, digits)}; double descent: {verdict}"

        if "fig1 both" in rows.index:
            out.append(
                Headline(
                    "E_G at κ = 100, fast and slow features (Fig. 1), t + 1 ≤ 1e5",
                    descent("fig1 both", "t + 1"),
                    "first minimum 0.2327 (t + 1 = 14.2) → peak 0.2677 (331)",
                    "the approximate formula (Eqs. 12, 14 into 6); the paper's curve from its figure code",
                )
            )
        gd = summary[summary["part"] == "gd"] if "part" in summary else summary.iloc[:0]
        for _, r in gd.iterrows():
            out.append(
                Headline(
                    f"train loop (GD) vs the exact curve of the same draws, {r['setting']}: max |ΔE_G|",
                    float(r["gd_vs_exact"]),
                    None,
                    "float32 loop against the float64 closed form (docs §3)",
                )
            )
            out.append(
                Headline(
                    f"train loop (draws mean) vs approximate formula, {r['setting']}: max |ΔE_G|, t ≥ 10",
                    float(r["gd_vs_approx"]),
                    None,
                    "few draws; the approximate second descent comes 2–3× late (§3.3)",
                )
            )
        if "exact kappa=100" in rows.index:
            out.append(
                Headline(
                    "E_G of the exact GD curve at κ = 100 (mean over draws of each draw's error, eg_draw)",
                    descent("exact kappa=100"),
                )
            )
        for kappa in (1.0, 1e4):
            if f"exact kappa={kappa:g}" in rows.index:
                out.append(
                    Headline(f"the controls: exact curve at κ = {kappa:g}", descent(f"exact kappa={kappa:g}"))
                )
        net = summary[summary["part"] == "network"] if "part" in summary else summary.iloc[:0]
        if len(net):
            x = net["setting"].str.removeprefix("lambda=1e-").astype(float)  # lambda=1e-<x>
            smallest = net.iloc[int(x.argmax())]
            out.append(
                Headline(
                    f"network test error, smallest weight decay ({smallest['setting']})",
                    descent(smallest["setting"], "epoch", 3),
                    "first minimum 0.190 (epoch 26) → peak 0.274 (75) → second minimum 0.182 (913); 0.185 at "
                    "epoch 1001 (ResNet-18 on CIFAR-10, docs §6)",
                    "here a LeNet on MNIST-1D with 20 % permuted labels (docs §6)",
                )
            )
        out += width1_headlines(summary)
        return out

    def format_summary(self, summary: pd.DataFrame) -> str:
        kept = [c for c in summary.columns if c in SUMMARY_KEYS or summary[c].notna().any()]
        summary = summary[kept]  # a blank peak or second minimum says something: kept
        text = summary.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
        if "shape" in summary:
            text += (
                "\n\nerror: the curve summarised, eg (the paper's Eq. 6), eg_draw (the exact curves: each"
                " draw's error, own ‖w‖²/d, averaged), the network's test error, the width-1 network's test"
                " MSE or the linear student's beside it (2·eg_draw); times are t + 1 (approximate form), t"
                " (exact), epochs or steps, up to the window. shape: monotone (no peak),"
                " single descent (a minimum, then up to the window's end: no peak) or peak. second_min is"
                " blank where no minimum after the peak lies inside the window: the curve is still falling"
                " (or flat) at the window's end (at_window_end), at final (final_t)."
            )
        return text

    def extra_tables(self, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {"network_curves": network_curves(table)}

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        theory_runs, runs = _theory(table), _width1_runs(table)
        return [  # the key figure first: gradient descent on the closed forms (what learnscope demo shows)
            gd_figure(table, out / "gd_vs_theory.png", self.command),
            fast_slow_figure(theory_runs, out / "fast_slow.png", self.command),
            heatmap_figure(theory_runs, network_curves(table), out / "heatmap.png", self.command),
            phase_figure(theory_runs, out / "phase_diagram.png", self.command),
            *([width1_figure(runs, out / "width1_network.png", self.command)] if len(runs) else []),
        ]


def _theory(table: pd.DataFrame) -> pd.DataFrame:
    """The theory runs' rows. Runs stored before `eg` became the paper's Eq. 6 (records without eg_clean; the
    same config, so the same run) would mix two definitions: refused, naming one to remove."""
    kind = table["kind"] if "kind" in table else pd.Series("", index=table.index)
    theory_runs = table[kind == "dd_theory"]
    clean = theory_runs["eg_clean"] if "eg_clean" in theory_runs else pd.Series(np.nan, theory_runs.index)
    stale = theory_runs.loc[clean.isna(), "run"].unique() if len(theory_runs) else []
    if len(stale):
        raise LearnscopeError(
            f"{len(stale)} dd_theory runs in the store were computed before eg became the paper's Eq. 6 "
            f"(their records have no eg_clean), e.g. {stale[0]}: remove them from the store to compute them "
            "again"
        )
    return theory_runs


def _found(row: pd.Series) -> dict:
    """A summary row back as `curve_summary` returned it (None where the table holds NaN)."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}


def _teacher_runs(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The training runs on the linear teacher's data with this model kind."""
    if "data.kind" not in table or "model.kind" not in table:
        return table.iloc[:0]
    return table[(table["data.kind"] == "linear_teacher") & (table["model.kind"] == model)]


def _gd_runs(table: pd.DataFrame) -> pd.DataFrame:
    return _teacher_runs(table, "linear")


def _width1_runs(table: pd.DataFrame) -> pd.DataFrame:
    return _teacher_runs(table, "mlp")


def _linear_student(run: pd.Series, steps: np.ndarray, eta: float) -> np.ndarray:
    """The exact discrete-GD curve of the linear student from w = 0 on this run's data draw at rate `eta` (on
    the summed loss ½‖Xw − y‖²): `eg_draw`, the draw's noiseless-label error with its own teacher norm."""
    from ..data.teachers import sample_teachers, singular_values

    s = singular_values(int(run["data.d"]), int(run["data.p"]), float(run["data.kappa"]))
    draw = sample_teachers(int(run["data.n"]), s, float(run["data.sigma"]), [int(run["data.seed"])])
    return exact_curves(draw, steps, 0.0, "gd", eta=eta).eg_draw[0]


def _exact_of_runs(runs: pd.DataFrame, steps: np.ndarray) -> np.ndarray:
    """The exact discrete-GD curve averaged over the data draws of these gradient-descent runs (one κ; each
    draw at its own rate 1/λ_max): `eg_draw`, the quantity the runs' `teacher/eg` measures."""
    firsts = [run.iloc[0] for _, run in runs.groupby("run")]
    return np.mean([_linear_student(first, steps, float(first["lr"])) for first in firsts], axis=0)


def width1_networks(runs: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per data draw of the width-1 network, at its logged steps: the test MSE (`network`) and the training
    loss (`train`)."""
    out = {}
    for _, run in runs.groupby("run"):
        run = run[run["test/loss"].notna()].sort_values("step")
        out[int(run["data.seed"].iloc[0])] = pd.DataFrame(
            {"step": run["step"].to_numpy(float), "network": run["test/loss"].to_numpy(),
             "train": run["train/loss"].to_numpy()}
        )  # fmt: skip
    return out


def width1_linear(runs: pd.DataFrame, steps: np.ndarray = WIDTH1_STEPS) -> dict[int, np.ndarray]:
    """Per data draw of the width-1 network, the linear student's closed form on the same draw with the same
    learning rate at `steps`, as an MSE (2·eg_draw). The network's loss is the mean (f − y)²
    (`train.loss = "mse"`): its lr η is the rate 2η/n on the summed loss ½‖Xw − y‖² of the closed form."""
    out = {}
    for _, run in runs.groupby("run"):
        first = run.iloc[0]
        eta = 2 * float(first["lr"]) / int(first["data.n"])
        out[int(first["data.seed"])] = 2 * _linear_student(first, np.asarray(steps, float), eta)
    return out


def width1_summary(table: pd.DataFrame) -> list[dict]:
    """Summary rows of the width-1 network: per draw, its test MSE over its steps, from where it has fitted
    half its initial training loss (before, it leaves the saddle of its initialisation: its test error
    wiggles by up to 0.08 while it has learned nothing), and the linear student's closed form on the same
    draw, from step 0 to WIDTH1_THEORY_STEPS."""
    rows = []
    runs = _width1_runs(table)
    linear = width1_linear(runs)
    for draw, curve in sorted(width1_networks(runs).items()):
        fitted = curve[curve["train"] <= 0.5 * curve["train"].iloc[0]]
        found = curve_summary(fitted["step"], fitted["network"], rise=WIDTH1_RISE, fall=WIDTH1_FALL)
        rows.append({"part": "width-1 network", "setting": f"network draw={draw}", "error": "test MSE",
                     "window": float(curve["step"].max()), **found})  # fmt: skip
        found = curve_summary(WIDTH1_STEPS, linear[draw], rise=WIDTH1_RISE, fall=WIDTH1_FALL)
        rows.append({"part": "width-1 network", "setting": f"linear student draw={draw}",
                     "error": "2·eg_draw", "window": WIDTH1_THEORY_STEPS, **found})  # fmt: skip
    return rows


def gd_gaps(table: pd.DataFrame) -> list[tuple[float, float, float]]:
    """Per κ: the largest |error of the train loop − the exact discrete curve of the same draw| over all
    logged steps, and |mean over draws of the loop − the approximate formula| at t ≥ 10. The loop's
    `teacher/eg` is an error on noiseless labels: against the same draw's `eg_draw`, and against the
    formula's `eg_clean` (the paper's Eq. 6 less σ²/2; equal to its eg at the σ = 0 of these runs)."""
    gd = _gd_runs(table)
    theory_runs = _theory(table)
    out = []
    for kappa, runs in gd.groupby("data.kappa", sort=True):
        worst, loop_curves = 0.0, []
        for _, run in runs.groupby("run"):
            exact = _exact_of_runs(run, run["step"].to_numpy(dtype=float))
            worst = max(worst, float(np.abs(run["teacher/eg"].to_numpy() - exact).max()))
            loop_curves.append(run.set_index("step")["teacher/eg"])
        mean = pd.concat(loop_curves, axis=1).mean(axis=1)
        approx = _curve(theory_runs, FIG1, kappa=float(kappa))
        late = mean[mean.index >= 10]
        # the approximate curve is drawn at t + 1: compare there
        interp = np.interp(np.log(late.index + 1.0), np.log(approx["t"] + 1.0), approx["eg_clean"])
        out.append((float(kappa), worst, float(np.abs(late.to_numpy() - interp).max())))
    return out


def network_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the network's test error per weight decay (x = −log10 λ) and epoch."""
    if "test/acc" not in table:
        return pd.DataFrame(columns=["x", "epoch", "error", "error_std", "seeds"])
    net = table[table["test/acc"].notna()].copy()
    net["x"] = (-np.log10(net["optim.weight_decay"])).round(4)
    net["error"] = 1.0 - net["test/acc"]
    grouped = net.groupby(["x", "epoch"])["error"]
    curves = pd.concat(
        [grouped.mean(), grouped.std(ddof=0).rename("error_std"), grouped.size().rename("seeds")], axis=1
    )
    return curves.reset_index()


# --- figures -----------------------------------------------------------------------------------------------


def _curve(theory_runs: pd.DataFrame, base: dict, **settings) -> pd.DataFrame:
    """The stored curve of a setting, found by its values (a run's name is not part of its identity: the
    approximate curve at κ = 100 is also Fig. 1's, one run under whichever name stored it first)."""
    wanted = {"form": "approx", "features": "both", "sigma": 0.0, "l2": 0.0, **base, **settings}
    mask = np.ones(len(theory_runs), dtype=bool)
    for key, value in wanted.items():
        mask &= (theory_runs[key] == value).to_numpy()
    return theory_runs[mask].sort_values("t")


def fast_slow_figure(theory_runs: pd.DataFrame, path: Path, title: str = "") -> Path:
    fig, ax = new_figure(figsize=(5.5, 3.6))
    for features, shade in (("fast", PALETTE[0]), ("slow", PALETTE[1]), ("both", PALETTE[-1])):
        c = _curve(theory_runs, FIG1, features=features)
        ax.plot(
            c["t"] + 1, c["eg"], color=shade, label=f"{features} features" if features != "both" else "both"
        )
    ax.set(xscale="log", xlim=(1, 1e5), ylim=(0, 0.5), xlabel="t + 1 (gradient-descent steps)")
    ax.set(ylabel="generalisation error $E_G$", title="fast and slow features (κ = 100, p = 70 of d = 100)")
    ax.legend(frameon=False)
    return save_figure(fig, path, title)


def heatmap_figure(theory_runs: pd.DataFrame, net: pd.DataFrame, path: Path, title: str = "") -> Path:
    """The paper's Fig. 2: error over (weight decay, time) for the formula (its Eq. 6, with the label noise σ,
    on the paper's colour scale 0.2-0.45) and, where the scale trains networks, for the network and its error
    curves at a large, an intermediate and the smallest weight decay. Without network runs (`demo`) the
    figure is the formula's panel alone: no panel is drawn empty."""
    net = net[net["epoch"] >= 1] if len(net) else net
    fig, axes = new_figure(ncols=3 if len(net) else 1, figsize=(16, 4) if len(net) else (6, 4), squeeze=False)
    axes = axes[0]
    heat = theory_runs[(theory_runs["n"] == HEATMAP["n"]) & (theory_runs["sigma"] == HEATMAP["sigma"])].copy()
    heat["x"] = -np.log10(heat["l2"])
    grid = heat.pivot_table(index="t", columns="x", values="eg")
    mesh = axes[0].pcolormesh(grid.columns, grid.index + 1, grid.to_numpy(), shading="nearest",
                              vmin=0.2, vmax=0.45, cmap="viridis")  # fmt: skip
    axes[0].set(yscale="log", ylim=(1, 1e4), xlabel="−log₁₀ λ (weight decay)", ylabel="t + 1",
                title="linear teacher–student, approximate formula")  # fmt: skip
    fig.colorbar(mesh, ax=axes[0], label=f"$E_G$, Eq. 6 (label noise σ = {HEATMAP['sigma']:g})")
    if not len(net):
        return save_figure(fig, path, title)
    grid = net.pivot_table(index="epoch", columns="x", values="error")
    low = float(np.nanmin(grid.to_numpy()))
    mesh = axes[1].pcolormesh(grid.columns, grid.index, grid.to_numpy(), shading="nearest",
                              vmin=low, vmax=low + 0.3, cmap="viridis")  # fmt: skip
    axes[1].set(yscale="log", ylim=(1, grid.index.max()), xlabel="−log₁₀ λ (weight decay)", ylabel="epoch",
                title="network trained with label noise")  # fmt: skip
    fig.colorbar(mesh, ax=axes[1], label="test error (mean over seeds)")
    columns = sorted(grid.columns)
    # the paper's right panel: the smallest λ, an intermediate and a large one (its 3rd column at 12 λ, the
    # largest λ that still learns there; the first with fewer columns), each drawn once
    picks = {columns[-1]: "smallest λ", columns[len(columns) // 2]: "intermediate λ"}
    picks.setdefault(columns[2] if len(columns) > 5 else columns[0], "large λ")
    high = low + 0.3
    for i, (x, label) in enumerate(picks.items()):
        c = net[net["x"] == x]
        shade = PALETTE[-1] if i == 0 else colour(i - 1)
        axes[2].plot(c["epoch"], c["error"], color=shade, label=f"{label} = 1e-{x:g}")
        axes[2].fill_between(c["epoch"], c["error"] - c["error_std"], c["error"] + c["error_std"],
                             color=shade, alpha=0.2, lw=0)  # fmt: skip
        high = max(high, float(c["error"].max()) + 0.02)
    axes[2].set(xscale="log", xlim=(1, grid.index.max()), ylim=(low - 0.02, high), xlabel="epoch",
                ylabel="test error", title="network: error curves (± std over seeds)")  # fmt: skip
    axes[2].legend(frameon=False, fontsize=8)
    return save_figure(fig, path, title)


def phase_figure(theory_runs: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Left: the (R, Q) plane coloured by E_G = ½(1 − 2R + Q) (σ = 0; its level sets are the lines
    Q = 2R + const, the optimum is (1, 1)), the same scale as the curves on the right."""
    fig, axes = new_figure(ncols=2, figsize=(11, 4))
    R, Q = np.meshgrid(np.linspace(0, 1.05, 200), np.linspace(0, 1.3, 200))
    eg = 0.5 * (1 - 2 * R + Q)
    mesh = axes[0].pcolormesh(R, Q, eg, shading="auto", vmin=0, vmax=0.5, cmap="magma_r")
    axes[0].contour(R, Q, eg, levels=np.arange(0.05, 0.5, 0.05), colors="white", linewidths=0.5)
    fig.colorbar(mesh, ax=axes[0], label="$E_G$")
    for i, kappa in enumerate(PHASE_KAPPAS):
        c = _curve(theory_runs, PHASE, kappa=kappa)
        axes[0].plot(c["R"], c["Q"], color=colour(i), label=f"κ = {kappa:g}")
        axes[0].plot(c["R"].iloc[-1], c["Q"].iloc[-1], "o", color=colour(i))
        axes[1].plot(c["t"] + 1, c["eg"], color=colour(i), label=f"κ = {kappa:g}")
    axes[0].set(xlim=(0, 1.05), ylim=(0, 1.3), xlabel="R (overlap)", ylabel="Q (norm)",
                title="phase diagram, n = 110, d = 100, p = 70")  # fmt: skip
    axes[1].set(
        xscale="log", xlim=(1, 1e7), ylim=(0, 0.5), xlabel="t + 1", ylabel="$E_G$", title="error curves"
    )
    axes[1].legend(frameon=False, fontsize=8)
    return save_figure(fig, path, title)


def gd_figure(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Gradient descent through the train loop (mean over its draws) over the exact curve (mean over many
    draws) and the approximate formula, all at t + 1 as the paper plots them. All are errors on noiseless
    labels: the loop's `teacher/eg` and the exact curves' `eg_draw` (each draw's own ‖w‖²/d), the formula's
    `eg_clean` (at σ = 0 its Eq. 6)."""
    fig, axes = new_figure(ncols=len(GD_KAPPAS), figsize=(13, 3.6))
    theory_runs, gd = _theory(table), _gd_runs(table)
    for ax, kappa in zip(axes, GD_KAPPAS, strict=True):
        exact = _curve(theory_runs, FIG1, kappa=kappa, form="exact")
        approx = _curve(theory_runs, FIG1, kappa=kappa)
        draws = int(exact["draws"].iloc[0]) if len(exact) else 0
        ax.plot(exact["t"] + 1, exact["eg_draw"], color=PALETTE[-1], label=f"exact, mean of {draws} draws")
        ax.plot(approx["t"] + 1, approx["eg_clean"], color=PALETTE[3], ls="--", label="approximate formula")
        runs = gd[gd["data.kappa"] == kappa]
        if len(runs):
            mean = runs.groupby("step")["teacher/eg"].mean()
            ax.plot(mean.index + 1, mean.to_numpy(), "o", ms=3, color=PALETTE[0],
                    label=f"train loop, mean of {runs['run'].nunique()} draws")  # fmt: skip
            same = _exact_of_runs(runs, mean.index.to_numpy(dtype=float))
            ax.plot(mean.index + 1, same, color=PALETTE[0], lw=0.8, label="exact, the same draws")
        ax.set(xscale="log", xlim=(1, 1e5), ylim=(0, 0.5), xlabel="t + 1 (steps)", title=f"κ = {kappa:g}")
    axes[0].set_ylabel("$E_G$, noiseless labels")
    fullest = max(axes, key=lambda a: len(a.get_legend_handles_labels()[0]))  # the panel with the train loop
    fullest.legend(frameon=False, fontsize=8, loc="upper right")  # the curves stay below 0.35 there
    return save_figure(fig, path, title)


def width1_headlines(summary: pd.DataFrame) -> list[Headline]:
    """How many draws of the width-1 network descend twice, and how close its first minimum and peak come to
    those of the linear student's closed form on the same draws."""
    part = summary[summary["part"] == "width-1 network"] if "part" in summary else summary.iloc[:0]
    if not len(part):
        return []
    part = part.set_index(part["setting"].str.rsplit("=", n=1).str[1].rename("draw"))
    net = part[part["setting"].str.startswith("network")]
    linear = part[part["setting"].str.startswith("linear")]
    twice = net[net["double_descent"].astype(bool)]

    def spread(values: pd.Series) -> str:
        values = values.dropna()
        return f"{values.min():.2f}–{values.max():.2f}" if len(values) else "none"

    steps = f"{net['window'].max():.0e}".replace("e+0", "e")
    out = [
        Headline(
            f"width-1 ReLU network on the linear teacher (n = {WIDTH1['n']}, p = {WIDTH1['p']}, "
            f"κ = {WIDTH1['kappa']:g}, σ = {WIDTH1['sigma']:g}), test MSE, {steps} GD steps: double descent "
            f"(rise ≥ {WIDTH1_RISE:g}, fall ≥ {WIDTH1_FALL:g})",
            f"{len(twice)} of {len(net)} draws; rise {spread(twice['rise'])}, fall {spread(twice['fall'])}",
            "6 of 6 draws, rise 0.05–0.20, fall 0.35–0.75 (the search of docs §6)",
            "a trained network at CPU scale; the paper's is a ResNet-18 on CIFAR-10",
        )
    ]
    first = (net["first_min"] - linear["first_min"]).abs()
    peak = (net["peak"] - linear["peak"]).abs()
    sooner = (linear["first_min_t"] / net["first_min_t"], linear["peak_t"] / net["peak_t"])
    second = linear["second_min_t"].dropna()
    later = f"at steps {second.min():.1e}–{second.max():.1e}" if len(second) else "none in the window"
    out.append(
        Headline(
            "width-1 network vs the linear student's closed form (same draws, same lr): first minimum and "
            "peak, |Δ| in MSE and how many times sooner the network gets there; the linear student's second "
            "minimum",
            f"|Δ| {spread(first)} and {spread(peak)}, {spread(sooner[0])}x and {spread(sooner[1])}x sooner; "
            f"{later}",
            None,
            f"the linear student's closed form to {WIDTH1_THEORY_STEPS:.0e} steps (docs §6)",
        )
    )
    return out


def width1_figure(runs: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Left: each draw's width-1 network (solid) and the linear student's closed form on the same draw with
    the same lr (dashed, the same colour), in MSE on noiseless test points, to the linear student's second
    descent. Right, with more than one draw: their means over the draws (the network's ± std)."""
    nets, linears = width1_networks(runs), width1_linear(runs)
    several = len(nets) > 1
    fig, axes = new_figure(ncols=2 if several else 1, figsize=(12, 4) if several else (6.5, 4), sharey=True,
                           squeeze=False)  # fmt: skip
    axes = axes[0]
    dashed = (0, (2, 2))
    for i, (draw, net) in enumerate(sorted(nets.items())):
        shade, style = line_style(i)
        axes[0].plot(net["step"] + 1, net["network"], color=shade, ls=style, label=f"draw {draw}")
        axes[0].plot(WIDTH1_STEPS + 1, linears[draw], color=shade, ls=dashed, lw=0.9)
    axes[0].plot([], [], color="grey", label="width-1 network (solid)")
    axes[0].plot([], [], color="grey", ls=dashed, lw=0.9, label="linear student, closed form")
    axes[0].set(ylabel="test MSE, noiseless labels", title="each draw (dotted: the network's last step)")
    axes[0].legend(frameon=False, fontsize=7, loc="lower left", ncol=2)
    if several:
        net_mean = pd.concat([n.set_index("step")["network"] for n in nets.values()], axis=1)
        mean, std = net_mean.mean(axis=1), net_mean.std(axis=1, ddof=0)
        linear_mean = np.mean(list(linears.values()), axis=0)
        axes[1].plot(
            mean.index + 1, mean, color=PALETTE[0], label=f"width-1 network, mean of {len(nets)} draws"
        )
        axes[1].fill_between(mean.index + 1, mean - std, mean + std, color=PALETTE[0], alpha=0.2, lw=0)
        axes[1].plot(WIDTH1_STEPS + 1, linear_mean, color=PALETTE[-1], ls=dashed,
                     label="linear student (closed form), same draws and lr")  # fmt: skip
        axes[1].set(title="mean over draws")
        axes[1].legend(frameon=False, fontsize=8, loc="lower left")
    last = max(float(net["step"].max()) for net in nets.values())
    lr = ", ".join(f"{v:g}" for v in sorted(runs["lr"].dropna().unique()))
    for ax in axes:
        ax.axvline(last + 1, color="grey", lw=0.6, ls=":")
        ax.set(
            xscale="log",
            xlim=(1, WIDTH1_THEORY_STEPS),
            xlabel=f"step + 1 (full-batch GD, lr {lr} on the MSE)",
        )
    return save_figure(fig, path, title)
