"""Fit + sample a per-channel Gaussian clone of a CIFAR-sized uint8 array: learnscope vs the original's way.

The data: 50,000 images 32x32x3 (uint8, HWC like CIFAR), 10 classes, synthetic but image-like: smooth class
means plus a blurred random field (spatially correlated, channels mixed) plus a little white noise, so each
of the 30 class-and-channel 1024x1024 covariances is full rank. Both sides start from the uint8 array and end
with a clamped float sample of the same size, with 1e-3 ridge in raw-pixel units:

- original (dist_inc_comp's censor2d): numpy float64, per channel and class `np.cov` + 1e-3 I, then
  `scipy.stats.multivariate_normal(mean, cov).rvs(size=n_k)` (an eigendecomposition in the constructor and an
  SVD plus legacy-RNG normals in `rvs`, each call), clamp to [0, 255]; run at the BLAS thread count where
  its eigh and SVD are fastest on this machine (probed first and printed);
- learnscope: `fit_clone` (float64 statistics, one Cholesky factor per class and channel) and `sample_clone`
  (one batched product per class from a seeded torch.Generator), clamp to the source's range.

It checks that both samples match the fitted class means and covariances within sampling error, then prints
the seconds of each and the ratio original / learnscope (target >= 3).

    .venv/bin/python benchmarks/bench_clones.py [--small]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import numpy as np
import scipy
import scipy.stats
import torch
import torch.nn.functional as F
from claims import claim

from learnscope.data.clones import clone_generator, fit_clone, sample_clone


def synthetic_cifar(n: int, size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size, 3) images with spatial correlation at two scales (random fields at 1/4 and 1/2 of
    the resolution, upsampled bicubically), channels mixed (correlations 0.5-0.7) and a little white noise
    (so every covariance is full rank, its spectrum decaying like an image's), with smooth class means."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.linalg.cholesky(torch.tensor([[1.0, 0.7, 0.5], [0.7, 1.0, 0.7], [0.5, 0.7, 1.0]]))

    def field(m: int) -> torch.Tensor:
        out = torch.zeros(m, 3, size, size)
        for scale, weight in ((4, 1.0), (2, 0.5)):
            z = torch.randn(m, 3, size // scale, size // scale, generator=gen)
            out += weight * F.interpolate(z, size=(size, size), mode="bicubic", align_corners=False)
        return torch.einsum("ij,njhw->nihw", mix, out / out.std())

    y = torch.randint(classes, (n,), generator=gen)
    x = 0.6 * field(classes)[y] + field(n) + 0.1 * torch.randn(n, 3, size, size, generator=gen)
    x = (128 + 32 * x).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy()


def original(xs: np.ndarray, ys: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """The reference algorithm: raw pixels in float64, per channel and class np.cov + ridge, scipy's MVN."""
    np.random.seed(seed)  # the original's sampler uses numpy's global RNG
    n, h, w, c = xs.shape
    X = xs.astype(np.float64).reshape(n, h * w, c)
    labels = np.random.randint(classes, size=n)  # uniform labels, as the original
    out = np.empty_like(X)
    for ch in range(c):
        for k in range(classes):
            Xk = X[ys == k, :, ch]
            cov = np.cov(Xk, rowvar=False) + 1e-3 * np.eye(h * w)
            rows = labels == k
            out[rows, :, ch] = scipy.stats.multivariate_normal(Xk.mean(0), cov).rvs(size=int(rows.sum()))
    return np.clip(out, 0, 255).reshape(n, h, w, c), labels


