"""Online SGD of two-layer committee machines on generator inputs, and the ODEs that predict it: store runs.

One `OnlineConfig` is one setting of the Gaussian-equivalence experiments (Goldt et al. 2020, Sec. 3; model
and defaults in docs/studies/gaussian_equivalence.md §2, §6): a generator x = G(c) and the moments of its
inputs, a teacher acting on the latent c, R student replicas, the learning rate and the log-spaced times. With
`method = "simulation"` the replicas are trained by online SGD (model.py); with `method = "ode"`
the Gaussian-equivalence ODEs (ode.py) are integrated from the same initial weights, one
integration per replica, so each ODE line predicts the simulation replica that starts where it starts. Both
write the same records (t, step, replica, eg, Q, R, T, v) into a run directory of the store named by the
config's hash: a finished run is read back, never recomputed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from ...config import RunKindConfig, run_digest
from ...errors import ConfigError, DataError
from ...registry import GENERATORS, RUN_KINDS
from ...ui import progress_bar
from ..lifecycle import RunResult, computed_run
from .generators import GeneratorMoments, estimate_moments, load_moments, make_generator, save_moments
from .model import init_teacher_student, simulate_online_sgd
from .ode import (
    gaussian_equivalence_ode,
    ge_initial_state,
    load_initial_weights,
    log_times,
    order_parameters,
    saad_solla_ode,
)


class OnlineConfig(RunKindConfig):
    """One setting: generator and moments, teacher and students, SGD, times, replicas, simulation or ODE."""

    kind: Literal["online_sgd"] = "online_sgd"  # the run kind (see registry.RUN_KINDS)
    name: str = ""
    method: Literal["simulation", "ode"] = "simulation"
    # inputs x = G(c) - E[x], c ~ N(0, I_D)
    generator: str = "rand"  # a kind of registry.GENERATORS: iid, rand, dcgan, realnvp, or a plugin's
    D: PositiveInt = 100
    N: PositiveInt = 500
    L: PositiveInt = 4  # rand only
    generator_seed: NonNegativeInt = 0  # weights of rand, and of dcgan/realnvp without a weights file
    weights: str | None = None  # a trained dcgan/realnvp state dict
    # Omega, Phi: closed form where one exists (iid; rand: arcsine law), else a Monte-Carlo estimate
    moments: Literal["analytic", "linearised", "estimate"] = "analytic"
    moment_samples: PositiveInt = 1_000_000
    # committee machines: K student units, M teacher units, activation g
    K: PositiveInt = 2
    M: PositiveInt = 2
    g: Literal["erf", "linear", "relu"] = "erf"
    eta: PositiveFloat = 0.2
    train_second_layer: bool = True
    # time t = steps / N, `points` log-spaced from 0.1 to t_max (and 0)
    t_max: PositiveFloat = 1000.0
    points: PositiveInt = 41
    replicas: PositiveInt = 4
    seed: NonNegativeInt = 0
    n_test: PositiveInt = 10_000
    # ODE only
    dt: PositiveFloat = 0.01
    force_delta: PositiveFloat | None = None

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, name: str) -> str:
        if name not in GENERATORS.kinds():
            raise ValueError(f"unknown generator {name!r}; available: {', '.join(GENERATORS.kinds())}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> OnlineConfig:
        if self.generator == "iid" and self.D != self.N:
            raise ValueError(f"generator iid has x = c, so D must equal N (got D={self.D}, N={self.N})")
        if self.method == "ode" and self.g == "relu":
            raise ValueError("the ODEs exist for g = erf and linear only, not relu (simulate it instead)")
        if self.force_delta is not None and self.method != "ode":
            raise ValueError("force_delta is an ODE option (a negative control)")
        return self

    def times(self) -> np.ndarray:
        """The logged times, snapped to the SGD step grid so that simulation and ODE share them exactly."""
        return log_times(self.t_max, self.points, N=self.N)


# --- inputs ------------------------------------------------------------------------------------------------


def input_moments(
    cfg: OnlineConfig, store: str | Path | None = None, quiet: bool = True, gen=None
) -> GeneratorMoments:
    """Omega, Phi and the means that centre x: in closed form (iid; rand by the arcsine law or the original's
    linearisation), or estimated from `moment_samples` draws. An estimate is a property of the generator, not
    of the run: it is cached in `<store>/moments/` keyed by the generator and sample count, so the
    simulation and the ODE of a setting (and reruns) share one estimate. The generator (`gen`, else built
    from `cfg`) is only made when the moments are not read from the cache."""
    if cfg.moments != "estimate":
        gen = gen if gen is not None else _generator(cfg)
        if cfg.generator == "iid":
            return gen.analytic_moments()
        if cfg.generator == "rand":
            return gen.analytic_moments("linearised" if cfg.moments == "linearised" else "arcsine")
        raise ConfigError(f"generator {cfg.generator} has no closed-form moments; use moments=estimate")
    key = {
        k: getattr(cfg, k)
        for k in ("generator", "D", "N", "L", "generator_seed", "weights", "moment_samples")
    }
    if store is None:
        return _estimate(cfg, gen, quiet)
    path = Path(store) / "moments" / f"{run_digest(key)}.npz"
    if path.is_file():
        return load_moments(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The simulation and the ODE of a setting often start at once (a local sweep's workers): the first to take
    # the lock estimates, the others wait for its file instead of estimating the same moments again.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return load_moments(path)
        moments = _estimate(cfg, gen, quiet)
        save_moments(path, moments, key)
    return moments


def _estimate(cfg: OnlineConfig, gen, quiet: bool) -> GeneratorMoments:
    gen = gen if gen is not None else _generator(cfg)
    rng = np.random.default_rng([cfg.generator_seed, 7])
    return estimate_moments(gen.sample, rng, cfg.moment_samples, quiet=quiet, description="moments")


def centred(sample, mean_x: np.ndarray):
    """x - E[x], as the original centres inputs (docs/studies/gaussian_equivalence.md §2, §7.3); the teacher
    still sees the raw latent."""
    if not np.any(mean_x):
        return sample

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, c = sample(rng, n)
        return np.asarray(x, dtype=float) - mean_x, c

    return draw


def initial_weights(cfg: OnlineConfig) -> dict[str, np.ndarray]:
    """Students (R, K, N), (R, K) and the shared teacher from `seed` alone: simulation and ODE share them."""
    rng = np.random.default_rng([cfg.seed, 0])
    return init_teacher_student(rng, cfg.N, cfg.D, cfg.K, cfg.M, n_replicas=cfg.replicas)


# --- the two methods ---------------------------------------------------------------------------------------


def _generator(cfg: OnlineConfig):
    return make_generator(cfg.generator, cfg.D, cfg.N, cfg.L, cfg.generator_seed, cfg.weights)


def simulate(cfg: OnlineConfig, store: str | Path | None = None, quiet: bool = True) -> list[dict]:
    """Online SGD of all replicas at once, one fresh sample per step and replica."""
    gen = _generator(cfg)
    moments = input_moments(cfg, store, quiet, gen)
    init = initial_weights(cfg)
    return simulate_online_sgd(
        init["w"],
        init["v"],
        init["B"],
        init["A"],
        centred(gen.sample, moments.mean_x),
        eta=cfg.eta,
        times=cfg.times(),
        rng=np.random.default_rng([cfg.seed, 1]),
        g=cfg.g,
        train_second_layer=cfg.train_second_layer,
        n_test=cfg.n_test,
        moments=moments.moments,
    )


def integrate(cfg: OnlineConfig, store: str | Path | None = None, quiet: bool = True) -> list[dict]:
    """The ODE of each replica from its initial weights: Saad-Solla for iid inputs, Gaussian equivalence else.

    delta = D/N comes from the shapes (never a default: docs/studies/gaussian_equivalence.md §7.1) unless
    `force_delta` overrides it."""
    return integrate_replicas(
        input_moments(cfg, store, quiet),
        initial_weights(cfg),
        eta=cfg.eta,
        times=cfg.times(),
        g=cfg.g,
        train_second_layer=cfg.train_second_layer,
        dt=cfg.dt,
        force_delta=cfg.force_delta,
        saad_solla=cfg.generator == "iid" and cfg.force_delta is None,
        quiet=quiet,
        description=f"ODE {cfg.generator} N={cfg.N}",
    )


def integrate_replicas(
    moments: GeneratorMoments,
    init: dict[str, np.ndarray],
    *,
    eta: float,
    times: np.ndarray,
    g: str = "erf",
    train_second_layer: bool = True,
    dt: float = 0.01,
    force_delta: float | None = None,
    saad_solla: bool = False,
    quiet: bool = True,
    description: str = "ODE",
) -> list[dict]:
    """One ODE per replica of `init` (w (R, K, N), v (R, K), teacher B, A), all on the same moments: the
    Gaussian-equivalence equations, or with `saad_solla` the i.i.d.-input ones (Omega = I). Records carry
    `step` = round(t N) and `replica`, as the simulation's do."""
    w, v, B, A = (init[k] for k in ("w", "v", "B", "A"))
    N = w.shape[-1]
    records: list[dict] = []
    with progress_bar(len(w), description, quiet) as bar:
        for r in range(len(w)):
            if saad_solla:
                Q, R, T = order_parameters(w[r], B)
                out = saad_solla_ode(
                    Q, R, T, v[r], A, eta=eta, times=times, g=g, train_second_layer=train_second_layer, dt=dt
                )
            else:
                state = ge_initial_state(w[r], v[r], B, A, moments.moments, force_delta=force_delta)
                out = gaussian_equivalence_ode(
                    state, eta=eta, times=times, g=g, train_second_layer=train_second_layer, dt=dt
                )
            records += [{**rec, "step": round(rec["t"] * N), "replica": r} for rec in out]
            bar.update(r + 1)
    return records


