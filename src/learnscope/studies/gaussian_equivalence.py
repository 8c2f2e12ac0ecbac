"""The Gaussian equivalence of generative models for learning with two-layer networks (Goldt et al. 2020).

Method. A generator maps a latent c ~ N(0, I_D) to an input x = G(c) in R^N. A teacher committee machine
y* = sum_m A_m g(b_m.c/sqrt(D)) labels the *latent*; a student y = sum_k v_k g(w_k.x/sqrt(N)) sees only the
centred input and learns by online SGD, one fresh sample per step (learning rate eta for w, eta/N for v).
The claim: however complicated G is, the test error and the order parameters Q = w Omega w'/N,
R = w Phi B'/sqrt(ND) follow ODEs that depend on G only through Omega = Cov(x) and Phi = Cov(x, c), with
delta = D/N. For every generator we simulate R student replicas and integrate the ODE from each replica's
initial weights, then compare: test error vs t = steps/N (log x), the ODE line over the simulation's points.
A negative control integrates the same ODE with the original code's default delta = 0.5, which is wrong
unless D/N = 0.5 (docs/studies/gaussian_equivalence.md §6, §7.1), to show that the comparison can fail.

Runs go through `runs/committee/kinds.run_online` and the store, so rerunning a study reuses finished runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import PositiveFloat

from ..config import apply_overrides
from ..errors import ConfigError
from ..report import colour, new_figure, save_figure
from ..sections import Strict
from .base import Headline, Scale, Study, register_study

if TYPE_CHECKING:
    from ..runs.committee.kinds import OnlineConfig

# The generators the study compares (a value of the axis `setting`): each fixes the generator and its sizes.
SETTINGS: dict[str, dict] = {
    "rand L=4": {"generator": "rand", "D": 100, "N": 500, "L": 4},
    "dcgan random": {"generator": "dcgan", "D": 100, "N": 3072},
    # a trained DCGAN: a state dict, e.g. the original's dcgan_cifar10_weights.pth
    "dcgan cifar10": {
        "generator": "dcgan",
        "D": 100,
        "N": 3072,
        "weights": "models/dcgan_cifar10_weights.pth",
    },
    "realnvp": {"generator": "realnvp", "D": 3072, "N": 3072},
}


class Options(Strict):
    """The study's options (`study.NAME=value`)."""

    # the negative control: an ODE forced to this delta = D/N instead of the generator's (none: no control)
    control_delta: PositiveFloat | None = 0.5


# Each scale: the keys shared by every run (`base`, which `key=value` overrides, on top of each setting) and
# the settings (axis `setting`, names of SETTINGS). `tiny` is the CPU acceptance experiment
# (docs/studies/gaussian_equivalence.md §6): rand L = 4, D = 100, N = 500, K = M = 2, eta = 0.2, t <= 1000, 41
# log-spaced points; each ODE starts from its replica's weights, delta = D/N = 0.2. Its moments are estimated
# (10^6 samples, as for every other generator): the arcsine law is exact for one sign layer only, and with it
# the late sim-ODE gap grows from 0.006 to 0.008 (docs).
SCALES: dict[str, Scale] = {
    # `demo` is `tiny` cut to what `learnscope demo` can afford (about 50 CPU-seconds): the same setting
    # (rand L = 4, D = 100, N = 500, delta = 0.2, K = M = 2, eta = 0.2) and 4 replicas, but t <= 100 (31
    # points, 10 a decade as in tiny) and moments from 10^5 samples. By t = 100 the error is near its plateau
    # and the delta = 0.5 control is off by 0.02-0.03, 5-8x the largest sim-ODE gap at t >= 3 (0.003 with
    # seed 0, 0.006 with seed 1); 10^5 instead of 10^6 samples move the ODE by < 0.001. With 2 replicas the
    # mean strayed 0.012 from the ODE near t = 4.
    "demo": Scale(
        note="`learnscope demo`: the tiny setting to t = 100, moments from 10^5 samples",
        base={
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 100.0,
            "points": 31,
            "replicas": 4,
            "moments": "estimate",
            "moment_samples": 100_000,
        },
        axes={"setting": ["rand L=4"]},
        options=Options(),
    ),
    "tiny": Scale(
        note="the CPU acceptance experiment: rand L = 4, D = 100, N = 500, to t = 1000",
        base={
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 1000.0,
            "points": 41,
            "replicas": 4,
            "moments": "estimate",
            "moment_samples": 1_000_000,
        },
        axes={"setting": ["rand L=4"]},
        options=Options(),
    ),
    # DCGAN with random weights (D = 100, N = 3 x 32 x 32), to t = 10. The generator costs ~2.5 ms per
    # sample on 2 CPU cores, so the moments come from 2.5 x 10^5 samples (~15 min), not 10^6 (an hour).
    "small": Scale(
        note="DCGAN with random weights, to t = 10",
        base={
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 10.0,
            "points": 21,
            "replicas": 2,
            "moments": "estimate",
            "moment_samples": 250_000,
        },
        axes={"setting": ["dcgan random"]},
        options=Options(),
    ),
    # The paper's generators to t = 10^4: DCGAN random and trained, real NVP.
    "paper": Scale(
        note="the paper's generators (DCGAN random and trained, real NVP) to t = 10^4",
        base={
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 10_000.0,
            "points": 41,
            "replicas": 4,
            "moments": "estimate",
            "moment_samples": 10_000_000,
        },
        axes={"setting": ["dcgan random", "dcgan cifar10", "realnvp"]},
        options=Options(control_delta=None),
    ),
}