def reference_blas_threads(d: int) -> tuple[int | None, str]:
    """The BLAS thread count at which the original's LAPACK calls run fastest here: its eigh (scipy's
    constructor) and SVD (numpy's sampler) on a d x d covariance, timed at the default count and at one
    thread. On a shared, oversubscribed machine OpenBLAS's threads can make both many times slower; the
    reference is timed at its best, not charged for that."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None, "threadpoolctl absent: the reference runs at the default BLAS threads"
    a = np.random.default_rng(0).normal(size=(2 * d, d))
    cov = a.T @ a / (2 * d)
    default = max((p.get("num_threads", 1) for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    times = {}
    for threads in (default, 1):
        with threadpool_limits(threads, user_api="blas"):
            t = time.perf_counter()
            np.linalg.eigh(cov)
            np.linalg.svd(cov)
            times[threads] = time.perf_counter() - t
    best = min(times, key=times.get)
    shown = ", ".join(f"{k} thread(s) {v:.2f} s" for k, v in times.items())
    return best, f"reference BLAS threads: eigh + svd of {d}x{d}: {shown} -> {best}"


def ours(
    xs: np.ndarray, ys: np.ndarray, classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, object]:
    x = torch.from_numpy(np.ascontiguousarray(xs.transpose(0, 3, 1, 2))).float() / 255  # as `prepare`
    fit = fit_clone(x, torch.from_numpy(ys), classes, "gaussian", per_channel=True, ridge=1e-3 / 255**2)
    sample, labels = sample_clone(fit, len(ys), clone_generator(seed), labels="uniform")
    return sample, labels, fit


def check(name: str, x: np.ndarray, labels: np.ndarray, fit, scale: float) -> None:
    """Largest class-mean error in units of its standard error; relative Frobenius error of the covariance of
    class 0, channel 0 against the fit, and its expected size sqrt(((tr S)^2 + |S|_F^2) / n) / |S|_F."""
    worst = 0.0
    for k in range(fit.num_classes):
        xk = x[labels == k].reshape(-1, fit.dim) / scale
        mu = fit.means[k, 0].flatten().numpy()
        sd = fit.scale[k, 0].square().sum(-1).sqrt().flatten().numpy()  # row norms of L: pixel stds
        worst = max(worst, float(np.max(np.abs(xk.mean(0) - mu) / (sd / np.sqrt(len(xk)) + 1e-12))))
    L = fit.scale[0, 0, 0].numpy()
    S = L @ L.T
    block = x[labels == 0].reshape(-1, *fit.means.shape[-2:])[:, 0] / scale
    err = np.linalg.norm(np.cov(block, rowvar=False) - S) / np.linalg.norm(S)
    expected = np.sqrt((np.trace(S) ** 2 + np.sum(S * S)) / len(block)) / np.linalg.norm(S)
    print(
        f"  {name:10s} worst class-mean error {worst:5.2f} standard errors (clamping adds a little); ", end=""
    )
    print(f"cov error class 0 channel 0: {err:.3f} (sampling error ~{expected:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="5,000 images of 16x16x3: a quick run")
    args = parser.parse_args()
    n, size = (5000, 16) if args.small else (50000, 32)
    classes, seed = 10, 0
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); numpy {np.__version__}; "
        f"scipy {scipy.__version__}; Python {platform.python_version()}"
    )
    xs, ys = synthetic_cifar(n, size, classes)
    print(f"data: {n:,} x {size}x{size}x3 uint8, {classes} classes; per-channel covariances {size * size}^2")

    t = time.perf_counter()
    sample, labels, fit = ours(xs, ys, classes, seed)
    t_ours = time.perf_counter() - t
    threads, note = reference_blas_threads(size * size)
    print(note)
    if threads is None:
        limit = contextlib.nullcontext()
    else:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(threads, user_api="blas")
    with limit:
        t = time.perf_counter()
        ref, ref_labels = original(xs, ys, classes, seed)
        t_ref = time.perf_counter() - t

    check("learnscope", sample.numpy(), labels.numpy(), fit, 1.0)
    check("original", ref.transpose(0, 3, 1, 2), ref_labels, fit, 255.0)
    print(f"learnscope: {t_ours:7.2f} s   (fit + sample, torch)")
    print(f"original:   {t_ref:7.2f} s   (numpy fit + scipy multivariate_normal.rvs per class and channel)")
    print(f"ratio original / learnscope: {t_ref / t_ours:.1f}x (target >= 3x)")
    claim(
        f"Gaussian clone of a CIFAR-sized uint8 array ({n:,} images), fit + sample",
        f"fit_clone + sample_clone, {t_ours:.1f} s",
        f"the original's numpy cov + scipy multivariate_normal.rvs per class and channel, {t_ref:.1f} s",
        t_ref / t_ours,
        3,
    )


if __name__ == "__main__":
    main()
