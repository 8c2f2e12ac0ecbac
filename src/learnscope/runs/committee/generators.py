"""Generative models x = G(c) of the Gaussian-equivalence study, and their input moments (numpy float64).

Goldt et al. 2020, as documented in docs/studies/gaussian_equivalence.md (the § below are of that page). The
latent is c ~ N(0, I_D); the student sees x = G(c) in R^N, the teacher acts on c (§2). The ODEs need the
moments Omega = Cov(x) (N, N) and Phi = Cov(x, c) (N, D) and the mean of x (§2, §7.3), returned here as
`ode.Moments` plus the means.

* `RandomSignGenerator`: the `rand` generator (§3), an L-layer fully connected sign network D -> N with
  Gaussian weights N(0, 1/fan_in), and its analytic moments (§4.2).
* `DCGANGenerator`: the DCGAN generator of §3 (latent 100 -> 3x32x32, 3,573,824 parameters), random (the
  DCGAN initialisation, seeded) or a trained state dict (the original's `dcgan_*_weights.pth` load as is).
* `RealNVPGenerator`: the real NVP flow of §3 (CIFAR-10 architecture: two scales of affine couplings),
  random (seeded) or a state dict of ours; invertible with an exact log-determinant.
* `IIDGenerator`: x = c ~ N(0, I) (the Saad-Solla setting), for symmetry.
* `make_generator(name, D, N, L, seed, weights)`: the registry shared by the CLI and the studies.
* `estimate_moments`: a streaming, batched Monte-Carlo estimator for any sampler (§4.1: unlike the original's,
  exact Chan/Welford merges in float64, with a convergence measure and a progress bar).
* `save_moments` / `load_moments`: a moments file (.npz, no pickles) that the ODEs consume.

Samplers have the simulator's signature `sample(rng, n) -> (x (n, N), c (n, D))`, numpy float64
(`learnscope.models.committee.simulate_online_sgd`). The torch generators run in float32, batched, on the
CPU by default; the latents come from the numpy rng, so a seed fixes the samples of every generator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from ...atomic import atomic_savez
from ...errors import ConfigError, DataError
from ...inputs import note_input
from ...registry import GENERATORS
from ...sections import Strict
from ...ui import progress_bar
from .ode import Moments

Sampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
MomentMethod = Literal["arcsine", "linearised"]

__all__ = [
    "GENERATORS",
    "DCGANGenerator",
    "GeneratorMoments",
    "IIDGenerator",
    "RandomSignGenerator",
    "RealNVPGenerator",
    "estimate_moments",
    "load_moments",
    "make_generator",
    "save_moments",
]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class GeneratorMoments:
    """Moments of a generator: `moments` (Omega = Cov(x), Phi = Cov(x, c)), `mean_x` (N,), `mean_c` (D,).

    For a Monte-Carlo estimate also the number of samples and the convergence measure `rel_change`: for each
    of "omega", "phi", "mean_x", ||est(P) - est(P/2)||_F / ||est(P)||_F, the relative change over the last
    halving of the samples (None for analytic moments)."""

    moments: Moments
    mean_x: np.ndarray
    mean_c: np.ndarray
    n_samples: int | None = None
    rel_change: dict[str, float] | None = None
    meta: dict[str, Any] | None = None  # what produced them (generator, seed, ...), kept in a moments file

    @property
    def omega(self) -> np.ndarray:
        return self.moments.omega

    @property
    def phi(self) -> np.ndarray:
        return self.moments.phi


def _sign(u: np.ndarray) -> np.ndarray:
    """sign with sign(0) := +1, so outputs are exactly +-1 (u = 0 has probability 0), written over `u` (a
    fresh product): in place and branch-free, it runs at memory speed, where np.where(u >= 0, 1.0, -1.0)
    allocated a second array of the size of the generator's widest layer and cost 3x the layer's matrix
    product.
    Adding +0.0 turns -0.0 into +0.0, so copysign gives +1 at 0 exactly as `u >= 0` does."""
    u += 0.0
    return np.copysign(1.0, u, out=u)


class RandomSignGenerator:
    """The `rand` generator: x = sign(F_L sign(... sign(F_1 c))), c ~ N(0, I_D)
    (docs/studies/gaussian_equivalence.md §3).

    Widths [D]*L + [N] (default L = 4: D -> D -> D -> D -> N), no biases, weights F_l ~ N(0, 1/fan_in) drawn
    from `rng` (an int seed or a numpy Generator). Outputs are +-1 with mean exactly 0 (x is odd in c) and
    Omega has unit diagonal. Calling the object samples: `gen(rng, n) -> (x (n, N), c (n, D))`."""

    def __init__(self, D: int, N: int, L: int = 4, rng: np.random.Generator | int = 0) -> None:
        if min(D, N, L) < 1:
            raise ValueError(f"D, N, L must be >= 1, got D={D}, N={N}, L={L}")
        rng = np.random.default_rng(rng)
        self.D, self.N, self.L = D, N, L
        widths = [D] * L + [N]
        self.weights = [
            rng.standard_normal((widths[i + 1], widths[i])) / math.sqrt(widths[i]) for i in range(L)
        ]

    def forward(self, c: np.ndarray) -> np.ndarray:
        """x = G(c) for latents c (n, D)."""
        h = np.asarray(c, dtype=float)
        for F in self.weights:
            h = _sign(h @ F.T)
        return h

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n fresh samples (x (n, N), c (n, D)), c ~ N(0, I_D) from rng."""
        c = rng.standard_normal((n, self.D))
        return self.forward(c), c

    __call__ = sample

    def analytic_moments(self, method: MomentMethod = "arcsine") -> GeneratorMoments:
        """Omega = Cov(x), Phi = Cov(x, c) and the mean (0 for both x and c), in closed form.

        "arcsine" (docs/studies/gaussian_equivalence.md Eq. (4.1)): the arcsine law for sign units of a
        Gaussian pre-activation u with covariance S, E[sign u_i sign u_j] = (2/pi) asin(S_ij/sqrt(S_ii S_jj)),
        and Stein's lemma E[sign(u_i) c] = sqrt(2/pi) Cov(u_i, c)/sqrt(S_ii), applied layer by layer with
        S = F Omega_{l-1} F', Cov(u, c) = F Phi_{l-1}, Omega_0 = Phi_0 = I_D. Exact for L = 1; for L >= 2 the
        pre-activations F h of the +-1 hidden units are only approximately Gaussian (a Gaussian closure, error
        shrinking with D; at D = 100, L = 4 a few per cent, see tests/data/test_generators.py).
        "linearised": the original script's recursion (Eq. (4.2) there), b = sqrt(2/pi): Omega = b^2 F_1 F_1',
        Phi = b F_1, then Omega <- b^2 F_l ((1 - b^2) I + Omega) F_l', Phi <- b F_l Phi, finally
        diag(Omega) := 1. It ignores the row norms of F and is off by 10-30 % (relative Frobenius) even for
        L = 1; kept to reproduce the original.
        """
        D = self.D
        if method == "arcsine":
            omega, phi = np.eye(D), np.eye(D)
            for F in self.weights:
                S = F @ omega @ F.T
                s = np.sqrt(np.diagonal(S))
                corr = np.clip(S / np.outer(s, s), -1.0, 1.0)
                np.fill_diagonal(corr, 1.0)
                omega = (2 / math.pi) * np.arcsin(corr)
                phi = _SQRT_2_OVER_PI * (F @ phi) / s[:, None]
        elif method == "linearised":
            b = _SQRT_2_OVER_PI
            F = self.weights[0]
            omega, phi = b * b * F @ F.T, b * F
            for F in self.weights[1:]:
                omega = b * b * F @ ((1 - b * b) * np.eye(omega.shape[0]) + omega) @ F.T
                phi = b * F @ phi
            np.fill_diagonal(omega, 1.0)
        else:
            raise ValueError(f"method={method!r}: allowed 'arcsine', 'linearised'")
        return GeneratorMoments(Moments(omega=omega, phi=phi), mean_x=np.zeros(self.N), mean_c=np.zeros(D))


