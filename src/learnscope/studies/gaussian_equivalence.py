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

Runs go through `online_sgd.run_online` and the store, so rerunning a study reuses finished runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import apply_overrides
from ..online_sgd import OnlineConfig
from ..report import new_figure, save_figure
from .base import Study, register_study

# Each scale: the settings (one per generator) sharing `common`, and the negative control's forced delta.
# `tiny` is the CPU acceptance experiment (docs/studies/gaussian_equivalence.md §6): rand L = 4, D = 100,
# N = 500, K = M = 2, eta = 0.2, t <= 1000, 41 log-spaced points; each ODE starts from its replica's weights,
# delta = D/N = 0.2. Its moments are estimated (10^6 samples, as for every other generator): the arcsine law
# is exact for one sign layer only, and with it the late sim-ODE gap grows from 0.006 to 0.008 (README).
SCALES: dict[str, dict] = {
    "tiny": {
        "common": {
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 1000.0,
            "points": 41,
            "replicas": 4,
            "moments": "estimate",
            "moment_samples": 1_000_000,
        },
        "settings": [{"name": "rand L=4", "generator": "rand", "D": 100, "N": 500, "L": 4}],
        "control_delta": 0.5,
    },
    # DCGAN with random weights (D = 100, N = 3 x 32 x 32), to t = 10. The generator costs ~2.5 ms per
    # sample on 2 CPU cores, so the moments come from 2.5 x 10^5 samples (~15 min), not 10^6 (an hour).
    "small": {
        "common": {
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 10.0,
            "points": 21,
            "replicas": 2,
            "moments": "estimate",
            "moment_samples": 250_000,
        },
        "settings": [{"name": "dcgan random", "generator": "dcgan", "D": 100, "N": 3072}],
        "control_delta": 0.5,
    },
    # The paper's generators to t = 10^4: DCGAN random and trained (a state dict, e.g. the original's
    # dcgan_cifar10_weights.pth: `weights=...`), real NVP.
    "paper": {
        "common": {
            "K": 2,
            "M": 2,
            "eta": 0.2,
            "t_max": 10_000.0,
            "points": 41,
            "replicas": 4,
            "moments": "estimate",
            "moment_samples": 10_000_000,
        },
        "settings": [
            {"name": "dcgan random", "generator": "dcgan", "D": 100, "N": 3072},
            {
                "name": "dcgan cifar10",
                "generator": "dcgan",
                "D": 100,
                "N": 3072,
                "weights": "models/dcgan_cifar10_weights.pth",
            },
            {"name": "realnvp", "generator": "realnvp", "D": 3072, "N": 3072},
        ],
        "control_delta": None,
    },
}

# Times before this are compared loosely: there single-run and finite-N noise dominate
# (docs/studies/gaussian_equivalence.md §6).
T_COMPARE = 3.0


def configs(scale: str = "tiny", overrides: tuple[str, ...] = ()) -> list[OnlineConfig]:
    """Every run of a scale: per setting a simulation, its ODE and (if the scale has one) the control ODE."""
    spec = SCALES[scale]
    runs = []
    for setting in spec["settings"]:
        raw = apply_overrides({**spec["common"], **setting}, overrides)
        runs.append(OnlineConfig.from_dict({**raw, "method": "simulation"}))
        runs.append(OnlineConfig.from_dict({**raw, "method": "ode"}))
        if spec.get("control_delta") is not None:
            control = {**raw, "method": "ode", "force_delta": spec["control_delta"]}
            runs.append(
                OnlineConfig.from_dict({**control, "name": f"{raw['name']} delta={spec['control_delta']}"})
            )
    return runs


# What tells the settings of a scale apart (not `name`: it is not part of a run's identity, so a run stored
# under another name is still reused).
SETTING = ["generator", "D", "N", "L", "generator_seed", "weights"]


