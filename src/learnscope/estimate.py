"""What a sweep or study will cost before it runs (`--estimate` on `sweep` and `study`).

Submitting 500 paper-scale jobs should not be the way to learn that they take 12,000 GPU-hours. For each
distinct shape of training run in the plan (its data, model, batch, precision, probes and device: the runs
that differ only in seed or optimiser settings cost the same), a few short runs of the real loop are timed
on this machine's device, in memory (nothing is written to the store):

    a run of k steps, probes off          -> the cost of a step (the difference between two lengths) and of
                                             setting a run up (data moved, model built)
    the same with probes at 5 points      -> the cost of one probe call at the config's probe settings
    the same, written to a scratch store  -> the cost of a checkpoint, and the bytes a run leaves on disk

and the plan's runs are priced from their own lengths: set-up + steps x step + probe points x probe +
checkpoints x checkpoint. Finished runs cost nothing (a sweep reads them back). Other run kinds (committee
machines, theory curves) are listed as not estimated. The figure is for one process on this device; a pool of
N workers on N devices divides the wall time by about N, and a GPU differs from this CPU by what the printed
device says, so estimate on the machine the runs will use.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, run_digest

PROBE_POINTS = 5  # probe calls in the timed run with probes
MIN_TIMED_SECONDS = 0.3  # the step difference is timed over at least this long (or MAX_TIMED_STEPS)
MAX_TIMED_STEPS = 2000
REPEATS = 3  # each timing is the least of this many runs


@dataclass
class Shape:
    """One distinct shape of training run and what a step, a probe and a checkpoint of it cost here."""

    label: str
    configs: list[Any] = field(default_factory=list)
    setup_s: float = 0.0
    step_s: float = 0.0
    probe_s: float = 0.0
    checkpoint_s: float = 0.0
    state_bytes: int = 0  # a checkpoint without its records
    record_bytes: float = 0.0  # one record in metrics.jsonl (and again in the checkpoint)


@dataclass
class RunCost:
    config: Any
    steps: int
    probes: int
    checkpoints: int
    seconds: float
    bytes: int


@dataclass
class Estimate:
    device: str
    shapes: list[Shape]
    runs: list[RunCost]
    finished: int  # runs of the plan already done or diverged: free
    not_estimated: dict[str, int]  # run kind -> runs of it that are not training runs

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.runs)

    def text(self) -> str:
        lines = [f"estimate on {self.device}, one process; nothing was run into the store"]
        for shape in self.shapes:
            runs = [r for r in self.runs if r.config in shape.configs]
            if not runs:
                continue
            steps = sorted({r.steps for r in runs})
            shown_steps = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}-{steps[-1]:,}"
            lines.append(
                f"  {shape.label}: {len(runs)} runs x {shown_steps} steps; "
                f"{_ms(shape.step_s)}/step, {_ms(shape.probe_s)}/probe call, set-up {shape.setup_s:.2f} s, "
                f"checkpoint {_ms(shape.checkpoint_s)}; "
                f"{_duration(sum(r.seconds for r in runs) / len(runs))} per run"
            )
        for kind, n in self.not_estimated.items():
            lines.append(f"  {n} runs of kind {kind}: not estimated (only training runs are timed)")
        total_steps = sum(r.steps for r in self.runs)
        lines.append(
            f"total: {len(self.runs)} runs to run ({self.finished} already finished), {total_steps:,} steps; "
            f"{_duration(self.seconds)} ({self.seconds / 3600:.3g} device-hours); "
            f"the store grows by {_bytes(self.bytes)}"
        )
        return "\n".join(lines)


def estimate(configs: list, store: str | Path | None = None) -> Estimate:
    """Price the runs of `configs` that `store` has not finished (see the module's docstring)."""
    from .runs.lifecycle import run_state
    from .runs.train import resolve_device
    from .store import FINAL, RunDir

    todo, finished, other = [], 0, {}
    for cfg in configs:
        if store is not None and run_state(RunDir(store, cfg)) in FINAL:
            finished += 1
        elif isinstance(cfg, Config):
            todo.append(cfg)
        else:
            kind = getattr(cfg, "kind", type(cfg).__name__)
            other[kind] = other.get(kind, 0) + 1
    shapes: dict[str, Shape] = {}
    for cfg in todo:
        key = _shape_key(cfg)
        if key not in shapes:
            shapes[key] = Shape(_label(cfg))
        shapes[key].configs.append(cfg)
    costs = []
    for shape in shapes.values():
        _time_shape(shape)
        costs += [_run_cost(cfg, shape) for cfg in shape.configs]
    device = resolve_device(todo[0].device) if todo else None
    return Estimate(_device_name(device), list(shapes.values()), costs, finished, other)


def _shape_key(cfg: Config) -> str:
    """What decides the cost of a step and a probe: everything but the seed, the name, the optimiser's
    numbers and the run's length (the optimiser's kind stays: Adam's step costs more than SGD's)."""
    body = cfg.to_dict()
    body.pop("seed", None)
    body.pop("name", None)
    body["optim"] = {"kind": body["optim"].get("kind")}
    train = dict(body["train"])
    for key in ("steps", "epochs", "milestones", "gamma", "warmup", "schedule", "unit", "checkpoint_every"):
        train.pop(key, None)
    body["train"] = train
    # which samples, and which labels: not how many, so not the cost
    body["data"] = {
        k: v for k, v in body["data"].items() if k not in ("seed", "label_noise", "label_noise_mode")
    }
    return run_digest(body)


def _label(cfg: Config) -> str:
    model = cfg.model.model_dump()
    sizes = "".join(f" {k}={model[k]}" for k in ("depth", "width", "channels", "dim") if k in model)
    return f"{cfg.model.kind}{sizes} on {cfg.data.kind} (batch {cfg.train.batch_size})"


def _short(cfg: Config, steps: int, probes: bool) -> Config:
    """`cfg` cut to `steps` steps, its probes at PROBE_POINTS evenly spaced steps or off, no checkpoint
    before the end (the scratch-store run writes one at the end)."""
    probe_part = (
        {"schedule": ["every"], "every": max(1, steps // (PROBE_POINTS - 1))}
        if probes
        else {"schedule": ["every"], "every": steps + 1, "use": []}
    )
    body = cfg.to_dict()
    body["train"] = {k: v for k, v in body["train"].items() if k != "epochs"} | {
        "steps": steps,
        "checkpoint_every": 0,
    }
    body["probes"] = body["probes"] | probe_part
    return type(cfg).from_dict(body)


def _timed(cfg: Config, data, store: Path | None = None, repeats: int = REPEATS) -> float:
    """The least wall time of `repeats` runs of `cfg`: other work on the machine only ever adds time."""
    from .runs.train import run

    best = math.inf
    for i in range(repeats):
        start = time.perf_counter()
        # a stored run is done after the first time: each repeat writes it into a store of its own
        run(cfg, None if store is None else Path(store) / str(i), data=data, quiet=True)
        best = min(best, time.perf_counter() - start)
    return best


def _time_shape(shape: Shape) -> None:
    """Time the short runs of the module's docstring on the shape's first config."""
    from .data import build_data
    from .runs.train import step_schedule

    cfg = shape.configs[0]
    start = time.perf_counter()
    data = build_data(cfg.data)
    data_s = time.perf_counter() - start
    _TRAIN_SIZES[run_digest(cfg.data.model_dump(mode="json"))] = len(data.train)
    # warm-up: the first call's costs (allocator, kernels) are not any run's
    _timed(_short(cfg, 2, False), data, repeats=1)
    short = 4
    t_short = _timed(_short(cfg, short, False), data)
    # Lengthen the timed run until the steps' time stands out of the noise, but never beyond the longest run
    # of the shape (timing more than the runs themselves would cost more than running them).
    longest = max(step_schedule(c, _train_size(c))[0] for c in shape.configs)
    ceiling = max(2 * short, min(MAX_TIMED_STEPS, longest))
    long = min(4 * short, ceiling)
    while True:
        t_long = _timed(_short(cfg, long, False), data)
        if t_long - t_short >= MIN_TIMED_SECONDS or long >= ceiling:
            break
        long = min(ceiling, long * 4)
    shape.step_s = max(t_long - t_short, 0.0) / (long - short)
    shape.setup_s = data_s + max(t_short - short * shape.step_s, 0.0)
    with_probes = _short(cfg, long, True)
    points = len(step_schedule(with_probes, len(data.train))[2])
    shape.probe_s = max(_timed(with_probes, data) - t_long, 0.0) / points
    scratch = Path(tempfile.mkdtemp(prefix="learnscope-estimate-"))
    try:
        t_stored = _timed(with_probes, data, scratch)
        shape.checkpoint_s = max(t_stored - (t_long + points * shape.probe_s), 0.0)
        (run_dir,) = [p for p in (scratch / "0").iterdir() if p.is_dir()]
        records = sum(1 for _ in (run_dir / "metrics.jsonl").open())
        shape.record_bytes = (run_dir / "metrics.jsonl").stat().st_size / max(records, 1)
        checkpoint = (run_dir / "checkpoint.pt").stat().st_size
        shape.state_bytes = max(int(checkpoint - records * shape.record_bytes), 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_cost(cfg: Config, shape: Shape) -> RunCost:
    from .runs.train import step_schedule

    total, _, probe_at, checkpoint_at = step_schedule(cfg, _train_size(cfg))
    probes = len(probe_at) if cfg.probes.use else 0
    checkpoints = len(checkpoint_at)
    seconds = shape.setup_s + total * shape.step_s + probes * shape.probe_s + checkpoints * shape.checkpoint_s
    disk = shape.state_bytes + 2 * probes * shape.record_bytes + 4096  # checkpoint + records twice + json
    return RunCost(cfg, total, probes, checkpoints, seconds, int(disk))


_TRAIN_SIZES: dict[str, int] = {}  # data config's digest -> its training split's size


def _train_size(cfg: Config) -> int:
    """The number of training samples of the run's data (its epochs' steps follow from it), the data built
    once per data config."""
    from .data import build_data

    key = run_digest(cfg.data.model_dump(mode="json"))
    if key not in _TRAIN_SIZES:
        _TRAIN_SIZES[key] = len(build_data(cfg.data).train)
    return _TRAIN_SIZES[key]


def _device_name(device) -> str:
    if device is None:
        return "no device (nothing to time)"
    if device.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(device)})"
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {torch.get_num_threads()} threads of {os.cpu_count()} cores)"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