class IIDGenerator:
    """x = c ~ N(0, I_N) (D = N): the Saad-Solla setting, whose moments are Omega = Phi = I exactly."""

    def __init__(self, D: int, N: int) -> None:
        if D != N or N < 1:
            raise ValueError(f"the iid generator has x = c, so D must equal N (got D={D}, N={N})")
        self.D = self.N = N

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.standard_normal((n, self.D))
        return c, c

    __call__ = sample

    def analytic_moments(self) -> GeneratorMoments:
        return GeneratorMoments(Moments.iid(), mean_x=np.zeros(self.N), mean_c=np.zeros(self.D))


# ----------------------------------------------------------------------------------------------------------
# Deep generators as torch modules (float32 networks, float64 samples)
# ----------------------------------------------------------------------------------------------------------


def _torch_generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def load_state_dict_file(module: nn.Module, path: str | Path, what: str) -> None:
    """Load a state dict saved with torch.save into `module`, with torch.load(weights_only=True) (no code
    from the file runs). A missing, unreadable or mismatching file is a one-line DataError that says why."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"{what} weights {path} cannot be read as a torch state dict ({type(exc).__name__})"
        ) from None
    note_input(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{what} weights {path}: not a state dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    for key in own:  # files from torch < 0.4.1 have no BatchNorm batch counter; it is not used in eval mode
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if items
    ]
    if problems:
        raise DataError(f"{what} weights {path} do not fit this architecture: {'; '.join(problems)}")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise DataError(f"{what} weights {path}: non-finite values")
    module.load_state_dict(state)


@torch.no_grad()
def _calibrate_batchnorm(module: nn.Module, run: Callable[[], torch.Tensor]) -> None:
    """Set every BatchNorm's running statistics to those of one calibration batch (`run()` in train mode, a
    cumulative average over one batch), then switch to eval mode, where BN is a fixed per-channel affine
    map. A randomly initialised network then normalises as a trained one does, instead of with the
    meaningless defaults (mean 0, variance 1)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    run()
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    module.eval()