def _role(row: pd.Series) -> str:
    if row["method"] == "simulation":
        return "simulation"
    return "ode" if pd.isna(row.get("force_delta")) else "control"


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Per setting (generator, D, N, L), role (simulation | ode | control) and t: mean and range over replicas
    of eg and the order parameters."""
    table = table.copy()
    table["role"] = table.apply(_role, axis=1)
    table["weights"] = table["weights"].fillna("")
    keys = [*SETTING, "role", "t"]
    values = [c for c in table.columns if c == "eg" or c[:2] in ("Q_", "R_", "v_")]
    grouped = table.groupby(keys)[values]
    mean = grouped.mean()
    low, high = grouped.min().add_suffix("_lo"), grouped.max().add_suffix("_hi")
    return pd.concat([mean, low, high], axis=1).reset_index()


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: final eg of simulation and ODE, the largest |eg_sim - eg_ode| at t >= 3 and
    before, the largest final difference of a Q or R entry, and the control's late gap."""
    c = curves(table)
    rows = []
    for (gen, D, N, L, _, weights), part in c.groupby(SETTING):
        by_role = {role: frame.set_index("t") for role, frame in part.groupby("role")}
        sim, ode = by_role["simulation"], by_role["ode"]
        gap = (sim["eg"] - ode["eg"]).abs()
        overlaps = [k for k in sim.columns if k[:2] in ("Q_", "R_") and not k.endswith(("_lo", "_hi"))]
        row = {
            "generator": gen, "weights": weights or "-", "D": D, "N": N, "L": L, "delta": D / N,
            "t_final": sim.index[-1],
            "eg_sim": sim["eg"].iloc[-1],
            "eg_ode": ode["eg"].iloc[-1],
            "max_gap_late": gap[gap.index >= T_COMPARE].max(),
            "max_gap_early": gap[gap.index < T_COMPARE].max(),
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


# --- figures -----------------------------------------------------------------------------------------------


def figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """Per setting: test error vs t (simulation mean and replica range as points and band, ODE mean as a line,
    the control dashed) and the order parameters Q, R (simulation points over ODE lines)."""
    out.mkdir(parents=True, exist_ok=True)
    c = curves(table)
    paths = []
    for (gen, D, N, L, seed, weights), part in c.groupby(SETTING):
        roles = {role: frame for role, frame in part.groupby("role")}
        sim, ode = roles["simulation"], roles["ode"]
        fig, (ax_eg, ax_op) = new_figure(1, 2, figsize=(11, 4))
        sim_t = sim["t"].where(sim["t"] > 0, np.nan)  # t = 0 cannot sit on a log axis
        ax_eg.fill_between(sim_t, sim["eg_lo"], sim["eg_hi"], color="C0", alpha=0.2, lw=0)
        ax_eg.plot(sim_t, sim["eg"], "o", ms=4, color="C0", label="simulation (mean, range over replicas)")
        ax_eg.plot(ode["t"], ode["eg"], "-", color="k", lw=1.5, label=f"ODE, delta = D/N = {D / N:.4g}")
        if "control" in roles:
            ctl = roles["control"]
            ax_eg.plot(ctl["t"], ctl["eg"], "--", color="C3", lw=1.2, label="ODE, delta = 0.5 (control)")
        ax_eg.set(xscale="log", yscale="log", xlabel="t = steps / N", ylabel="test error  eg")
        ax_eg.legend(fontsize=8)
        names = [k for k in sim.columns if k[:2] in ("Q_", "R_") and not k.endswith(("_lo", "_hi"))]
        for i, key in enumerate(names):
            ax_op.plot(sim_t, sim[key], "o", ms=3, color=f"C{i % 10}", label=key)
            ax_op.plot(ode["t"], ode[key], "-", color=f"C{i % 10}", lw=1)
        ax_op.set(xscale="log", xlabel="t = steps / N", ylabel="order parameters (mean over replicas)")
        ax_op.legend(fontsize=7, ncol=2)
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
    trains_networks = False  # committee machines: choose generator=..., K=..., eta=... instead

    def configs(self) -> list[OnlineConfig]:
        return configs(self.scale, self.overrides)

    def summarise(self, table: pd.DataFrame) -> pd.DataFrame:
        return summarise(table)

    def figures(self, table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
        return figures(table, out)

    def format_summary(self, summary: pd.DataFrame) -> str:
        return format_summary(summary)
