"""Seed ensembles against the runs they replace: M members trained as one stacked model
(`ensemble.train_ensemble`) vs the same M configs trained one after the other by the ordinary train loop
(`train.train`, each on a model from `train.build_model`), in this process, with the same threads.

Both sides train the same configs (seeds 0..M-1) from the same initial weights on the same batches. The script
first checks that they compute the same thing: after CHECK_STEPS steps the weights agree to float32 rounding
(a relative distance under 1e-5; a wrong batch, seed or learning rate is far above it). Longer runs are not
compared: training amplifies rounding, in the BatchNorm convnet to ~1e-3 by step 10, the gap also seen
between one separate run on 1 thread and on 2 (whose reductions sum in another order).

Then it prints the time of each side and the throughput ratio sequential / ensemble (target >= 3 for the MLPs
on 2 cores). Repetitions alternate the two sides and the medians are compared; the first round warms up and
is not timed. The timed work is the training: probes are off (each member is probed as an ordinary module,
the same work on both sides) and the data is built once. The header gives the machine, threads, versions and
load average: on a busy machine the many small operations of the sequential side slow down most, so a busy
machine's ratio flatters the ensemble.

    .venv/bin/python benchmarks/bench_ensemble.py [--repeats 3] [--members 8] [--steps 200] [--case conv]
        [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time

import numpy as np
import torch
from claims import claim

from learnscope import Config
from learnscope.data import build_data
from learnscope.runs.ensemble import train_ensemble
from learnscope.runs.train import build_model, train

# The increasing-complexity study's MNIST-1D and optimiser (studies/increasing_complexity.py, TINY_BASE).
MNIST1D = {"kind": "mnist1d", "num_samples": 12000, "train_split": 10000 / 12000}
SGD = {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
CHECK_STEPS = 3
CASES = {
    "mlp 40-512-512-10, MNIST-1D, batch 128": {
        "data": MNIST1D,
        "model": {"kind": "mlp", "depth": 2, "width": 512},
    },
    "mlp 40-512-10 (the study's), MNIST-1D, batch 128": {
        "data": MNIST1D,
        "model": {"kind": "mlp", "depth": 1, "width": 512},
    },
    # CONV-L-W with BatchNorm (neural-collapse study) on the bundled MNIST padded to 32x32, at a CPU's width
    "conv+BN L=2 W=16, MNIST 32x32, batch 128": {
        "data": {
            "kind": "mnist",
            "train_prefix": "t10k",
            "split_at": 8000,
            "subset_per_class": 200,
            "pad": 2,
        },
        "model": {"kind": "conv", "depth": 2, "width": 16},
    },
}


def configs(spec: dict, members: int, steps: int) -> list[Config]:
    base = Config.from_dict(
        {
            "device": "cpu",
            **spec,
            "optim": SGD,
            "train": {"steps": steps, "batch_size": 128, "checkpoint_every": 0},
            "probes": {"use": []},
        }
    )
    return [base.override(f"seed={seed}") for seed in range(members)]


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def sequential(cfgs: list[Config], data) -> list:
    return [train(cfg, build_model(cfg, data), data, None, quiet=True) for cfg in cfgs]


def case(name: str, spec: dict, members: int, steps: int, repeats: int) -> float:
    data = build_data(configs(spec, 1, 1)[0].data)
    short = configs(spec, members, CHECK_STEPS)
    pairs = zip(train_ensemble(short, data, quiet=True), sequential(short, data), strict=True)
    distance = max(float((flat(e.model) - flat(s.model)).norm() / flat(s.model).norm()) for e, s in pairs)
    if not distance < 1e-5:
        raise SystemExit(f"{name}: after {CHECK_STEPS} steps the ensemble is {distance:.1e} from the runs")
    cfgs = configs(spec, members, steps)
    times: dict[str, list[float]] = {"sequential": [], "ensemble": []}
    for rep in range(repeats + 1):  # the first round warms up and is not timed
        for side in ("sequential", "ensemble") if rep % 2 == 0 else ("ensemble", "sequential"):
            t0 = time.perf_counter()
            if side == "sequential":
                sequential(cfgs, data)
            else:
                train_ensemble(cfgs, data, quiet=True)
            if rep:
                times[side].append(time.perf_counter() - t0)
    seq, ens = statistics.median(times["sequential"]), statistics.median(times["ensemble"])
    ratio = seq / ens
    print(
        f"{name:<44} {members} x {steps} steps  sequential {seq:6.2f} s  ensemble {ens:6.2f} s  "
        f"ratio {ratio:4.2f}  ({members * steps / seq:,.0f} vs {members * steps / ens:,.0f} member-steps/s; "
        f"same weights after {CHECK_STEPS} steps to {distance:.0e})"
    )
    if spec["model"]["kind"] == "mlp" and spec["model"]["depth"] >= 2:  # its width x width products dominate
        roofline(spec, seq / (members * steps), ens / (members * steps), data)
    claim(
        f"seed ensemble of {members}: {name}",
        f"one stacked model (vmap), {ens:.2f} s",
        f"the {members} runs one after another (train.train), {seq:.2f} s; weights equal to {distance:.0e}",
        ratio,
        3 if "conv" not in name else 1,
    )
    return ratio


def mlp_flops(widths: list[int], batch: int) -> int:
    """Multiply-add FLOPs of one SGD step of an MLP with these layer widths: forward 2·B·in·out per layer,
    backward the same for the weight gradient and for the input gradient (not needed below the first
    layer)."""
    layers = list(itertools.pairwise(widths))
    forward = sum(2 * batch * fan_in * fan_out for fan_in, fan_out in layers)
    return 3 * forward - 2 * batch * widths[0] * widths[1]


def gemm_rate(m: int, k: int, n: int, batch: int = 1, seconds: float = 0.5) -> float:
    """FLOP/s of float32 (batched) matrix products of this shape on this machine, best of a few rounds."""
    a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
    torch.bmm(a, b)
    best = 0.0
    for _ in range(5):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            torch.bmm(a, b)
            count += 1
        best = max(best, 2 * batch * m * k * n * count / (time.perf_counter() - t0))
    return best


def roofline(spec: dict, seq_step: float, ens_step: float, data) -> None:
    """How much faster any ensemble could be: the arithmetic rate the separate runs already reach, against
    the machine's rate for the stacked products (members x batch x width x width) and for a large product."""
    depth, width = spec["model"]["depth"], spec["model"]["width"]
    widths = [int(np.prod(data.input_shape)), *[width] * depth, data.num_classes]
    flops = mlp_flops(widths, 128)
    stacked = gemm_rate(128, width, width, batch=8)
    large = gemm_rate(2048, 2048, 2048)
    print(
        f"    arithmetic: {flops / 1e6:.0f} MFLOP a member-step; the runs one after another reach "
        f"{flops / seq_step / 1e9:.0f} GFLOP/s, the ensemble {flops / ens_step / 1e9:.0f}; this machine's "
        f"float32 products: {stacked / 1e9:.0f} GFLOP/s for the stacked 8 x 128 x {width} x {width}, "
        f"{large / 1e9:.0f} for 2048^3. So no ensemble can be more than "
        f"{max(stacked, large) * seq_step / flops:.1f}x faster than the separate runs here."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--case", action="append", help="run only the cases whose name contains this")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, numpy {np.__version__}, load average {load}"
    )
    ratios = {}
    for name, spec in CASES.items():
        if args.case and not any(part in name for part in args.case):
            continue
        ratios[name] = case(name, spec, args.members, args.steps, args.repeats)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mlp = ratios.get(next(iter(CASES)))
    shown = f"{mlp:.2f} (target >= 3)" if mlp is not None else "not run"
    print(f"ratio sequential / ensemble, 8 MLPs 40-512-512-10: {shown}; load average after: {load}")


if __name__ == "__main__":
    main()