class _TorchGenerator(nn.Module):
    """Shared sampling interface of the torch generators: latents c ~ N(0, I_D) from the numpy rng (float64),
    the network in float32 in batches of `batch_size` (one forward call per batch, no per-sample loop),
    images flattened to x (n, N) in float64."""

    D: int
    N: int
    batch_size: int = 1024

    def latent_to_input(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def generate(self, c: np.ndarray) -> np.ndarray:
        """x = G(c) (n, N) float64 for latents c (n, D)."""
        c = np.asarray(c)
        out = np.empty((c.shape[0], self.N))
        for i in range(0, c.shape[0], self.batch_size):
            ct = torch.from_numpy(np.ascontiguousarray(c[i : i + self.batch_size], dtype=np.float32))
            x = self.latent_to_input(ct.to(self.device))
            out[i : i + len(ct)] = x.reshape(len(ct), self.N).cpu().numpy()
        return out

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n fresh samples (x (n, N), c (n, D)), float64, c ~ N(0, I_D) from rng."""
        c = rng.standard_normal((n, self.D))
        return self.generate(c), c


class DCGANGenerator(_TorchGenerator):
    """The DCGAN generator of docs/studies/gaussian_equivalence.md §3 (pytorch/examples, ngf = 64, nz = 100,
    nc = 3): c (B, nz) ->
    ConvT(nz, 8ngf, 4, 1, 0) BN ReLU -> 4x4, ConvT(8ngf, 4ngf, 4, 2, 1) BN ReLU -> 8x8, ConvT(4ngf, 2ngf)
    BN ReLU -> 16x16, ConvT(2ngf, ngf) BN ReLU -> 32x32, ConvT(ngf, nc, 1, 1, 0) tanh -> (B, nc, 32, 32);
    no conv bias, 3,573,824 parameters at the defaults. Used in eval mode (BN with running statistics).

    With `weights`, a state dict of this architecture (the original's `dcgan_{rand,cifar10}_weights.pth` use
    the same `main.<i>` names). Otherwise random from `seed` (an int or a torch.Generator; the global torch
    RNG is not touched), then BN running statistics calibrated on `calibration` latents from the same
    generator. `init = "pytorch"` (default) is PyTorch's own initialisation of the layers (conv weights
    kaiming-uniform with a = sqrt(5), BN gamma = 1, beta = 0): the statistics of the original's random
    generator match it (mean image std 0.45 over pixels, ||Phi||_F = 12.3, singular values 1.56 .. 0.91;
    this one gives 0.54, 16.6, 2.1 .. 1.2 at seed 0 from 2.5 x 10^5 samples), while the DCGAN training
    script's `init = "dcgan"` (conv ~ N(0, 0.02), BN gamma ~ N(1, 0.02)) gives a nearly constant image
    (0.10, 2.5, 0.34 .. 0.17).
    `ngf` and `nc` shrink the network for tests; N = nc * 32 * 32."""

    def __init__(
        self,
        nz: int = 100,
        nc: int = 3,
        ngf: int = 64,
        *,
        seed: int | torch.Generator = 0,
        weights: str | Path | None = None,
        init: Literal["pytorch", "dcgan"] = "pytorch",
        calibration: int = 128,
        batch_size: int = 1024,
    ) -> None:
        super().__init__()
        if min(nz, nc, ngf) < 1:
            raise ValueError(f"nz, nc, ngf must be >= 1, got {nz}, {nc}, {ngf}")
        if init not in ("pytorch", "dcgan"):
            raise ValueError(f"init must be 'pytorch' or 'dcgan', got {init!r}")
        self.D, self.N, self.nz, self.nc, self.ngf = nz, nc * 32 * 32, nz, nc, ngf
        self.batch_size = batch_size
        with torch.device("meta"):  # no global-RNG draws at construction; filled below
            layers: list[nn.Module] = []
            widths = [nz, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
            for i in range(4):
                stride, pad = (1, 0) if i == 0 else (2, 1)
                layers += [
                    nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride, pad, bias=False),
                    nn.BatchNorm2d(widths[i + 1]),
                    nn.ReLU(True),
                ]
            layers += [nn.ConvTranspose2d(ngf, nc, 1, 1, 0, bias=False), nn.Tanh()]
            self.main = nn.Sequential(*layers)
        self.to_empty(device="cpu")
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
        if weights is not None:
            load_state_dict_file(self, weights, "DCGAN")
            self.eval()
        else:
            gen = _torch_generator(seed)
            for m in self.modules():
                if isinstance(m, nn.ConvTranspose2d) and init == "dcgan":
                    nn.init.normal_(m.weight, 0.0, 0.02, generator=gen)
                elif isinstance(m, nn.ConvTranspose2d):  # what ConvTranspose2d.reset_parameters draws
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                elif isinstance(m, nn.BatchNorm2d):
                    if init == "dcgan":
                        nn.init.normal_(m.weight, 1.0, 0.02, generator=gen)
                    else:
                        nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            z = torch.randn(calibration, nz, generator=gen)
            _calibrate_batchnorm(self, lambda: self(z))
        self.requires_grad_(False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """Images (B, nc, 32, 32) in [-1, 1] for latents c (B, nz)."""
        return self.main(c.reshape(c.shape[0], self.nz, 1, 1))

    def latent_to_input(self, c: torch.Tensor) -> torch.Tensor:
        return self(c)


# --- real NVP ----------------------------------------------------------------------------------------------


def _squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); channel c*4 + 2i + j holds pixel (2h + i, 2w + j) of channel c."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def _unsqueeze(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    return x.reshape(B, C // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, C // 4, 2 * H, 2 * W)


# 2x2 positions (i, j) in the order of the original's `order_matrix`: the first two form one checkerboard
# colour (kept for the next scale), the last two the other colour (factored out).
_FACTOR_ORDER = ((0, 0), (1, 1), (0, 1), (1, 0))


def _factor_out(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> on, off (B, 2C, H/2, W/2): channels grouped by 2x2 position, position-major."""
    B, C, H, W = x.shape
    blocks = x.reshape(B, C, H // 2, 2, W // 2, 2)
    parts = [blocks[:, :, :, i, :, j] for i, j in _FACTOR_ORDER]
    return torch.cat(parts[:2], dim=1), torch.cat(parts[2:], dim=1)


def _restore(on: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Inverse of `_factor_out`."""
    B, C2, h, w = on.shape
    C = C2 // 2
    parts = [*on.split(C, dim=1), *off.split(C, dim=1)]
    out = on.new_empty(B, C, h, 2, w, 2)
    for (i, j), part in zip(_FACTOR_ORDER, parts, strict=True):
        out[:, :, :, i, :, j] = part
    return out.reshape(B, C, 2 * h, 2 * w)


class _ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _Conditioner(nn.Module):
    """ReLU, conv3x3 in -> dim, `res_blocks` residual blocks, BN ReLU conv1x1 dim -> out (the original's
    ResidualModule without skips and weight norm)."""

    def __init__(self, c_in: int, dim: int, c_out: int, res_blocks: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, dim, 3, padding=1, bias=True),
            *[_ResBlock(dim) for _ in range(res_blocks)],
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            nn.Conv2d(dim, c_out, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _AffineCoupling(nn.Module):
    """Affine coupling of real NVP (Dinh et al. 2017, Eq. 6-8), data -> latent direction `f`:
    y_on = x_on exp(s(x_off)) + t(x_off), y_off = x_off, with s = scale tanh(.) + scale_shift.
    "checkerboard": x_off is x * mask (a checkerboard of `parity`), conditioner input [x_off, -x_off, mask];
    "channel": the channels split in halves, x_off one half, conditioner input [x_off, -x_off]."""

    def __init__(self, kind: str, channels: int, size: int, parity: int, dim: int, res_blocks: int) -> None:
        super().__init__()
        self.kind, self.parity = kind, parity
        if kind == "checkerboard":
            self.in_bn = nn.BatchNorm2d(channels)
            self.cond = _Conditioner(2 * channels + 1, dim, 2 * channels, res_blocks)
        else:
            self.in_bn = nn.BatchNorm2d(channels // 2)
            self.cond = _Conditioner(channels, dim, channels, res_blocks)
        self.scale = nn.Parameter(torch.zeros(1))
        self.scale_shift = nn.Parameter(torch.zeros(1))

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """Checkerboard (1, 1, H, W): 1 where (h + w + parity) is odd, the conditioning pixels."""
        grid = torch.arange(x.shape[-1], device=x.device)
        return ((grid[:, None] + grid[None, :] + self.parity) % 2).to(x.dtype)[None, None]

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(on, off) halves of a channel coupling."""
        a, b = x.chunk(2, dim=1)
        return (a, b) if self.parity else (b, a)

    def _merge(self, on: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        return torch.cat((on, off) if self.parity else (off, on), dim=1)

    def _st(self, x_off: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.in_bn(x_off)
        h = [h, -h]
        if mask is not None:
            h.append(mask.expand(x_off.shape[0], 1, *x_off.shape[2:]))
        t, s = self.cond(torch.cat(h, dim=1)).chunk(2, dim=1)
        s = self.scale * torch.tanh(s) + self.scale_shift
        if mask is not None:
            s, t = s * (1.0 - mask), t * (1.0 - mask)
        return s, t

    def f(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent: (y, log|det dy/dx|) per sample."""
        if self.kind == "checkerboard":
            mask = self._mask(x)
            s, t = self._st(x * mask, mask)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        on, off = self._split(x)
        s, t = self._st(off)
        return self._merge(on * torch.exp(s) + t, off), s.flatten(1).sum(1)

    def g(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> data, the inverse of `f`: (x, log|det dx/dy|) per sample."""
        if self.kind == "checkerboard":
            mask = self._mask(y)
            s, t = self._st(y * mask, mask)
            return (y - t) * torch.exp(-s), -s.flatten(1).sum(1)
        on, off = self._split(y)
        s, t = self._st(off)
        return self._merge((on - t) * torch.exp(-s), off), -s.flatten(1).sum(1)


class RealNVPGenerator(_TorchGenerator):
    """The real NVP flow of docs/studies/gaussian_equivalence.md §3 (fmu2/realNVP, CIFAR-10 architecture), as
    the generator x = g(c): c ~ N(0, I_D) reshaped to (channels, size, size), D = N = channels * size^2
    (3072 at the defaults, so delta = 1).

    f (data -> latent): scale 1 on C x S x S, 3 checkerboard couplings (parities 1, 0, 1), squeeze, 3
    channel-wise couplings on 4C x S/2 x S/2 (0, 1, 0), unsqueeze, factor out half (one checkerboard colour);
    scale 2 on 2C x S/2 x S/2, 4 checkerboard couplings (1, 0, 1, 0); restore. g is its exact inverse.
    Couplings are affine, s = scale tanh(.) + scale_shift, with ResNet conditioners (`base_dim` channels,
    `res_blocks` blocks) and BatchNorm, used in eval mode. Differences from the original: no weight norm
    (a reparametrisation that matters only for training), no coupling-output BatchNorm; the trained
    original is a whole pickled object (§7.9 there) that is never unpickled here, and its
    hyper-parameters are unknown, so `weights` is a state dict of this class. Random weights: convs
    ~ N(0, 1/fan_in) from `seed`, scale = `init_scale` (the original's zero would make a random flow
    volume-preserving), shift 0, BN statistics calibrated on a batch of latents. x stays in the flow's
    output space (the original's logit space)."""

    def __init__(
        self,
        channels: int = 3,
        size: int = 32,
        base_dim: int = 32,
        res_blocks: int = 2,
        *,
        seed: int | torch.Generator = 0,
        weights: str | Path | None = None,
        init_scale: float = 0.5,
        calibration: int = 128,
        batch_size: int = 512,
    ) -> None:
        super().__init__()
        if size % 2 or size < 2 or min(channels, base_dim) < 1 or res_blocks < 0:
            raise ValueError(
                f"need an even size >= 2, channels, base_dim >= 1, res_blocks >= 0; got {channels}, {size}, "
                f"{base_dim}, {res_blocks}"
            )
        self.channels, self.size = channels, size
        self.D = self.N = channels * size * size
        self.batch_size = batch_size
        C, S = channels, size
        with torch.device("meta"):

            def coupling(kind, ch, sz, parity):
                return _AffineCoupling(kind, ch, sz, parity, base_dim, res_blocks)

            self.s1_ckbd = nn.ModuleList([coupling("checkerboard", C, S, p) for p in (1, 0, 1)])
            self.s1_chan = nn.ModuleList([coupling("channel", 4 * C, S // 2, p) for p in (0, 1, 0)])
            self.s2_ckbd = nn.ModuleList([coupling("checkerboard", 2 * C, S // 2, p) for p in (1, 0, 1, 0)])
        self.to_empty(device="cpu")
        for m in self.modules():  # buffers and parameters are uninitialised after to_empty
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
        if weights is not None:
            load_state_dict_file(self, weights, "real NVP")
            self.eval()
        else:
            gen = _torch_generator(seed)
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, nn.Conv2d):
                        fan_in = m.weight[0].numel()
                        nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)
                    elif isinstance(m, _AffineCoupling):
                        m.scale.fill_(init_scale)
                        m.scale_shift.zero_()
            z = torch.randn(calibration, self.D, generator=gen)
            _calibrate_batchnorm(self, lambda: self(z))
        self.requires_grad_(False)

    def inverse_and_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f: data x -> latent z (same shape as x: (B, D) or (B, C, S, S)) and log|det dz/dx| (B,)."""
        shape = x.shape
        z = x.reshape(shape[0], self.channels, self.size, self.size)
        logdet = z.new_zeros(shape[0])
        for layer in self.s1_ckbd:
            z, ld = layer.f(z)
            logdet = logdet + ld
        z = _squeeze(z)
        for layer in self.s1_chan:
            z, ld = layer.f(z)
            logdet = logdet + ld
        on, off = _factor_out(_unsqueeze(z))
        for layer in self.s2_ckbd:
            on, ld = layer.f(on)
            logdet = logdet + ld
        return _restore(on, off).reshape(shape), logdet

    def forward_and_logdet(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g: latent z -> data x (same shape as z) and log|det dx/dz| (B,), the inverse of f."""
        shape = z.shape
        on, off = _factor_out(z.reshape(shape[0], self.channels, self.size, self.size))
        logdet = z.new_zeros(shape[0])
        for layer in reversed(self.s2_ckbd):
            on, ld = layer.g(on)
            logdet = logdet + ld
        x = _squeeze(_restore(on, off))
        for layer in reversed(self.s1_chan):
            x, ld = layer.g(x)
            logdet = logdet + ld
        x = _unsqueeze(x)
        for layer in reversed(self.s1_ckbd):
            x, ld = layer.g(x)
            logdet = logdet + ld
        return x.reshape(shape), logdet

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """x = g(z), the generator direction."""
        return self.forward_and_logdet(z)[0]

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x)."""
        return self.inverse_and_logdet(x)[0]

    def latent_to_input(self, c: torch.Tensor) -> torch.Tensor:
        return self(c)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


def _images(name: str, N: int) -> None:
    if N % 1024:
        raise ConfigError(
            f"generator {name} makes 32 x 32 images: N must be channels * 1024, e.g. 3072 (got {N})"
        )


def _seeded_only(name: str, weights) -> None:
    if weights is not None:
        raise ConfigError(f"generator {name} has no weights file (its weights come from the seed)")


@GENERATORS.register("iid", IIDGenerator)
def _iid(D: int, N: int, L: int, seed: int, weights) -> IIDGenerator:
    _seeded_only("iid", weights)
    if D != N:
        raise ConfigError(f"generator iid has x = c, so D must equal N (got D={D}, N={N})")
    return IIDGenerator(D, N)


@GENERATORS.register("rand", RandomSignGenerator)
def _rand(D: int, N: int, L: int, seed: int, weights) -> RandomSignGenerator:
    _seeded_only("rand", weights)
    if L < 1:
        raise ConfigError(f"generator rand: need L >= 1 (got {L})")
    return RandomSignGenerator(D, N, L, rng=seed)


@GENERATORS.register("dcgan", DCGANGenerator)
def _dcgan(D: int, N: int, L: int, seed: int, weights) -> DCGANGenerator:
    _images("dcgan", N)
    return DCGANGenerator(nz=D, nc=N // 1024, seed=seed, weights=weights)


@GENERATORS.register("realnvp", RealNVPGenerator)
def _realnvp(D: int, N: int, L: int, seed: int, weights) -> RealNVPGenerator:
    _images("realnvp", N)
    if D != N:
        raise ConfigError(f"generator realnvp is a bijection, so D must equal N (got D={D}, N={N})")
    return RealNVPGenerator(channels=N // 1024, size=32, seed=seed, weights=weights)


def make_generator(name: str, D: int, N: int, L: int = 4, seed: int = 0, weights: str | Path | None = None):
    """The generator `name` (registry.GENERATORS) with latent size D and input size N, shared by the CLI and
    the studies: "iid" (x = c, D = N), "rand" (L sign layers, weights from `seed`), "dcgan" (latent D,
    N = 3072 for 3 x 32 x 32 or 1024 for a grey 1 x 32 x 32), "realnvp" (D = N = channels * 32^2). The deep
    ones are random from `seed` or load `weights` (a state dict). Every one has `.sample(rng, n) -> (x, c)`;
    those with closed-form moments ("iid", "rand") have `.analytic_moments()`. A plugin adds one with
    `@GENERATORS.register(name, its_class)` on a builder (D, N, L, seed, weights). Bad settings raise
    ConfigError, a bad weights file DataError."""
    try:
        builder = GENERATORS.builder(name)
    except ConfigError:
        raise ConfigError(f"unknown generator {name!r}; available: {', '.join(GENERATORS.kinds())}") from None
    if min(D, N) < 1 or seed < 0:
        raise ConfigError(f"generator {name}: need D, N >= 1 and seed >= 0 (got D={D}, N={N}, seed={seed})")
    return builder(D, N, L, seed, weights)


class _Accumulator:
    """Exact streaming means and (cross-)covariances in float64: each batch's centred sums are merged with
    Chan et al.'s pairwise update, so no catastrophic cancellation (the original accumulated an approximate
    Welford update in float32: docs/studies/gaussian_equivalence.md §4.1)."""

    def __init__(self, N: int, D: int) -> None:
        self.n = 0
        self.mx, self.mc = np.zeros(N), np.zeros(D)
        self.Sxx, self.Sxc = np.zeros((N, N)), np.zeros((N, D))

    def add(self, x: np.ndarray, c: np.ndarray) -> None:
        nb = x.shape[0]
        bx, bc = x.mean(axis=0), c.mean(axis=0)
        xc = x - bx
        n = self.n + nb
        dx, dc = bx - self.mx, bc - self.mc
        f = self.n * nb / n
        self.Sxx += xc.T @ xc + f * np.outer(dx, dx)
        self.Sxc += xc.T @ (c - bc) + f * np.outer(dx, dc)
        self.mx += dx * (nb / n)
        self.mc += dc * (nb / n)
        self.n = n

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(omega, phi, mean_x, mean_c), covariances normalised by n - 1."""
        d = max(self.n - 1, 1)
        omega = self.Sxx / d
        return 0.5 * (omega + omega.T), self.Sxc / d, self.mx.copy(), self.mc.copy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    na = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / na) if na > 0 else float(np.linalg.norm(a - b))


def estimate_moments(
    sample: Sampler,
    rng: np.random.Generator,
    n_samples: int,
    *,
    batch_size: int = 4096,
    tol: float | None = None,
    max_samples: int | None = None,
    quiet: bool = False,
    description: str = "moments",
) -> GeneratorMoments:
    """Monte-Carlo Omega = Cov(x), Phi = Cov(x, c), E[x], E[c] of any sampler, streaming
    (docs/studies/gaussian_equivalence.md §4.1).

    Draws `sample(rng, batch)` in batches (the last one trimmed so exactly n_samples are used) and merges
    them exactly in float64. The estimate at half the samples is kept, and `rel_change` reports
    ||est(P) - est(P/2)||_F / ||est(P)||_F for omega, phi and mean_x: for an unbiased estimator this is about
    the relative standard error of est(P) (est(P) - est(P/2) is half the difference of two independent
    half-sample estimates, whose variance is Var est(P)), so it shrinks as 1/sqrt(P). With `tol`, the sample
    count keeps doubling (up to max_samples) until the change of both omega and phi is below tol. A rich
    progress bar shows the samples drawn (none when quiet or not on a terminal). Same rng and arguments give
    the same result."""
    if n_samples < 2 or batch_size < 1:
        raise ValueError(f"need n_samples >= 2 and batch_size >= 1, got {n_samples}, {batch_size}")
    total = n_samples if tol is None else max(n_samples, max_samples or n_samples)
    with progress_bar(total, description, quiet) as bar:
        x0, c0 = sample(rng, min(batch_size, n_samples // 2))
        x0, c0 = np.asarray(x0, dtype=float), np.asarray(c0, dtype=float)
        acc = _Accumulator(x0.shape[1], c0.shape[1])
        acc.add(x0, c0)
        bar.update(acc.n)

        def fill_to(target: int) -> None:
            while acc.n < target:
                x, c = sample(rng, min(batch_size, target - acc.n))
                acc.add(np.asarray(x, dtype=float), np.asarray(c, dtype=float))
                bar.update(acc.n)

        target = n_samples
        fill_to(target // 2)
        half = acc.result()  # exactly target // 2 samples: the first batch has at most that many
        while True:
            fill_to(target)
            full = acc.result()
            rel = {
                "omega": _rel(full[0], half[0]),
                "phi": _rel(full[1], half[1]),
                "mean_x": _rel(full[2], half[2]),
            }
            bar.update(acc.n, probe=f"rel. change Omega {rel['omega']:.2e}  Phi {rel['phi']:.2e}")
            if tol is None or max(rel["omega"], rel["phi"]) < tol:
                break
            if max_samples is not None and 2 * target > max_samples:
                break
            half, target = full, 2 * target
    omega, phi, mean_x, mean_c = full
    return GeneratorMoments(Moments(omega=omega, phi=phi), mean_x, mean_c, n_samples=acc.n, rel_change=rel)


# ----------------------------------------------------------------------------------------------------------
# Moments files
# ----------------------------------------------------------------------------------------------------------

MOMENTS_FORMAT = "learnscope.moments/1"
_REL_KEYS = ("omega", "phi", "mean_x")


def save_moments(path: str | Path, moments: GeneratorMoments, meta: dict[str, Any] | None = None) -> Path:
    """Write moments to an .npz (written to a temporary file, then renamed): omega (N, N), phi (N, D),
    mean_x (N,), mean_c (D,) in float64, n_samples (-1 for closed-form moments), rel_change_{omega,phi,mean_x}
    (NaN when absent), and `meta` (the generator's name, D, N, seed, ...; JSON) merged over `moments.meta`.
    Identity moments (None, x = c) are written out as identity matrices. Read back with `load_moments`."""
    path = Path(path)
    mx, mc = np.asarray(moments.mean_x, dtype=float), np.asarray(moments.mean_c, dtype=float)
    N, D = mx.shape[0], mc.shape[0]
    omega = np.eye(N) if moments.omega is None else np.asarray(moments.omega, dtype=float)
    phi = np.eye(N, D) if moments.phi is None else np.asarray(moments.phi, dtype=float)
    if omega.shape != (N, N) or phi.shape != (N, D):
        raise ValueError(f"shapes: omega {omega.shape}, phi {phi.shape}, mean_x ({N},), mean_c ({D},)")
    rel = moments.rel_change or {}
    body = {**(moments.meta or {}), **(meta or {})}
    arrays = {
        "format": np.array(MOMENTS_FORMAT),
        "omega": omega,
        "phi": phi,
        "mean_x": mx,
        "mean_c": mc,
        "n_samples": np.array(-1 if moments.n_samples is None else moments.n_samples, dtype=np.int64),
        **{f"rel_change_{k}": np.array(rel.get(k, math.nan), dtype=float) for k in _REL_KEYS},
        "meta": np.array(json.dumps(body, sort_keys=True, default=str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, arrays)
    return path


def load_moments(path: str | Path) -> GeneratorMoments:
    """Moments from a `save_moments` file (np.load with allow_pickle=False: nothing in the file runs), with
    `meta` as saved. A missing or unreadable file, a missing key, a wrong shape or a non-finite value is a
    one-line DataError. The result's `.moments` feeds `ode.ge_initial_state`; D and N (so
    delta = D/N) follow from phi's shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"moments file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            for key in ("omega", "phi", "mean_x", "mean_c"):
                if key not in files:
                    raise DataError(
                        f"moments file {path}: missing key {key!r} (has {', '.join(sorted(files))})"
                    )
            data = {key: f[key] for key in files}
        note_input(path)
    except DataError:
        raise
    except Exception as exc:  # not a zip, truncated, an object array, ...
        raise DataError(f"moments file {path} cannot be read as .npz ({type(exc).__name__}: {exc})") from None
    arrays = {}
    for key in ("omega", "phi", "mean_x", "mean_c"):
        a = data[key]
        if a.dtype.kind not in "fiu":
            raise DataError(f"moments file {path}: {key} has dtype {a.dtype}, expected floats")
        arrays[key] = a.astype(float)
    omega, phi, mean_x, mean_c = (arrays[k] for k in ("omega", "phi", "mean_x", "mean_c"))
    if omega.ndim != 2 or omega.shape[0] != omega.shape[1] or omega.shape[0] < 1:
        raise DataError(f"moments file {path}: omega has shape {omega.shape}, expected (N, N)")
    N = omega.shape[0]
    if phi.ndim != 2 or phi.shape[0] != N or phi.shape[1] < 1:
        raise DataError(f"moments file {path}: phi has shape {phi.shape}, expected ({N}, D)")
    D = phi.shape[1]
    for key, a, shape in (("mean_x", mean_x, (N,)), ("mean_c", mean_c, (D,))):
        if a.shape != shape:
            raise DataError(f"moments file {path}: {key} has shape {a.shape}, expected {shape}")
    for key, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise DataError(f"moments file {path}: {key} has non-finite values")
    # A matrix computed in float32 (as the original programme saves it) is symmetric only to a few float32
    # ulps (~1e-7 relative), so the tolerance follows the stored precision: a few hundred ulps of its dtype,
    # relative to the matrix's scale, and never tighter than float64 files have always been held to.
    stored = data["omega"].dtype
    ulp = float(np.finfo(stored if stored.kind == "f" else np.float64).eps)
    asymmetry = float(np.abs(omega - omega.T).max())
    if asymmetry > max(1e-8, 256 * ulp) * float(np.abs(omega).max()):
        raise DataError(
            f"moments file {path}: omega is not symmetric "
            f"(max |omega - omega.T| = {asymmetry:.3g}, {stored} precision)"
        )
    try:
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
        n_samples = int(data["n_samples"]) if "n_samples" in data else -1
        rel = {k: float(data[f"rel_change_{k}"]) for k in _REL_KEYS if f"rel_change_{k}" in data}
    except (ValueError, TypeError) as exc:
        raise DataError(f"moments file {path}: bad meta data ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"moments file {path}: meta is not a JSON object")
    rel = {k: v for k, v in rel.items() if not math.isnan(v)}
    return GeneratorMoments(
        Moments(omega=omega, phi=phi),
        mean_x,
        mean_c,
        n_samples=None if n_samples < 0 else n_samples,
        rel_change=rel or None,
        meta=meta,
    )


# --- `learnscope theory moments`: a generator's moments to a file -------------------------------------------


class MomentsSettings(Strict):
    """`learnscope theory moments` KEY=VALUE ...: which generator, how many samples, where to write."""

    out: str  # the moments file to write (.npz)
    generator: str = "rand"  # a kind of registry.GENERATORS (make_generator says which are known)
    D: PositiveInt | None = None  # latent size: rand and dcgan 100; realnvp and iid D = N
    N: PositiveInt | None = None  # input size: rand 500, dcgan and realnvp 3072, iid 100
    L: PositiveInt = 4  # sign layers of rand
    seed: NonNegativeInt = 0  # the generator's weights and the samples
    weights: str | None = None  # a trained state dict (dcgan, realnvp)
    samples: Annotated[int, Field(ge=2)] = 1_000_000  # Monte-Carlo samples (as OnlineConfig.moment_samples)
    batch_size: PositiveInt = 4096
    analytic: bool = False  # closed form instead (rand: the arcsine law; iid)

    def sizes(self) -> tuple[int, int]:
        if self.generator in ("realnvp", "iid"):
            default = 3072 if self.generator == "realnvp" else 100
            size = self.N if self.N is not None else self.D if self.D is not None else default
            return (size if self.D is None else self.D), (size if self.N is None else self.N)
        N = self.N if self.N is not None else 3072 if self.generator == "dcgan" else 500
        return (100 if self.D is None else self.D), N


def write_moments(
    cfg: MomentsSettings, quiet: bool = False
) -> tuple[Path, GeneratorMoments, tuple[int, int]]:
    """The moments of `cfg`'s generator (closed form with `analytic`, else estimated from `samples` draws)
    written to `cfg.out` with what made them; (the file, the moments, (D, N))."""
    D, N = cfg.sizes()
    if cfg.analytic and cfg.generator not in ("rand", "iid"):
        raise ConfigError(
            f"generator {cfg.generator} has no closed-form moments (rand, iid do); drop analytic"
        )
    gen = make_generator(cfg.generator, D, N, cfg.L, cfg.seed, cfg.weights)
    meta = {"generator": cfg.generator, "D": D, "N": N, "seed": cfg.seed}
    meta.update({"L": cfg.L} if cfg.generator == "rand" else {})
    meta.update({"weights": cfg.weights} if cfg.weights is not None else {})
    if cfg.analytic:
        moments = gen.analytic_moments()
        meta["method"] = "arcsine" if cfg.generator == "rand" else "exact"
    else:
        moments = estimate_moments(
            gen.sample, np.random.default_rng([cfg.seed, 7]), cfg.samples, batch_size=cfg.batch_size,
            quiet=quiet, description=f"moments {cfg.generator}",
        )  # fmt: skip
        meta["method"] = "estimate"
    return save_moments(Path(cfg.out), moments, meta), moments, (D, N)
