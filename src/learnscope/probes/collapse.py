"""Intermediate neural collapse: per-layer CDNV and nearest-class-centre (NCC) accuracy (Galanti et al. 2023).

For every probed layer, one pass over a dataset accumulates per-class counts, means and centred squares,
merged batch by batch in float64 (Chan et al.'s parallel update): the raw-moment formula Var = E||h||^2 -
||mu||^2 cancels catastrophically in float32 exactly when a class has collapsed (tight around a distant mean).
Then, with C x C matrices only:

    Var_c  = E ||h - mu_c||^2                        (trace of the class covariance)
    CDNV   = mean over c < c' of (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2)      (Galanti et al. 2022, Def. 1)
    NCC(h) = argmin_c ||h - mu_c||^2 = argmin_c ||mu_c||^2 - 2 h.mu_c          (centres from the train split)

The train split is read twice (centres, then NCC predictions against them), the second time from the
features of the first when they fit in memory; every other set once. Layers are read through forward hooks on
named modules, so any model works. A pass never waits for the device.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt

from ..errors import ConfigError
from ..registry import PROBES
from ..sections import ProbeConfig
from .context import ProbeContext
from .hooks import capture, layer_names


class CollapseConfig(ProbeConfig):
    kind: Literal["collapse"] = "collapse"
    layers: list[str] = []  # module names; empty: the model's probe_layers() (pre-BN Linear/conv outputs)
    post_activation: bool = False  # probe the models' post_activation_layers() instead
    sets: list[str] = ["train", "test"]  # evaluation sets to measure ("train" is always measured for centres)
    noise_subsets: bool = True  # with label noise: clean and noisy training samples separately
    eps: Annotated[float, Field(ge=0, lt=1)] = 0.01  # NCC train error allowed for the effective depth
    bootstrap: NonNegativeInt = 200  # bootstrap resamples of the training samples for its interval (0: none)
    linear_probe: bool = (
        False  # also a ridge least-squares linear probe per layer (the original's disabled one)
    )
    ridge: Annotated[float, Field(gt=0)] = 1e-3  # its ridge, relative to the mean feature variance


class ClassMoments:
    """Per-class count, mean and sum of squared deviations of features, merged batch by batch in float64."""

    def __init__(self, num_classes: int, dim: int, device: torch.device):
        self.num_classes = num_classes
        self.count = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.mean = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(num_classes, dtype=torch.float64, device=device)

    def update(self, h: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge a batch h (B, d) with labels y (B,) (only rows where `mask`): the batch's own centred moments
        first (accurate in float32 because centred), then Chan's update
        M2 += M2_b + ||mean_b - mean||^2 n n_b / (n + n_b). No boolean indexing: no wait for the device."""
        C = self.num_classes
        weight = torch.ones_like(y, dtype=h.dtype) if mask is None else mask.to(h.dtype)
        n_b = torch.zeros(C, dtype=h.dtype, device=h.device).index_add_(0, y, weight)
        rows = h if mask is None else h * weight[:, None]
        # index_add, not a one-hot matmul: O(B d) whatever the number of classes.
        mean_b = torch.zeros(C, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, y, rows)
        mean_b /= n_b.clamp_min(1)[:, None]
        # mu - h, not h - mu: in place on the gathered rows (index_select is ~10x faster than mean_b[y] on
        # the CPU), then squared in place; the same bits as (h - mu).pow(2) without two (B, d) temporaries
        centred = mean_b.index_select(0, y).sub_(h)
        squares = centred.square_().sum(1) * weight
        m2_b = torch.zeros(C, dtype=h.dtype, device=h.device).index_add_(0, y, squares)
        n_b = n_b.double()
        total = self.count + n_b
        weight = n_b / total.clamp_min(1)
        delta = mean_b.double() - self.mean
        self.m2 += m2_b.double() + delta.pow(2).sum(1) * self.count * weight
        self.mean += delta * weight[:, None]
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        """E ||h - mu_c||^2 per class (population normalisation, as the original code of Galanti et al.)."""
        return self.m2 / self.count.clamp_min(1)

    @property
    def present(self) -> torch.Tensor:
        return self.count > 0


