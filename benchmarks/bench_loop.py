"""The learnscope train loop against a bare hand-written PyTorch loop: same model, data, batches and steps.

Both loops draw the same batches (the bare one replays the loader's seeded permutations), so they end on the
same weights: the script checks that, then prints the time ratio learnscope / bare (target <= 1.05) with
probes off. Repetitions alternate between the two loops and the median of each is compared.

    .venv/bin/python benchmarks/bench_loop.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from claims import claim

from learnscope import Config
from learnscope.data import build_data, from_tensors
from learnscope.runs.train import LOADER_SEED_OFFSET, build_model, train


def bare_loop(cfg: Config, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """What a researcher writes by hand: randperm per epoch, index, forward, loss, backward, step."""
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed + LOADER_SEED_OFFSET)
    bs, n = cfg.train.batch_size, len(y)
    per_epoch = math.ceil(n / bs)
    model.train()
    step = 0
    while step < steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(per_epoch):
            if step == steps:
                break
            idx = perm[i * bs : (i + 1) * bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1


def case(name: str, cfg: Config, data, repeats: int) -> float:
    steps = cfg.train.steps
    cfg = cfg.override("probes.use=[]", "device=cpu")
    times = {"learnscope": [], "bare": []}
    finals = {}
    for rep in range(repeats + 1):  # the first round warms up and is not timed
        for which in ("learnscope", "bare") if rep % 2 == 0 else ("bare", "learnscope"):
            model = build_model(cfg, data)
            t0 = time.perf_counter()
            if which == "learnscope":
                train(cfg, model, data, None, quiet=True)
            else:
                bare_loop(cfg, model, data.train.x, data.train.y, steps)
            elapsed = time.perf_counter() - t0
            if rep:
                times[which].append(elapsed)
            finals[which] = torch.cat([p.detach().flatten() for p in model.parameters()])
    if not torch.equal(finals["learnscope"], finals["bare"]):
        raise SystemExit(f"{name}: the two loops did not reach the same weights: not the same computation")
    ours, bare = statistics.median(times["learnscope"]), statistics.median(times["bare"])
    ratio = ours / bare
    print(
        f"{name:<38} steps {steps:>5}  learnscope {ours:7.3f} s  bare {bare:7.3f} s  "
        f"ratio {ratio:.3f}  ({steps / ours:,.0f} vs {steps / bare:,.0f} steps/s)"
    )
    claim(
        f"train loop, probes off: {name}",
        f"{steps / ours:,.0f} steps/s",
        f"a bare PyTorch loop on the same batches, same final weights: {steps / bare:,.0f} steps/s",
        ratio,
        1.05,
        "at most",
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    mlp = Config().override("train.steps=1500", "train.batch_size=128")
    digits = build_data(mlp.data)
    ratios = [case("mlp 64-512-10 on digits, batch 128", mlp, digits, args.repeats)]

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (512,), generator=gen)
    resnet = Config().override("model=resnet18", "model.width=16", "train.steps=24", "train.batch_size=64")
    ratios.append(
        case("resnet18 width 16 on 32x32, batch 64", resnet, from_tensors(x, y, x[:64], y[:64]), args.repeats)
    )
    worst = max(ratios)
    print(f"worst ratio learnscope / bare: {worst:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
