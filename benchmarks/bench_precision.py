"""What `train.precision`, `train.channels_last` and `train.compile` cost or save on this machine's device.

Each option against fp32 eager on the same model, data and batches, timed as `--estimate` times a step
(learnscope/estimate.py: the real loop, in memory, probes off, the least of three runs of each length, the
step's cost the difference between two lengths, so set-up and compilation drop out). Printed as steps per
second and the ratio to fp32; no target: on a CPU these options mostly cost (docs/precision.md), and their
reason to exist is a GPU (`--device cuda` where one is present).

    .venv/bin/python benchmarks/bench_precision.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

from learnscope import Config
from learnscope.estimate import estimate

MODELS = {
    "MLP 64-512-10 on digits": {
        "model": {"kind": "mlp", "depth": 1, "width": 512},
        "data": {"kind": "digits"},
    },
    "conv width 32, depth 2, on 32x32 images": {
        "model": {"kind": "conv", "depth": 2, "width": 32},
        "data": {"kind": "digits", "pad": 12},
    },
}
OPTIONS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
}


def step_seconds(body: dict) -> float:
    (shape,) = estimate([Config.from_dict(body)]).shapes
    return shape.step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name, body in MODELS.items():
        base = {**body, "device": args.device, "train": {"steps": 2000, "batch_size": 128}}
        fp32 = step_seconds(base)
        print(f"{name}: fp32 {1 / fp32:,.0f} steps/s")
        for option, keys in OPTIONS.items():
            if option == "fp32":
                continue
            if option == "channels_last" and body["model"]["kind"] == "mlp":
                continue  # not images: refused
            seconds = step_seconds({**base, "train": {**base["train"], **keys}})
            print(f"  {option}: {1 / seconds:,.0f} steps/s, {fp32 / seconds:.2f}x fp32")


if __name__ == "__main__":
    main()