def cdnv(mean: torch.Tensor, variance: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over present pairs c < c' of (Var_c + Var_c') / (2 ||mu_c - mu_c'||^2), via the Gram matrix."""
    C = len(variance)
    if present is None:
        present = torch.ones(C, dtype=torch.bool, device=mean.device)
    gram = mean @ mean.T
    sq = gram.diagonal()
    dist2 = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(torch.finfo(gram.dtype).tiny)
    ratio = (variance[:, None] + variance[None, :]) / (2 * dist2)
    pairs = torch.triu(present[:, None] & present[None, :], diagonal=1)
    return torch.where(pairs, ratio, 0).sum() / pairs.sum()


class NearestCentre:
    """argmin_c ||h - mu_c||^2 as one matrix product, in coordinates centred on the centres' mean (so float32
    keeps the digits that tell nearby centres apart)."""

    def __init__(self, centres: torch.Tensor, present: torch.Tensor):
        weights = present.double() / present.sum()
        self.origin = weights @ centres
        shifted = centres - self.origin
        self.centres = shifted.float()
        self.bias = torch.where(present, shifted.pow(2).sum(1), torch.inf).float()  # absent: never predicted

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        shifted = (h - self.origin.to(h.dtype)).float()
        return (self.bias - 2 * shifted @ self.centres.T).argmin(1)


class LinearProbeFit:
    """Accumulates, in one pass, what a ridge least-squares fit of one-hot targets on features needs: the
    feature sums, the d x d Gram matrix and the d x C cross-moments (float64). The original code's linear
    probe ran one epoch of SGD on MSE to one-hot; the closed form is its deterministic limit."""

    max_dim = 8192  # the d x d Gram matrix: 0.5 GiB at this size

    def __init__(self, num_classes: int, dim: int, device: torch.device, ridge: float):
        if dim > self.max_dim:
            raise ConfigError(f"collapse.linear_probe: layer width {dim} exceeds {self.max_dim} features")
        self.num_classes, self.ridge = num_classes, ridge
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.cross = torch.zeros(dim, num_classes, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.float64, device=device)

    def update(self, h: torch.Tensor, y: torch.Tensor) -> None:
        h = h.double()
        self.n += len(y)
        self.sum += h.sum(0)
        self.gram += h.T @ h
        self.cross.index_add_(1, y, h.T)
        self.counts += torch.bincount(y, minlength=self.num_classes).double()

    def solve(self) -> LinearClassifier:
        """W = (Cov + lambda tr(Cov)/d I)^-1 Cov(h, onehot), b = E[onehot] - E[h] W."""
        mean, p = self.sum / self.n, self.counts / self.n
        cov = self.gram / self.n - torch.outer(mean, mean)
        cross = self.cross / self.n - torch.outer(mean, p)
        lam = self.ridge * cov.diagonal().mean().clamp_min(1e-12)
        eye = torch.eye(len(mean), dtype=cov.dtype, device=cov.device)
        weight = torch.linalg.solve(cov + lam * eye, cross)
        return LinearClassifier(weight, p - mean @ weight)


class LinearClassifier:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.float(), bias.float()

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        return (h.float() @ self.weight + self.bias).argmax(1)


def effective_depth(ncc_train_acc: list[float] | np.ndarray, eps: float) -> int | None:
    """The smallest layer d (1-based) whose NCC train error is <= eps there and at every layer above it
    (the monotone version of Galanti et al.'s eps-effective depth); None if the top layer misses it."""
    errors = 1 - np.asarray(ncc_train_acc, dtype=float)
    depth = None
    for d in range(len(errors), 0, -1):
        if errors[d - 1] > eps:
            break
        depth = d
    return depth


def effective_depth_interval(
    correct: np.ndarray, eps: float, resamples: int, seed: int = 0, level: float = 0.9
) -> tuple[float, float]:
    """Percentile bootstrap interval of the effective depth over training samples; `correct` is (n, L) bool.
    A resample whose top layer misses eps counts as depth L + 1."""
    rng = np.random.default_rng(seed)
    n = len(correct)
    idx = torch.from_numpy(rng.integers(0, n, size=(resamples, n)))
    # How often each sample is drawn in each resample, then all resamples' hit counts in one product instead
    # of `resamples` gathers of an (n, L) array. Counts and hits are integers below 2**53, so the float64
    # product is exact and the accuracies equal correct[i].mean(0) bit for bit. In torch, not numpy: inside
    # a training run numpy's BLAS threads would compete with torch's for the same cores.
    ones = torch.ones(idx.shape, dtype=torch.float64)
    counts = torch.zeros(idx.shape, dtype=torch.float64).scatter_add_(1, idx, ones)
    accs = (counts @ torch.from_numpy(np.asarray(correct, dtype=np.float64))) / n  # (resamples, L)
    depths = effective_depths(accs.numpy(), eps)
    lo, hi = np.quantile(depths, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def effective_depths(ncc_train_acc: np.ndarray, eps: float) -> np.ndarray:
    """`effective_depth` of each row of an (R, L) array of NCC train accuracies at once, L + 1 where the top
    layer misses eps: one more than the (1-based) highest layer whose error exceeds eps, 1 if none does."""
    bad = (1 - np.asarray(ncc_train_acc, dtype=float)) > eps
    layers = bad.shape[1]
    highest_bad = layers - 1 - np.argmax(bad[:, ::-1], axis=1)  # 0-based; meaningless where no layer is bad
    return np.where(bad.any(axis=1), highest_bad + 2, 1)


# The train split is read twice: once for the class centres, once for the NCC predictions against them. Its
# features of the first read are kept for the second when they fit in this many bytes (all layers together),
# which saves one of the probe's three forward passes in a small run (the tiny neural-collapse study keeps
# ~10 MB); beyond it (CIFAR-10 at CONV-L-400: ~5 GB a layer) the second read runs the network again. The kept
# features are those a second pass would compute (eval mode, no_grad; bit for bit on the CPU), so the numbers
# are the same either way.
TRAIN_FEATURE_CACHE_BYTES = 256 * 2**20


def _features(model, names, outputs, x, batch_size, net):
    """Runs x through the model in batches, with `outputs` filled by `capture(model, names)`: yields, per
    batch, its rows and each layer's features (B, d), and appends the network's predictions to `net`."""
    for start in range(0, len(x), batch_size):
        rows = slice(start, start + batch_size)
        net.append(model(x[rows]).argmax(-1))
        yield rows, [outputs[name].flatten(1) for name in names]


def _pass(batches, y, fits=(), classifiers=(), subsets=None):
    """One pass over the (rows, features per layer) of `batches`, labels y. Per layer: update each of
    `fits[layer]` (moments, linear-probe fits), predict with each of `classifiers[layer]`, update the training
    `subsets` (moments, labels, mask). Returns the classifiers' predictions (n, L, K), or None."""
    predictions = []
    for rows, features in batches:
        yb = y[rows]
        row = []
        for layer, h in enumerate(features):
            for fit in fits[layer] if fits else ():
                fit.update(h, yb)
            if classifiers:
                row.append(torch.stack([c.predict(h) for c in classifiers[layer]], 1))
            for subset_moments, labels, mask in (subsets or {}).values():
                subset_moments[layer].update(h, labels[rows], mask[rows])
        if row:
            predictions.append(torch.stack(row, 1))
    return torch.cat(predictions) if predictions else None


@PROBES.register("collapse", CollapseConfig)
def collapse(cfg: CollapseConfig):
    def probe(ctx: ProbeContext) -> dict[str, float]:
        model, data = ctx.model, ctx.data
        if cfg.layers:
            names = layer_names(model, cfg.layers)
        elif cfg.post_activation:
            names = list(model.post_activation_layers())
        else:
            names = layer_names(model)
        C, device, bs = data.num_classes, data.train.x.device, ctx.batch_size
        train = data.evals.get("train", data.train)
        out: dict[str, torch.Tensor] = {}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), capture(model, names) as outputs:
                net_batches: list[torch.Tensor] = []
                train_batches = _features(model, names, outputs, train.x, bs, net_batches)
                first = next(train_batches)  # the layers' widths, and the bytes a sample's features take
                dims = [h.shape[1] for h in first[1]]
                sample_bytes = sum(h[0].nbytes for h in first[1])
                train_batches = itertools.chain([first], train_batches)
                keep = len(train.y) * sample_bytes <= TRAIN_FEATURE_CACHE_BYTES
                if keep:
                    train_batches = list(train_batches)
                # Pass 1 over train: class means (the NCC centres), train CDNV, the linear probes' statistics.
                train_moments = [ClassMoments(C, d, device) for d in dims]
                probe_fits = (
                    [LinearProbeFit(C, d, device, cfg.ridge) for d in dims] if cfg.linear_probe else []
                )
                fits = [[m, *probe_fits[i : i + 1]] for i, m in enumerate(train_moments)]
                _pass(train_batches, train.y, fits=fits)
                net = torch.cat(net_batches)
                present = train_moments[0].present
                classifiers = [
                    [NearestCentre(m.mean, present), *(f.solve() for f in probe_fits[i : i + 1])]
                    for i, m in enumerate(train_moments)
                ]
                # Pass 2 over train (the kept features, or the network again): predictions of those
                # classifiers, and the label-noise subsets.
                if not keep:
                    train_batches = _features(model, names, outputs, train.x, bs, [])
                subsets = _noise_subsets(cfg, data, dims, device)
                preds = _pass(train_batches, train.y, classifiers=classifiers, subsets=subsets)
                del train_batches
                train_hits = preds[:, :, 0] == train.y[:, None]
                _report(out, "train", train_moments, preds == train.y[:, None, None], net == train.y, present)
                for name, (moments, labels, mask) in subsets.items():
                    _report(out, name, moments, preds == labels[:, None, None], net == labels, present, mask)
                for set_name in cfg.sets:
                    if set_name != "train":
                        split = data.evals[set_name]
                        moments = [ClassMoments(C, d, device) for d in dims]
                        net_set: list[torch.Tensor] = []
                        batches = _features(model, names, outputs, split.x, bs, net_set)
                        preds_set = _pass(
                            batches, split.y, fits=[[m] for m in moments], classifiers=classifiers
                        )
                        hits = preds_set == split.y[:, None, None]
                        _report(out, set_name, moments, hits, torch.cat(net_set) == split.y, present)
        finally:
            model.train(was_training)
        keys = list(out)
        values = torch.stack([out[k].double() for k in keys]).cpu().tolist()  # the one read-back
        record = dict(zip(keys, values, strict=True))
        depth = effective_depth([record[f"train/ncc/{i + 1}"] for i in range(len(names))], cfg.eps)
        if depth is not None:
            record["train/effective_depth"] = float(depth)
        if cfg.bootstrap:
            lo, hi = effective_depth_interval(train_hits.cpu().numpy(), cfg.eps, cfg.bootstrap, seed=ctx.step)
            record["train/effective_depth_lo"], record["train/effective_depth_hi"] = lo, hi
        return record

    return probe


def _noise_subsets(
    cfg, data, dims, device
) -> dict[str, tuple[list[ClassMoments], torch.Tensor, torch.Tensor]]:
    """With label noise: the clean samples, the noisy ones under their noisy labels, and the noisy ones under
    their true labels."""
    if not cfg.noise_subsets or data.noisy is None or data.true_train_labels is None:
        return {}
    C, noisy = data.num_classes, data.noisy
    return {
        "train_clean": ([ClassMoments(C, d, device) for d in dims], data.train.y, ~noisy),
        "train_noisy": ([ClassMoments(C, d, device) for d in dims], data.train.y, noisy),
        "train_noisy_true": ([ClassMoments(C, d, device) for d in dims], data.true_train_labels, noisy),
    }


def _report(out, prefix, moments, hits, net_hits, present, mask=None) -> None:
    """CDNV, NCC (and linear-probe) accuracy per layer, and the network's own accuracy, over the rows where
    `mask`. `hits` is (n, L, K): K = 1 (NCC) or 2 (NCC, linear probe)."""
    weight = torch.ones(len(hits), dtype=torch.float64, device=hits.device) if mask is None else mask.double()
    total = weight.sum()
    accuracy = (hits.double() * weight[:, None, None]).sum(0) / total  # (L, K)
    for i, m in enumerate(moments):
        out[f"{prefix}/cdnv/{i + 1}"] = cdnv(m.mean, m.variance, present & m.present)
        out[f"{prefix}/ncc/{i + 1}"] = accuracy[i, 0]
        if hits.shape[2] > 1:
            out[f"{prefix}/linear/{i + 1}"] = accuracy[i, 1]
    out[f"{prefix}/net_acc"] = (net_hits.double() * weight).sum() / total
