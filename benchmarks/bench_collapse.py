"""The collapse probe's statistics against the straightforward per-class / per-pair loop of the original code.

Both compute, over a stack of CONV-8-400-sized features (8 layers, batches of 128, d = 25,600), the per-layer
CDNV and NCC accuracy (centres from a first pass, predictions in a second), and must agree. The original's
algorithm: per batch and layer, a loop over classes gathering each class's rows (`nonzero` + index) into sums
and squared-norm sums; then a Python loop over class pairs re-deriving both variances with `.item()` per pair;
NCC by `cdist` to the centres. Second: the probe's share of a tiny neural-collapse run (default schedule).

    .venv/bin/python benchmarks/bench_collapse.py [--batches 8] [--skip-share] [--device auto|cpu|cuda]

On a GPU the features live on the device and both methods are timed to a synchronise; there the original's
per-pair `.item()` calls are host syncs, which is where the one-pass probe's advantage is meant to show.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from learnscope.probes.collapse import ClassMoments, NearestCentre, cdnv
from learnscope.train import resolve_device


def original(layers, labels, C):
    """The reference's `analysis.py` algorithm, on precomputed features."""
    L, d, device = len(layers[0]), layers[0][0].shape[1], layers[0][0].device
    S = [torch.zeros(C, d, device=device) for _ in range(L)]
    Q = [torch.zeros(C, device=device) for _ in range(L)]
    N = torch.zeros(C, device=device)
    for feats, y in zip(layers, labels, strict=True):
        for c in range(C):
            idx = (y == c).nonzero().squeeze(1)
            N[c] += len(idx)
            for i, h in enumerate(feats):
                rows = h[idx]
                S[i][c] += rows.sum(0)
                Q[i][c] += (rows**2).sum()
    cdnvs, means = [], []
    for i in range(L):
        mu = S[i] / N[:, None]
        means.append(mu)
        total, pairs = 0.0, 0
        for a in range(C):
            for b in range(a + 1, C):
                var_a = abs(Q[i][a].item() / N[a].item() - (mu[a] ** 2).sum().item())
                var_b = abs(Q[i][b].item() / N[b].item() - (mu[b] ** 2).sum().item())
                total += (var_a + var_b) / (2 * ((mu[a] - mu[b]) ** 2).sum().item())
                pairs += 1
        cdnvs.append(total / pairs)
    hits = torch.zeros(L, device=device)
    for feats, y in zip(layers, labels, strict=True):
        for i, h in enumerate(feats):
            hits[i] += (torch.cdist(h, means[i]).argmin(1) == y).sum()
    return cdnvs, (hits / N.sum()).tolist()


def ours(layers, labels, C):
    L, d, device = len(layers[0]), layers[0][0].shape[1], layers[0][0].device
    moments = [ClassMoments(C, d, device) for _ in range(L)]
    for feats, y in zip(layers, labels, strict=True):
        for m, h in zip(moments, feats, strict=True):
            m.update(h, y)
    present = moments[0].present
    centres = [NearestCentre(m.mean, present) for m in moments]
    hits = torch.zeros(L, dtype=torch.float64, device=device)
    for feats, y in zip(layers, labels, strict=True):
        for i, h in enumerate(feats):
            hits[i] += (centres[i].predict(h) == y).sum()
    values = torch.stack([cdnv(m.mean, m.variance, present) for m in moments])
    n = sum(len(y) for y in labels)
    return values.tolist(), (hits / n).tolist()


def feature_stack(
    C: int, batches: int, layers: int = 8, batch: int = 128, d: int = 25_600, seed: int = 0, device="cpu"
):
    gen = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, C, (batch,), generator=gen) for _ in range(batches)]
    centres = [torch.randn(C, d, generator=gen) * (0.02 * (i + 1)) for i in range(layers)]
    stack = [
        [(centres[i][y] + 0.1 * torch.randn(batch, d, generator=gen)).to(device) for i in range(layers)]
        for y in labels
    ]
    return stack, [y.to(device) for y in labels]


def synchronise() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args):
    synchronise()
    t0 = time.perf_counter()
    out = fn(*args)
    synchronise()
    return time.perf_counter() - t0, out


def probe_share() -> None:
    from learnscope.studies.neural_collapse import configs
    from learnscope.train import run

    cfg = configs("tiny", axes={"model.depth": [8], "data.label_noise": [0.0]})[0]
    run(cfg.override("train.epochs=5"), None, quiet=True)  # warm-up
    t_with, _ = timed(run, cfg, None)
    t_without, _ = timed(run, cfg.override("probes.use=[evaluation]"), None)
    share = (t_with - t_without) / t_with
    print(
        f"tiny neural_collapse run (MLP-8-256, digits, 200 epochs, default schedule): {t_with:.1f} s with "
        f"the collapse probe, {t_without:.1f} s without: probe share {share:.1%} (target <= 10%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--skip-share", action="store_true")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(f"# {platform.machine()}, {where}, torch {torch.__version__}")
    for C in (10, 100):
        stack, labels = feature_stack(C, args.batches, device=device)
        ours(stack[:1], labels[:1], C)  # warm-up
        t_ref, (cdnv_ref, ncc_ref) = timed(original, stack, labels, C)
        t_ours, (cdnv_ours, ncc_ours) = timed(ours, stack, labels, C)
        worst = max(abs(a - b) / abs(b) for a, b in zip(cdnv_ours, cdnv_ref, strict=True))
        if worst > 1e-3 or ncc_ours != ncc_ref:
            raise SystemExit(f"C={C}: results differ (CDNV rel {worst:.2e}, NCC {ncc_ours} vs {ncc_ref})")
        print(
            f"C={C:>3}: {args.batches} batches x 8 layers x 128 x 25,600: original loop {t_ref:6.2f} s, "
            f"learnscope {t_ours:6.2f} s, ratio {t_ref / t_ours:5.1f}x (CDNV agree to {worst:.1e}, NCC equal)"
        )
    if not args.skip_share:
        probe_share()


if __name__ == "__main__":
    main()