@RUN_KINDS.register("online_sgd", OnlineConfig)
def run_online(cfg: OnlineConfig, store: str | Path = "runs", quiet: bool = True) -> RunResult:
    """The run of `cfg` (path, records): read from the store when done, else computed once and stored."""
    compute = simulate if cfg.method == "simulation" else integrate
    return computed_run(store, cfg, lambda: compute(cfg, store, quiet))


# --- the ODE on a moments file (`learnscope theory ode`, run kind `ge_ode`) -------------------------------


class MomentsFileODE(RunKindConfig):
    """The stored run's spec of the ODE on a moments file, resolved from a `MomentsODEConfig`: its settings,
    D and N, and the digests of the contents of its inputs (the moments file, the initial weights), by which
    it is named, not by their paths."""

    model_config = ConfigDict(extra="allow")  # the resolved body (`MomentsODEConfig.resolve`)
    HASH_EXCLUDES: ClassVar[tuple[str, ...]] = ("name", "moments", "init")


def initial_weights_from(init: Path) -> dict[str, np.ndarray]:
    """w, v, B, A from a weights .npz, a run directory holding init.npz, or an online-SGD simulation run
    (its weights are re-drawn from its config, as the simulation drew them)."""
    if not init.is_dir():
        return load_initial_weights(init)
    if (init / "init.npz").is_file():
        return load_initial_weights(init / "init.npz")
    try:
        cfg = json.loads((init / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"init {init}: a run directory needs init.npz or a readable config.json") from None
    if not isinstance(cfg, dict) or cfg.get("kind") != "online_sgd":
        raise DataError(f"init {init}: not a committee-machine simulation run, and no init.npz in it")
    return initial_weights(OnlineConfig.from_dict(cfg))


class MomentsODEConfig(RunKindConfig):
    """The run kind `ge_ode`: the Gaussian-equivalence ODE on a moments file written by `theory moments`
    (delta = D/N from its shapes), from the weights in `init` (a weights .npz, or a simulation's run
    directory) or, without it, from weights drawn as a one-replica simulation with `seed` would. Its run is
    named by its settings and the *contents* of its inputs (MomentsFileODE), not by their paths."""

    kind: Literal["ge_ode"] = "ge_ode"
    name: str = ""
    moments: str  # the moments file (.npz)
    init: str | None = None
    K: PositiveInt | None = None  # student units (default 2, or those of `init`)
    M: PositiveInt | None = None  # teacher units (default 2, or those of `init`)
    seed: NonNegativeInt = 0
    eta: PositiveFloat = 0.2  # the learning rate (eta / N for the second layer)
    t_max: PositiveFloat = 1000.0
    dt: PositiveFloat = 0.01
    points: PositiveInt = 41
    g: Literal["erf", "linear"] = "erf"  # the ODE theory exists for these two

    def resolve(self) -> tuple[MomentsFileODE, GeneratorMoments, dict[str, np.ndarray]]:
        """The stored run's spec (settings, content digests, D, N), the moments and the initial weights;
        DataError for inputs that do not fit, ConfigError for settings that disagree with them."""
        moments = Path(self.moments)
        gm = load_moments(moments)
        N, D = gm.phi.shape
        if self.init is None:
            weights = init_teacher_student(
                np.random.default_rng([self.seed, 0]), N, D, self.K or 2, self.M or 2
            )
        else:
            weights = initial_weights_from(Path(self.init))
        w, v, B, A = (np.asarray(weights[k], dtype=float) for k in ("w", "v", "B", "A"))
        if w.shape[-1] != N or B.shape[1] != D:
            raise DataError(
                f"init {self.init}: weights for N={w.shape[-1]}, D={B.shape[1]}, "
                f"but {moments} has N={N}, D={D}"
            )
        if (self.K is not None and w.shape[-2] != self.K) or (self.M is not None and B.shape[0] != self.M):
            raise ConfigError(
                f"K={self.K} M={self.M} disagree with init {self.init} (K={w.shape[-2]}, M={B.shape[0]})"
            )
        w, v = w.reshape(-1, *w.shape[-2:]), v.reshape(-1, v.shape[-1])  # (R, K, N), (R, K)
        digest = hashlib.sha256()
        for a in (w, v, B, A):
            digest.update(np.ascontiguousarray(a).tobytes())
        body = {
            "kind": "ge_ode",
            "name": self.name,
            "method": "ode",
            "generator": (gm.meta or {}).get("generator", "?"),
            "moments": str(moments),
            "moments_sha256": hashlib.sha256(moments.read_bytes()).hexdigest()[:16],
            "init": self.init,
            "weights_sha256": digest.hexdigest()[:16],
            "D": D,
            "N": N,
            "delta": D / N,
            "K": w.shape[1],
            "M": B.shape[0],
            "replicas": w.shape[0],
            "g": self.g,
            "eta": self.eta,
            "t_max": self.t_max,
            "dt": self.dt,
            "points": self.points,
            "seed": self.seed,
        }
        return MomentsFileODE(**body), gm, {"w": w, "v": v, "B": B, "A": A}

    def run_hash(self) -> str:
        return self.resolve()[0].run_hash()


@RUN_KINDS.register("ge_ode", MomentsODEConfig)
def run_ge_ode(cfg: MomentsODEConfig, store: str | Path = "runs", quiet: bool = True) -> RunResult:
    """Integrate (or read back) the ODE of `cfg`, stored as a run whose records (t, eg, Q, R, T, v per
    replica) `load_runs` reads next to simulations."""
    spec, gm, weights = cfg.resolve()
    N, D = spec.N, spec.D
    times = log_times(cfg.t_max, cfg.points, N=N)
    return computed_run(
        store,
        spec,
        lambda: integrate_replicas(
            gm,
            weights,
            eta=cfg.eta,
            times=times,
            g=cfg.g,
            dt=cfg.dt,
            quiet=quiet,
            description=f"GE ODE N={N} D={D}",
        ),
    )
