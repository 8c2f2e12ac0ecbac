"""Clones of a finite dataset: samples that keep some of its class-wise statistics and none of the rest.

Refinetti, Ingrosso & Goldt (2023) train on a clone of CIFAR-10 and test on the real test set, to see for how
many SGD steps a network needs nothing beyond the clone's statistics. The ladder of clones, per class k:

    mean        x = mu_k                                       (class means only)
    isotropic   x ~ N(mu_k, s_kc^2 I) per channel c, s_kc^2 = mean pixel variance   (the original's `gpiso`)
    diagonal    x ~ N(mu_k, diag(var_k))                       (per-feature variances)
    gaussian    x ~ N(mu_k, Sigma_k + ridge I)                 (the original's `gp`; per channel or joint)
    gmm         x ~ sum_j w_kj N(mu_kj, Sigma_kj + ridge I)     (k components per class, fitted by EM)
    coarse      `gaussian` fitted on the fine labels, samples labelled by a coarse map (`gpc`: more
                Gaussians than labels)
    file        samples read from disk (WGAN, cifar5m, ...)

Statistics are float64; every full covariance is factored once per class (Cholesky) and sampled with a
batched matrix product (never a sampler call per sample) from an explicit seeded `torch.Generator`. The
registered data kind `clone` fits on the source's train split, caches the fit on disk, and returns a Dataset
whose `train` is the clone and whose evaluation sets are `test` (the real test set), `real_train` and `train`
(the clone), and with `test_n` also `clone_test`: a held-out sample of the clone (the clone's own test set).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    SerializeAsAny,
    model_validator,
)

from ..atomic import atomic_savez, atomic_write
from ..errors import ConfigError, DataError
from ..inputs import note_input
from ..registry import DATA
from ..sections import DataConfig, registered
from .dataset import Augment, Dataset, FiniteDataConfig, Split, build_data, normalise_and_view

__all__ = [
    "CloneConfig",
    "CloneFit",
    "CloneReport",
    "CloneResult",
    "cache_dir",
    "clone_generator",
    "clone_report",
    "fit_clone",
    "load_clone_file",
    "make_clone",
    "sample_clone",
]

FitMethod = Literal["mean", "isotropic", "diagonal", "gaussian", "gmm"]
FIT_METHODS = ("mean", "isotropic", "diagonal", "gaussian", "gmm")

# The original code adds 1e-3 * I to each covariance of raw 0..255 pixels. Fits here run on the source's
# values before normalisation, where an 8-bit image is x / 255, so the same ridge is 1e-3 / 255^2 in those
# units (on data normalised per channel by std s_c it would be 1e-3 / (255 s_c)^2). Sources not made of 8-bit
# pixels get the same 1.5e-8: negligible jitter against unit-scale variances, as 1e-3 is against CIFAR's ~4e3.
GREY_LEVEL = 1 / 255
DEFAULT_RIDGE = 1e-3 * GREY_LEVEL**2

_FIT, _SAMPLE, _TEST = 0, 1, 2  # independent generator streams derived from the clone's seed
_CACHE_VERSION = 1


def clone_generator(seed: int, stream: int = _SAMPLE) -> torch.Generator:
    """A CPU generator for stream `stream` of `seed` (independent streams via numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --- the fitted model ---------------------------------------------------------------------------------------


@dataclass
class CloneFit:
    """Class-conditional statistics of a dataset, shaped for sampling.

    Features are viewed as (B, P): B covariance blocks of P features, B = channels for per-channel fits (and
    for the mean, isotropic and diagonal ones), B = 1 for a joint fit. Every class has m components (m = 1
    except for gmm). `scale` is None (mean), per-block or per-feature stds (K, m, B, 1 | P), or lower
    Cholesky factors (K, m, B, P, P) of the covariances, ridge included.
    """

    method: str
    shape: tuple[int, ...]  # one sample's shape
    counts: torch.Tensor  # (K,) training samples per class
    weights: torch.Tensor  # (K, m) component weights
    means: torch.Tensor  # (K, m, B, P) float64
    scale: torch.Tensor | None
    lo: torch.Tensor  # (C,) per-channel minimum of the source
    hi: torch.Tensor  # (C,) per-channel maximum
    ridge: float = 0.0
    log_likelihood: torch.Tensor | None = None  # gmm: (K,) mean log-likelihood of each class's training data

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def class_mean(self, k: int) -> torch.Tensor:
        """The model's mean of class k, flat (D,)."""
        return (self.weights[k, :, None] * self.means[k].flatten(1)).sum(0)

    def class_cov(self, k: int) -> torch.Tensor:
        """The model's covariance of class k, (D, D) float64 (mixtures include the spread of their means)."""
        D, (m, B, P) = self.dim, self.means.shape[1:]
        cov = torch.zeros(D, D, dtype=torch.float64)
        mu = self.class_mean(k)
        for j in range(m):
            w = self.weights[k, j].item()
            if self.scale is not None:
                s = self.scale[k, j]
                blocks = s @ s.mT if s.ndim == 3 else torch.diag_embed(s.expand(B, P) ** 2)
                cov += w * torch.block_diag(*blocks)
            d = self.means[k, j].flatten() - mu
            cov += w * torch.outer(d, d)
        return cov

    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers only: what the cache stores (loadable with weights_only=True)."""
        out = {
            "version": _CACHE_VERSION,
            "method": self.method,
            "shape": list(self.shape),
            "ridge": self.ridge,
            **{k: getattr(self, k) for k in ("counts", "weights", "means", "lo", "hi")},
        }
        for k in ("scale", "log_likelihood"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CloneFit:
        if state.get("version") != _CACHE_VERSION:
            raise ValueError(f"cache version {state.get('version')!r}")
        return cls(
            method=state["method"],
            shape=tuple(state["shape"]),
            counts=state["counts"],
            weights=state["weights"],
            means=state["means"],
            scale=state.get("scale"),
            lo=state["lo"],
            hi=state["hi"],
            ridge=state["ridge"],
            log_likelihood=state.get("log_likelihood"),
        )


def _channels(shape: tuple[int, ...]) -> int:
    """Images (C, H, W) and signals (C, L) have C channels; a vector (D,) is one channel."""
    return 1 if len(shape) == 1 else shape[0]


def _check_source(x: torch.Tensor, y: torch.Tensor, num_classes: int, least: int) -> torch.Tensor:
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"clone: need x (N, ...) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    counts = torch.bincount(y.long().cpu(), minlength=num_classes)
    if len(counts) > num_classes:
        raise DataError(f"clone: labels must lie in [0, {num_classes}), found {int(y.max())}")
    short = [k for k in range(num_classes) if counts[k] < least]
    if short:
        raise DataError(
            f"clone: class {short[0]} has {int(counts[short[0]])} training samples; fitting needs {least}"
        )
    return counts


def fit_clone(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    method: FitMethod = "gaussian",
    *,
    per_channel: bool = True,
    components: int = 2,
    ridge: float = DEFAULT_RIDGE,
    seed: int = 0,
    em_iters: int = 100,
    tol: float = 1e-9,
) -> CloneFit:
    """Fit the class-wise statistics of `method` to x (N, C, H, W), (N, C, L) or (N, D) with labels y.

    Covariances are unbiased (n_k - 1) plus `ridge` I, as the original code
    (docs/studies/increasing_complexity.md §3); `per_channel` makes channels independent given the class
    (each with its own spatial covariance, as the original), else one joint covariance. gmm: `components`
    full-covariance Gaussians per class by EM (k-means++ init from `seed`).
    """
    if method not in FIT_METHODS:
        raise DataError(f"clone: unknown fit method {method!r}; allowed: {', '.join(FIT_METHODS)}")
    shape = tuple(x.shape[1:])
    C, D = _channels(shape), math.prod(shape)
    B = 1 if method in ("gaussian", "gmm") and not per_channel else C
    P = D // B
    counts = _check_source(x, y, num_classes, max(2, components if method == "gmm" else 2))
    flat = x.reshape(len(x), C, -1)
    lo = flat.amin(dim=(0, 2)).double().cpu()
    hi = flat.amax(dim=(0, 2)).double().cpu()
    gen = clone_generator(seed, _FIT)

    weights, means, scales, lls = [], [], [], []
    for k in range(num_classes):
        xk = x[y == k].reshape(-1, B, P)
        n = len(xk)
        if method == "gmm":
            w, mu, factor, ll = _em(xk.double(), components, ridge, em_iters, tol, gen)
            weights.append(w)
            means.append(mu)
            scales.append(factor)
            lls.append(ll)
            continue
        weights.append(torch.ones(1, dtype=torch.float64, device=x.device))
        if method == "gaussian":  # block by block: a float64 centred copy of one channel at a time
            mu, cov = (torch.stack(v) for v in zip(*(_centred_gram(xk[:, b]) for b in range(B)), strict=True))
            scales.append(_cholesky(_add_ridge(cov.div_(n - 1), ridge))[None])
        else:
            mu = xk.mean(0, dtype=torch.float64)
        means.append(mu[None])
        if method == "isotropic":  # the average over positions of the per-pixel variance, per channel
            scales.append(xk.double().var(0).mean(-1, keepdim=True).sqrt()[None])
        elif method == "diagonal":
            scales.append(xk.double().var(0).sqrt()[None])
    return CloneFit(
        method=method,
        shape=shape,
        counts=counts,
        weights=torch.stack(weights).cpu(),
        means=torch.stack(means).cpu(),
        scale=torch.stack(scales).cpu() if scales else None,
        lo=lo,
        hi=hi,
        ridge=ridge if method in ("gaussian", "gmm") else 0.0,
        log_likelihood=torch.tensor(lls, dtype=torch.float64) if lls else None,
    )


def _centred_gram(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and centred sum of squares (X - mu)^T (X - mu) of the rows of xb (n, P), in float64. On the CPU
    through numpy, whose `a.T @ a` is BLAS syrk: half the work of a general product."""
    if xb.device.type != "cpu":
        a = xb.double()
        mu = a.mean(0)
        a -= mu
        return mu, a.mT @ a
    a = xb.numpy().astype(np.float64)
    mu = a.mean(0)
    a -= mu
    return torch.from_numpy(mu), torch.from_numpy(a.T @ a)


def _add_ridge(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    cov = cov.clone()
    cov.diagonal(dim1=-2, dim2=-1).add_(ridge)
    return cov


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of a batch of covariances; one that is numerically singular gets a jitter that
    grows from 1e-12 of its mean variance until it factors."""
    L, info = torch.linalg.cholesky_ex(cov)
    if not bool((info > 0).any()):
        return L
    flat_cov, flat_L = cov.reshape(-1, *cov.shape[-2:]), L.reshape(-1, *cov.shape[-2:]).clone()
    for i in torch.nonzero(info.reshape(-1) > 0).flatten().tolist():
        c = flat_cov[i]
        base = max(c.diagonal().mean().item(), 1e-300)
        for power in range(-12, 1):
            Li, bad = torch.linalg.cholesky_ex(_add_ridge(c, base * 10.0**power))
            if bad == 0:
                flat_L[i] = Li
                break
        else:
            raise DataError("clone: a class covariance is not positive semi-definite (non-finite data?)")
    return flat_L.reshape(cov.shape)


# --- Gaussian mixtures by EM --------------------------------------------------------------------------------


def _log_gauss(x: torch.Tensor, mu: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """log N(x | mu_j, L_j L_j^T) for x (n, B, P), mu (m, B, P), L (m, B, P, P) block factors -> (n, m).
    All components in one batched triangular solve (memory: m copies of x)."""
    _, B, P = x.shape
    diff = (x[None] - mu[:, None]).permute(0, 2, 3, 1)  # (m, B, P, n)
    sol = torch.linalg.solve_triangular(L, diff, upper=False)
    logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum((1, 2))  # (m,)
    return -0.5 * (sol.square().sum((1, 2)) + logdet[:, None] + B * P * math.log(2 * math.pi)).T


def _kmeans_pp(flat: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: indices of m rows, each drawn with probability proportional to its squared
    distance from the rows already chosen."""
    n = len(flat)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = (flat - flat[chosen[0]]).square().sum(1)
    for _ in range(1, m):
        p = d2 if d2.sum() > 0 else torch.ones_like(d2)
        chosen.append(int(torch.multinomial(p.cpu(), 1, generator=gen)))
        d2 = torch.minimum(d2, (flat - flat[chosen[-1]]).square().sum(1))
    return torch.tensor(chosen)


def _em(
    x: torch.Tensor, m: int, ridge: float, iters: int, tol: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """EM for m full-covariance (block-diagonal when B > 1) Gaussians on x (n, B, P) float64.

    Returns weights (m,), means (m, B, P), Cholesky factors (m, B, P, P) and the mean log-likelihood of x
    under exactly these parameters. Stops when the mean log-likelihood gains less than tol * |ll|."""
    n, B, P = x.shape
    mu = x[_kmeans_pp(x.reshape(n, -1), m, gen)].clone()
    centred = (x - x.mean(0)).transpose(0, 1)
    start = _add_ridge(centred.mT @ centred / n, ridge)
    cov = start.expand(m, B, P, P).clone()
    w = torch.full((m,), 1 / m, dtype=x.dtype, device=x.device)
    prev = -math.inf
    for it in range(iters + 1):
        L = _cholesky(cov)
        logp = _log_gauss(x, mu, L) + w.log()
        norm = torch.logsumexp(logp, 1)
        ll = norm.mean().item()
        if it == iters or ll - prev <= tol * abs(ll):
            return w, mu, L, ll
        prev = ll
        resp = (logp - norm[:, None]).exp()  # (n, m)
        nj = resp.sum(0)
        w = nj / n
        alive = (nj > 1e-8 * n)[:, None, None]  # a component that lost all its samples keeps its parameters
        nj = nj.clamp_min(1e-300)[:, None, None]
        mu = torch.where(alive, torch.einsum("nm,nbp->mbp", resp, x) / nj, mu)
        diff = (x[None] - mu[:, None]).transpose(1, 2)  # (m, B, n, P)
        new_cov = _add_ridge((diff * resp.T[:, None, :, None]).mT @ diff / nj[..., None], ridge)
        cov = torch.where(alive[..., None], new_cov, cov)
    raise AssertionError("unreachable")


# --- sampling -----------------------------------------------------------------------------------------------


def _allocate(counts: torch.Tensor, n: int) -> torch.Tensor:
    """n split over classes in proportion to `counts` (largest remainders; exact when n = counts.sum())."""
    total = int(counts.sum())
    base = counts * n // total
    remainder = counts * n % total
    extra = n - int(base.sum())
    order = torch.argsort(-remainder, stable=True)
    base[order[:extra]] += 1
    return base


def _add_lower_product(out: torch.Tensor, z: torch.Tensor, L: torch.Tensor, depth: int = 2) -> None:
    """out += z @ L^T for lower-triangular L (batched), skipping the zero upper-right blocks: with `depth`
    levels of 2 x 2 blocking, 5/8 of a dense product's work at depth 2."""
    P = L.shape[-1]
    if depth == 0 or P < 256:
        out.baddbmm_(z, L.mT)
        return
    h = P // 2
    _add_lower_product(out[..., :h], z[..., :h], L[..., :h, :h], depth - 1)
    out[..., h:].baddbmm_(z[..., :h], L[..., h:, :h].mT)
    _add_lower_product(out[..., h:], z[..., h:], L[..., h:, h:], depth - 1)


def sample_clone(
    fit: CloneFit,
    n: int,
    generator: torch.Generator,
    *,
    labels: Literal["counts", "uniform"] = "counts",
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples (float32, shaped like the source) and their labels, drawn from `generator` (on its device).

    labels="counts": the source's class proportions, exactly (in shuffled order); "uniform": i.i.d. uniform
    labels like the original (drawn as the class counts of n uniform draws, then shuffled: the same law).
    `clamp`: clip each channel to the source's range (the original clips to 0..255). Full covariances: one
    batched product with the stored Cholesky factors per class and component (blocked to skip the factors'
    zero triangle).
    """
    device = generator.device
    K, (m, B, P) = fit.num_classes, fit.means.shape[1:]
    if labels == "counts":
        per_class = _allocate(fit.counts.clone(), n)
    elif labels == "uniform":  # i.i.d.: the class counts of n uniform draws, then a random arrangement
        per_class = torch.bincount(torch.randint(K, (n,), generator=generator, device=device), minlength=K)
    else:
        raise DataError(f"clone: labels must be 'counts' or 'uniform', got {labels!r}")
    per_class = per_class.cpu()
    means = fit.means.to(device, torch.float32)
    scale = None if fit.scale is None else fit.scale.to(device, torch.float32)
    weights = fit.weights.to(device)
    # Draw class by class (component by component) into contiguous slices, then shuffle rows once.
    ordered = torch.empty(B, n, P, device=device)
    start = 0
    for k in range(K):
        n_k = int(per_class[k])
        if m > 1 and n_k:
            comp = torch.multinomial(weights[k], n_k, replacement=True, generator=generator)
            per_comp = torch.bincount(comp, minlength=m).tolist()
        else:
            per_comp = [n_k]
        for j, n_kj in enumerate(per_comp):
            out, mu = ordered[:, start : start + n_kj], means[k, j][:, None, :]  # (B, n_kj, P), (B, 1, P)
            start += n_kj
            if not n_kj:
                continue
            if scale is None:
                out.copy_(mu.expand_as(out))
                continue
            z = torch.randn(B, n_kj, P, generator=generator, device=device)
            s = scale[k, j]
            if s.ndim == 2:  # stds
                torch.addcmul(mu, z, s[:, None, :], out=out)
            else:  # Cholesky factors: mu + z L^T, batched over blocks
                out.copy_(mu.expand_as(out))
                _add_lower_product(out, z, s)
    perm = torch.randperm(n, generator=generator, device=device)
    y = torch.repeat_interleave(torch.arange(K, device=device), per_class.to(device))[perm]
    x = ordered.transpose(0, 1).index_select(0, perm)  # (n, B, P), contiguous
    x = x.reshape(n, *fit.shape)
    if clamp:
        C = _channels(fit.shape)
        view = x.view(n, C, -1)
        lo, hi = (v.to(device, torch.float32).view(1, C, 1) for v in (fit.lo, fit.hi))
        torch.clamp(view, lo, hi, out=view)
    return x, y


# --- how well a sample matches ------------------------------------------------------------------------------


@dataclass
class CloneReport:
    """Per class: relative error of the sample's mean and covariance against the source (what the clone keeps
    of the data) and against the fitted model (sampling error); gmm: the mean log-likelihood of the fit."""

    mean_error: np.ndarray  # ||m_sample - m_source|| / ||m_source||
    cov_error: np.ndarray  # ||C_sample - C_source||_F / ||C_source||_F, full (D, D) covariances
    model_mean_error: np.ndarray
    model_cov_error: np.ndarray
    log_likelihood: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        out = {}
        for name in ("mean_error", "cov_error", "model_mean_error", "model_cov_error"):
            values = getattr(self, name)
            finite = values[np.isfinite(values)]
            out[name] = float(finite.mean()) if len(finite) else math.nan
        if self.log_likelihood is not None:
            out["log_likelihood"] = float(np.mean(self.log_likelihood))
        return out


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.reshape(len(x), -1).double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.mT @ centred / max(len(x) - 1, 1)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = torch.linalg.norm(b).item()
    return torch.linalg.norm(a - b).item() / norm if norm > 0 else math.nan


def clone_report(source: Split, sample: Split, num_classes: int, fit: CloneFit | None = None) -> CloneReport:
    """Compare a sample with its source class by class (and with the fitted model when given)."""
    rows: dict[str, list[float]] = {k: [] for k in ("me", "ce", "mme", "mce")}
    for k in range(num_classes):
        xs, xc = source.x[source.y == k], sample.x[sample.y == k]
        if len(xc) < 2 or len(xs) < 2:
            for v in rows.values():
                v.append(math.nan)
            continue
        ms, cs = _moments(xs)
        mc, cc = _moments(xc)
        rows["me"].append(_relative(mc, ms))
        rows["ce"].append(_relative(cc, cs))
        if fit is not None:
            rows["mme"].append(_relative(mc, fit.class_mean(k)))
            rows["mce"].append(_relative(cc, fit.class_cov(k)))
    nan = np.full(num_classes, np.nan)
    return CloneReport(
        mean_error=np.array(rows["me"]),
        cov_error=np.array(rows["ce"]),
        model_mean_error=np.array(rows["mme"]) if fit is not None else nan,
        model_cov_error=np.array(rows["mce"]) if fit is not None else nan,
        log_likelihood=None if fit is None or fit.log_likelihood is None else fit.log_likelihood.numpy(),
    )


# --- samples from a file ------------------------------------------------------------------------------------


def _label_path(path: Path) -> Path:
    stem = path.stem
    for xs, ys in (("xs", "ys"), ("x", "y"), ("Xs", "Ys"), ("X", "Y")):
        if stem.endswith(xs):
            return path.with_name(stem[: -len(xs)] + ys + path.suffix)
    raise DataError(f"{path}: an .npy clone file's name must end in 'xs' or 'x' (labels: 'ys' or 'y')")


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # missing, truncated, pickled object arrays: one line
        raise DataError(f"{path}: cannot read .npy ({type(e).__name__}: {e})") from e
    note_input(path)
    return array


def load_clone_file(
    path: str | Path, shape: tuple[int, ...], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clone samples from an .npz (arrays `x`, `y`) or an .npy pair (`..._xs.npy` with `..._ys.npy`).

    x: uint8 pixels, HWC or in the source's layout, scaled to [0, 1] like the real images; or floats in the
    source's layout and (un-normalised) scale. y: integer labels in [0, num_classes). Never unpickles."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in ("x", "y") if k not in npz.files]
                if missing:
                    raise DataError(f"{path}: missing array {missing[0]!r} (present: {list(npz.files)})")
                x, y = npz["x"], npz["y"]
            note_input(path)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: cannot read npz ({type(e).__name__}: {e})") from e
    else:
        x, y = _load_npy(path), _load_npy(_label_path(path))
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: labels must be 1-D with one per sample, got {y.shape} for x {x.shape}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}")
    if x.dtype == np.uint8:
        if x.shape[1:] != shape and len(shape) == 3 and x.ndim == 4 and x.shape[1:] == (*shape[1:], shape[0]):
            x = x.transpose(0, 3, 1, 2)  # HWC -> CHW
        t = torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0
    elif x.dtype.kind == "f":
        t = torch.from_numpy(np.ascontiguousarray(x)).float()
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{path}: samples hold non-finite values")
    else:
        raise DataError(f"{path}: samples must be uint8 pixels or floats, got {x.dtype}")
    if tuple(t.shape[1:]) != tuple(shape):
        raise DataError(
            f"{path}: samples of shape {x.shape[1:]} do not match the source's {tuple(shape)}"
            + (" (or its HWC form)" if len(shape) == 3 else "")
        )
    return t, torch.from_numpy(y.astype(np.int64))


# --- the registered data kind -------------------------------------------------------------------------------


_validate_source = registered(DATA, "data.source")


def _source(value: Any) -> Any:
    """The nested data section; a table without `kind` keeps the default's (digits)."""
    if isinstance(value, dict) and "kind" not in value:
        value = {"kind": "digits", **value}
    return _validate_source(value)


def _default_source() -> DataConfig:
    return _source({})


class CloneConfig(DataConfig):
    """A clone of `source` as the training set; the real test set (and real train set) for evaluation."""

    kind: Literal["clone"] = "clone"
    source: Annotated[SerializeAsAny[DataConfig], BeforeValidator(_source)] = Field(
        default_factory=_default_source
    )
    method: Literal["mean", "isotropic", "diagonal", "gaussian", "gmm", "coarse", "file"] = "gaussian"
    per_channel: bool = True  # gaussian/gmm/coarse: channels independent given the class (the original)
    components: PositiveInt = 2  # gmm: Gaussians per class
    ridge: NonNegativeFloat = 1e-3  # added to covariances, in (8-bit grey levels)^2 as the original code
    em_iters: PositiveInt = 100  # gmm: most EM iterations
    clamp: bool = True  # clip samples to the source's per-channel range
    labels: Literal["counts", "uniform"] = "counts"  # sample labels: the source's class counts, or uniform
    seed: int = 0  # sampling (and the gmm's initialisation)
    n: PositiveInt | None = None  # clone size; default: the source's train size (file: the whole file)
    test_n: PositiveInt | None = None  # also draw this many held-out samples: evaluation set `clone_test`
    path: Path | None = None  # file: .npz with x, y or an ..._xs.npy / ..._ys.npy pair
    coarse_map: list[NonNegativeInt] | None = None  # coarse: fine class -> coarse label

    @model_validator(mode="after")
    def _consistent(self) -> CloneConfig:
        # ConfigError, not ValueError: pydantic passes it through as the one-line message it is
        if not isinstance(self.source, FiniteDataConfig):
            raise ConfigError(f"data.source: a clone needs a finite dataset, got kind {self.source.kind!r}")
        if self.source.label_noise > 0:
            raise ConfigError("data.source.label_noise: not supported for clones (they fit the clean labels)")
        if self.method == "file" and self.test_n is not None:
            raise ConfigError("data.test_n: a file clone has no fitted model to draw a test set from")
        for key, method in (("path", "file"), ("coarse_map", "coarse")):
            given = getattr(self, key) is not None
            if self.method == method and not given:
                raise ConfigError(f"data.{key}: required for method {method!r}")
            if self.method != method and given:
                raise ConfigError(f"data.{key}: only used by method {method!r} (method is {self.method!r})")
        return self


@dataclass
class CloneResult:
    """A built clone: the Dataset, the fit, and the source and sample before normalisation (for reports)."""

    dataset: Dataset
    fit: CloneFit | None
    source: Split  # real train split, un-normalised, fine labels
    sample: Split  # the clone, un-normalised, fine labels
    num_classes: int  # of the source (fine classes)
    cache_path: Path | None = None
    _report: CloneReport | None = field(default=None, repr=False)

    def report(self) -> CloneReport:
        """Relative errors of the sample's class means and covariances (computed once, on demand)."""
        if self._report is None:
            self._report = clone_report(self.source, self.sample, self.num_classes, self.fit)
        return self._report


def cache_dir() -> Path:
    """`$LEARNSCOPE_CACHE/clones`, by default ~/.cache/learnscope/clones."""
    root = os.environ.get("LEARNSCOPE_CACHE") or Path.home() / ".cache" / "learnscope"
    return Path(root).expanduser() / "clones"


def _fit_options(cfg: CloneConfig) -> dict[str, Any]:
    """The options the fit depends on (coarse is a gaussian fit; the seed matters only to EM's init)."""
    method = "gaussian" if cfg.method == "coarse" else cfg.method
    opts: dict[str, Any] = {"method": method}
    if method in ("gaussian", "gmm"):
        opts.update(per_channel=cfg.per_channel, ridge=cfg.ridge * GREY_LEVEL**2)
    if method == "gmm":
        opts.update(components=cfg.components, em_iters=cfg.em_iters, seed=cfg.seed)
    return opts


def _cache_key(source_cfg: DataConfig, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> str:
    """Hash of the source config, the fit options and the train split's bytes (so edited files refit)."""
    h = hashlib.sha256()
    body = {"version": _CACHE_VERSION, "source": source_cfg.model_dump(mode="json"), "fit": opts}
    h.update(json.dumps(body, sort_keys=True).encode())
    h.update(str(tuple(x.shape)).encode())
    h.update(x.detach().cpu().contiguous().numpy())
    h.update(y.detach().cpu().contiguous().numpy())
    return h.hexdigest()[:24]


def _load_cached(path: Path) -> CloneFit | None:
    if not path.is_file():
        return None
    try:
        return CloneFit.from_state(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:  # torn or foreign file: refit and overwrite
        return None


def _save_cached(path: Path, fit: CloneFit) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save(fit.state(), tmp))
    except OSError:  # a read-only or full cache only costs a refit next time
        pass


def make_clone(cfg: CloneConfig) -> CloneResult:
    """Build the source, fit its train split (or load the cached fit), sample, and assemble the Dataset.

    The fit and the sample live in the source's scale before normalisation (8-bit pixels in [0, 1], like the
    original's raw pixels); then clone, real train and real test are normalised with the real train split's
    per-channel statistics and flattened exactly as the source's own preparation would."""

    src = cfg.source
    raw_cfg = src.model_copy(update={"normalize": False, "flatten": False, "crop_padding": 0, "flip": False})
    real = build_data(raw_cfg)
    x, y, K = real.train.x, real.train.y, real.num_classes
    shape = tuple(x.shape[1:])

    fit, cache_path, held_out = None, None, None
    if cfg.method == "file":
        xs, ys = load_clone_file(cfg.path, shape, K)
        if cfg.n is not None:
            if cfg.n > len(ys):
                raise DataError(f"{cfg.path}: data.n={cfg.n} but the file holds {len(ys)} samples")
            xs, ys = xs[: cfg.n], ys[: cfg.n]
    else:
        opts = _fit_options(cfg)
        cache_path = cache_dir() / f"{_cache_key(raw_cfg, x, y, opts)}.pt"
        fit = _load_cached(cache_path)
        if fit is None:
            fit = _fit(x, y, K, opts)
            _save_cached(cache_path, fit)
        xs, ys = sample_clone(
            fit, cfg.n or len(y), clone_generator(cfg.seed, _SAMPLE), labels=cfg.labels, clamp=cfg.clamp
        )
        if cfg.test_n is not None:  # an independent stream: the training sample does not depend on it
            held_out = sample_clone(
                fit, cfg.test_n, clone_generator(cfg.seed, _TEST), labels=cfg.labels, clamp=cfg.clamp
            )
    source, sample, fine_classes = Split(x, y), Split(xs, ys), K

    test, real_train = real.evals["test"], real.train
    if cfg.coarse_map is not None:
        if len(cfg.coarse_map) != K:
            raise DataError(f"data.coarse_map has {len(cfg.coarse_map)} entries; the source has {K} classes")
        cmap = torch.tensor(cfg.coarse_map)
        ys, test, real_train = cmap[ys], Split(test.x, cmap[test.y]), Split(real_train.x, cmap[real_train.y])
        if held_out is not None:
            held_out = (held_out[0], cmap[held_out[1]])
        K = int(cmap.max()) + 1

    # As `prepare`: the real train split's per-channel statistics normalise every split.
    raw = [xs, real_train.x, test.x] + ([held_out[0]] if held_out is not None else [])
    xs_all, fill = normalise_and_view(src, raw, stats_from=real_train.x)
    train = Split(xs_all[0], ys)
    evals = {"train": train, "test": Split(xs_all[2], test.y), "real_train": Split(xs_all[1], real_train.y)}
    if held_out is not None:
        evals["clone_test"] = Split(xs_all[3], held_out[1])
    dataset = Dataset(
        train=train,
        evals=evals,
        num_classes=K,
        augment=Augment(src.crop_padding, src.flip, fill),  # the original augments clones like real images
    )
    return CloneResult(dataset, fit, source, sample, fine_classes, cache_path)


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, opts: dict[str, Any]) -> CloneFit:
    return fit_clone(x, y, num_classes, **opts)


@DATA.register("clone", CloneConfig)
def clone(cfg: CloneConfig) -> Dataset:
    return make_clone(cfg).dataset


# --- a clone on disk: `learnscope data fit-clone` ---------------------------------------------------------


def save_clone_file(path: str | Path, x: torch.Tensor, y: torch.Tensor, config: str = "") -> Path:
    """Write samples as the .npz that method `file` reads back unchanged (`x` float32 in the source's layout
    and scale, `y` int64), plus the clone's config as JSON text (`config`, ignored on reading). Written to a
    temporary file beside `path`, then renamed."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"{path}: a clone file must end in .npz")
    arrays = {
        "x": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32),
        "y": y.detach().cpu().numpy().astype(np.int64),
    }
    if config:
        arrays["config"] = np.array(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, arrays)
    return path


def load_clone_config(args: list[str] | tuple[str, ...] = ()) -> CloneConfig:
    """A clone config from an optional file (first) and dotted overrides, keys relative to the clone section.

    The file is TOML or JSON: a run config (its `data` section; data that is not a clone becomes the clone's
    source) or a bare clone table. Overrides may carry the prefix `data.` (as in a run config) or `clone.`:
    `method=gmm`, `data.source.kind=mnist1d` and `clone.n=500` all work."""
    from ..config import apply_overrides, read_config_file

    args = list(args)
    section: Any = {"kind": "clone"}
    if args and "=" not in args[0]:
        path = Path(args.pop(0))
        raw = read_config_file(path)
        run_keys = {"data", "model", "optim", "train", "probes", "device", "name"}  # not keys of a clone
        section = raw.get("data", {"kind": "digits"}) if run_keys & set(raw) else raw
        if isinstance(section, str):
            section = {"kind": section}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the data section must be a table, got {section!r}")
        if section.get("kind", "clone") != "clone":
            section = {"kind": "clone", "source": section}
    overrides = []
    for item in args:
        key, sep, value = item.partition("=")
        key = key.strip()
        for prefix in ("data.", "clone."):
            key = key.removeprefix(prefix)
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        overrides.append(f"data.{key}={value}")
    section = apply_overrides({"data": section}, overrides)["data"]
    if not isinstance(section, dict):
        raise ConfigError(f"data: expected a clone table, got {section!r}")
    section.setdefault("kind", "clone")
    if section["kind"] != "clone":
        raise ConfigError(f"data.kind: fit-clone fits a clone (kind 'clone'), not {section['kind']!r}")
    return registered(DATA, "data")(section)


def format_clone_report(result: CloneResult) -> str:
    """The fit report as text: per class the source and clone sizes, the relative errors of the clone's mean
    and covariance against the source's and against the fitted model's, and (gmm) the mean log-likelihood."""
    report = result.report()
    K = result.num_classes
    n_source = torch.bincount(result.source.y.long().cpu(), minlength=K)
    n_clone = torch.bincount(result.sample.y.long().cpu(), minlength=K)
    columns = ["class", "n_source", "n_clone", "mean_err", "cov_err", "model_mean_err", "model_cov_err"]
    values = [report.mean_error, report.cov_error, report.model_mean_error, report.model_cov_error]
    if report.log_likelihood is not None:
        columns.append("gmm_loglik")
        values.append(report.log_likelihood)
    lines = ["  ".join(f"{c:>14}" if i > 2 else f"{c:>8}" for i, c in enumerate(columns))]
    for k in range(K):
        cells = [f"{k:>8}", f"{int(n_source[k]):>8}", f"{int(n_clone[k]):>8}"]
        lines.append("  ".join(cells + [f"{float(v[k]):>14.4g}" for v in values]))
    summary = report.summary()
    keys = ["mean_error", "cov_error", "model_mean_error", "model_cov_error"] + (
        ["log_likelihood"] if report.log_likelihood is not None else []
    )
    cells = [f"{'mean':>8}", f"{int(n_source.sum()):>8}", f"{int(n_clone.sum()):>8}"]
    lines.append("  ".join(cells + [f"{summary[key]:>14.4g}" for key in keys]))
    return "\n".join(lines)


def file_clone_overrides(cfg: CloneConfig, path: str | Path) -> list[str]:
    """Run-config overrides that train on the clone written to `path`: method `file`, the same source."""
    source = {"kind": cfg.source.kind, **cfg.source.model_dump(mode="json", exclude_defaults=True)}
    keys = [f"data.source.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in source.items()]
    return ["data.kind=clone", "data.method=file", f"data.path={path}", *keys]


def fit_clone_to_file(cfg: CloneConfig, out: str | Path) -> CloneResult:
    """Build the clone `cfg` describes (fit, or load the cached fit, and sample) and write its samples to
    `out` (an .npz that method `file` reads back). The result holds the arrays (sample, source); figures of
    them are drawn by the caller (`report.plot_clone_samples`)."""
    if Path(out).suffix != ".npz":  # checked before the fit, which may take minutes
        raise DataError(f"{out}: a clone file must end in .npz")
    result = make_clone(cfg)
    save_clone_file(out, result.sample.x, result.sample.y, config=cfg.model_dump_json())
    return result