# Times before this are compared loosely: there single-run and finite-N noise dominate
# (docs/studies/gaussian_equivalence.md §6).
T_COMPARE = 3.0


def configs(scale: str = "tiny", overrides: tuple[str, ...] = ()) -> list[OnlineConfig]:
    """Every run of a scale: per setting a simulation, its ODE and (with a control delta) the control ODE."""
    return GaussianEquivalence(scale, overrides).configs()


# What tells the settings of a scale apart (not `name`: it is not part of a run's identity, so a run stored
# under another name is still reused).
SETTING = ["generator", "D", "N", "L", "generator_seed", "weights"]


def _role(row: pd.Series) -> str:
    if row["method"] == "simulation":
        return "simulation"
    return "ode" if pd.isna(row.get("force_delta")) else "control"


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting (generator, D, N, L), role (simulation | ode | control) and t: mean and range over replicas
    of eg (and of the simulation's test-set standard error eg_sem) and the order parameters, and the number
    of replicas; force_delta is the control's delta (NaN for the others)."""
    table = table.copy()
    table["role"] = table.apply(_role, axis=1)
    table["weights"] = table["weights"].fillna("")
    if "force_delta" not in table:
        table["force_delta"] = np.nan
    keys = [*SETTING, "role", "t"]
    values = [c for c in table.columns if c in ("eg", "eg_sem") or c[:2] in ("Q_", "R_", "v_")]
    grouped = table.groupby(keys)[values]
    mean = grouped.mean()
    low, high = grouped.min().add_suffix("_lo"), grouped.max().add_suffix("_hi")
    per_t = table.groupby(keys)
    replicas, delta = per_t["replica"].nunique().rename("replicas"), per_t["force_delta"].first()
    return pd.concat([mean, low, high, replicas, delta], axis=1).reset_index()


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: final eg of simulation and ODE, the largest |eg_sim - eg_ode| at t >= 3 and
    before, where the late one is largest (t_max_gap) and how it compares there with the simulation's
    replica range (spread_at_max_gap) and test-set standard error (sem_at_max_gap), the largest final
    difference of a Q or R entry, and the control's late and final gaps."""
    c = curves(table)
    rows = []
    for (gen, D, N, L, _, weights), part in c.groupby(SETTING):
        by_role = {role: frame.set_index("t") for role, frame in part.groupby("role")}
        sim, ode = by_role["simulation"], by_role["ode"]
        gap = (sim["eg"] - ode["eg"]).abs()
        late = gap[gap.index >= T_COMPARE].dropna()
        at = late.idxmax() if len(late) else np.nan  # the t of the largest late gap
        overlaps = [k for k in sim.columns if k[:2] in ("Q_", "R_") and not k.endswith(("_lo", "_hi"))]
        row = {
            "generator": gen, "weights": weights or "-", "D": D, "N": N, "L": L, "delta": D / N,
            "replicas": int(sim["replicas"].max()),
            "t_final": sim.index[-1],
            "eg_sim": sim["eg"].iloc[-1],
            "eg_ode": ode["eg"].iloc[-1],
            "max_gap_late": late.max() if len(late) else np.nan,
            "max_gap_early": gap[gap.index < T_COMPARE].max(),
            "t_max_gap": at,
            "spread_at_max_gap": sim["eg_hi"].get(at, np.nan) - sim["eg_lo"].get(at, np.nan),
            "sem_at_max_gap": sim["eg_sem"].get(at, np.nan) if "eg_sem" in sim else np.nan,
            "max_overlap_gap": (sim[overlaps].iloc[-1] - ode[overlaps].iloc[-1]).abs().max(),
        }  # fmt: skip
        if "control" in by_role:
            control_gap = (sim["eg"] - by_role["control"]["eg"]).abs()
            row["control_gap_late"] = control_gap[control_gap.index >= T_COMPARE].max()
            row["control_gap_final"] = control_gap.iloc[-1]
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(summary: pd.DataFrame) -> str:
    return summary.to_string(index=False, float_format=lambda v: f"{v:.4f}")


# The only numbers to hold ours against: docs/studies/gaussian_equivalence.md §6, an independent single-seed
# run of the tiny experiment (rand L = 4, D = 100, N = 500, K = M = 2, eta = 0.2, erf, t = 1000, control
# delta = 0.5). The paper itself shows curves, not numbers.
DOCS_TINY = {"eg_sim": 0.2748, "eg_ode": 0.2751, "control_gap_final": 0.024, "control_delta": 0.5}
DOCS_TINY_SETTING = {
    "generator": "rand", "L": 4, "D": 100, "N": 500, "K": 2, "M": 2, "eta": 0.2, "g": "erf", "t_max": 1000.0,
    "train_second_layer": True, "weights": None,
}  # fmt: skip


def _label(row: pd.Series) -> str:
    """A setting as the figures name it: generator, L for rand, the weights file's stem."""
    weights = row.get("weights", "-")
    label = row["generator"] + (f" L={row['L']}" if row["generator"] == "rand" else "")
    return label + (f" {Path(weights).stem}" if weights and weights != "-" else "")


def headlines(summary: pd.DataFrame, comparable: list[bool], control_delta: float | None) -> list[Headline]:
    """Per setting: the largest sim-ODE gap in eg at t >= 3 (against the replicas' spread there and the
    control's gap), the wrong-delta control's final gap, the final eg and the final Q, R gap. With several
    settings the first headline is the worst setting's gap and the others carry the setting's name.
    `comparable[i]`: row i is the setting of docs §6's numbers (DOCS_TINY), so they are quoted beside ours."""
    if summary.empty:
        return []
    many = len(summary) > 1
    out: list[Headline] = []
    for (_, row), ref in zip(summary.iterrows(), comparable, strict=True):
        prefix = f"{_label(row)}: " if many else ""
        late = np.isfinite(row["max_gap_late"])
        gap = float(row["max_gap_late"] if late else row["max_gap_early"])
        where = f"t ≥ {T_COMPARE:g}" if late else f"t < {T_COMPARE:g}"
        ran = f"{_label(row)}, D = {row['D']}, N = {row['N']}"  # what ran, as the overrides left it
        note = f"{ran}; mean of {int(row['replicas'])} replicas, t ≤ {row['t_final']:g}"
        if late and np.isfinite(row["t_max_gap"]):
            note += (
                f"; largest at t = {row['t_max_gap']:.3g}, where the replicas' range is "
                f"{row['spread_at_max_gap']:.2g}, the test set's standard error {row['sem_at_max_gap']:.2g}"
            )
        if "control_gap_late" in row and np.isfinite(row["control_gap_late"]):
            note += f"; the δ = {control_delta:g} control is off by up to {row['control_gap_late']:.2g}"
        note += "; the paper plots curves, no number (docs §6 accept ≤ 0.01 at tiny scale)"
        out.append(Headline(f"{prefix}largest |ε_g simulation − ODE|, {where}", gap, None, note))
        away = "not comparable: docs §6 quote one seed of rand L=4, D=100, N=500 at t = 1000"
        if "control_gap_final" in row and np.isfinite(row["control_gap_final"]):
            docs = ref and control_delta == DOCS_TINY["control_delta"]
            name = f"{prefix}control ODE, δ = {control_delta:g} not D/N = {row['delta']:.3g}: "
            name += "final |ε_g simulation − control|"
            note = "well above the first headline if the ODE tells δ apart; "
            note += "docs §6: one seed at t = 1000" if docs else away
            out.append(
                Headline(
                    name,
                    float(row["control_gap_final"]),
                    DOCS_TINY["control_gap_final"] if docs else None,
                    note,
                )
            )
        out.append(
            Headline(
                f"{prefix}final test error ε_g (simulation)",
                float(row["eg_sim"]),
                DOCS_TINY["eg_sim"] if ref else None,
                f"t = {row['t_final']:g}; ODE {row['eg_ode']:.4f}"
                + (
                    f"; docs §6: one seed (ODE {DOCS_TINY['eg_ode']}), seeds differ by ~0.02"
                    if ref
                    else f"; {away}"
                ),
            )
        )
        out.append(
            Headline(
                f"{prefix}largest final |Q, R simulation − ODE| (an entry)",
                float(row["max_overlap_gap"]),
                None,
                f"t = {row['t_final']:g}; the paper gives no number (docs §6 accept ≤ 0.05 at tiny scale)",
            )
        )
    if many:  # the worst setting's gap first
        first = max((h for h in out if "simulation − ODE|, t" in h.name), key=lambda h: h.value)
        out.remove(first)
        out.insert(0, first)
    return out


# --- figures -----------------------------------------------------------------------------------------------


def figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """Per setting: test error vs t (simulation mean and replica range as points and band, ODE mean as a line,
    the control dashed) and the order parameters Q, R (simulation points over ODE lines)."""
    from matplotlib.ticker import FuncFormatter

    out.mkdir(parents=True, exist_ok=True)
    c = curves(table)
    paths = []
    for (gen, D, N, L, seed, weights), part in c.groupby(SETTING):
        roles = {role: frame for role, frame in part.groupby("role")}
        sim, ode = roles["simulation"], roles["ode"]
        fig, (ax_eg, ax_op) = new_figure(1, 2, figsize=(11, 4))
        sim_t = sim["t"].where(sim["t"] > 0, np.nan)  # t = 0 cannot sit on a log axis
        ax_eg.fill_between(sim_t, sim["eg_lo"], sim["eg_hi"], color=colour(0), alpha=0.2, lw=0)
        ax_eg.plot(
            sim_t, sim["eg"], "o", ms=4, color=colour(0), label="simulation (mean, range over replicas)"
        )
        ax_eg.plot(ode["t"], ode["eg"], "-", color="k", lw=1.5, label=f"ODE, δ = D/N = {D / N:.4g}")
        if "control" in roles:
            ctl = roles["control"]
            delta = ctl["force_delta"].iloc[0]
            ax_eg.plot(
                ctl["t"], ctl["eg"], "--", color=colour(3), lw=1.5, label=f"ODE, δ = {delta:g} (control)"
            )
        ax_eg.set(
            xscale="log", yscale="log", xlabel="time t = steps / N (log)", ylabel="test error ε_g (log)"
        )
        # the error falls from the top left, so the top right is free once a quarter of the height is added
        lo, hi = ax_eg.get_ylim()
        ax_eg.set_ylim(lo, hi * (hi / lo) ** (1 / 3))
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.3, not 3 x 10^-1
        ax_eg.yaxis.set_major_formatter(plain)
        if hi / lo < 10:  # within a decade the minor ticks are the only labels
            ax_eg.yaxis.set_minor_formatter(plain)
        ax_eg.legend(fontsize=8, loc="upper right")
        names = [k for k in sim.columns if k[:2] in ("Q_", "R_") and not k.endswith(("_lo", "_hi"))]
        for i, key in enumerate(names):
            marker = "o" if key.startswith("Q_") else "^"
            ax_op.plot(sim_t, sim[key], marker, ms=3.5, color=colour(i), label=key)
            ax_op.plot(ode["t"], ode[key], "-", color=colour(i), lw=1)
        ax_op.set(
            xscale="log", xlabel="time t = steps / N (log)", ylabel="order parameter (mean over replicas)"
        )
        ax_op.legend(
            fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="points: sim\nlines: ODE"
        )
        name = gen + (f" L={L}" if gen == "rand" else "") + (f" {Path(weights).stem}" if weights else "")
        title = f"{name}, D={D}, N={N}, generator seed {seed}"
        fig.suptitle(f"Gaussian equivalence: {title}  (points: simulation, lines: ODE)")
        path = out / f"eg_{name.replace(' ', '_').replace('=', '')}_D{D}_N{N}_s{seed}.png"
        paths.append(save_figure(fig, path))
    return paths


@register_study
class GaussianEquivalence(Study):
    name = "gaussian_equivalence"
    paper = (
        "Goldt, Loureiro, Reeves, Krzakala, Mezard, Zdeborova 2020: The Gaussian equivalence of generative "
        "models for learning with two-layer neural networks"
    )
    scales = SCALES
    Options = Options
    trains_networks = False  # committee machines: choose generator=..., K=..., eta=... instead
    axis_help = {"setting": "a generator and its sizes: " + ", ".join(SETTINGS)}

    def plan(self) -> list[tuple[OnlineConfig, dict]]:
        """Per setting a simulation, its ODE and (with a control delta) the control ODE; the `key=value`
        overrides apply on top of each setting, so `L=2` changes the rand generator's depth."""
        # The committee run kinds import torch (the generators) when used, not at the top: `learnscope
        # study list` reads the studies without it.
        from ..runs.committee.kinds import OnlineConfig

        runs = []
        delta = self.options.control_delta
        for setting in self.axes["setting"]:
            if setting not in SETTINGS:
                known = ", ".join(SETTINGS)
                raise ConfigError(f"--axis setting: unknown setting {setting!r}; known: {known}")
            raw = apply_overrides({**self.base, **SETTINGS[setting]}, self.config_overrides)
            raw["name"] = " ".join([setting, *self.config_overrides])
            shown = {"setting": setting}
            runs.append(
                (OnlineConfig.from_dict({**raw, "method": "simulation"}), shown | {"method": "simulation"})
            )
            runs.append((OnlineConfig.from_dict({**raw, "method": "ode"}), shown | {"method": "ode"}))
            if delta is not None:
                control = {**raw, "method": "ode", "force_delta": delta}
                control["name"] = f"{raw['name']} delta={delta}"
                runs.append(
                    (OnlineConfig.from_dict(control), shown | {"method": "ode", "force_delta": delta})
                )
        return runs

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        return summarise(table)

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        return figures(table, out)

    def format_summary(self, summary: pd.DataFrame) -> str:
        return format_summary(summary)

    def headlines(self, summary: pd.DataFrame) -> list[Headline]:
        sims = [c for c in self.configs() if c.method == "simulation"]
        comparable = []
        for _, row in summary.iterrows():
            cfg = next((c for c in sims if (c.generator, c.D, c.N, c.L) == tuple(row[SETTING[:4]])), None)
            comparable.append(
                cfg is not None and all(getattr(cfg, k) == v for k, v in DOCS_TINY_SETTING.items())
            )
        return headlines(summary, comparable, self.options.control_delta)
