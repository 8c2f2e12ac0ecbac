"""The train loop, and `run`: a config in, a stored run out.

Steps are the clock: step s means s updates have been done, probes at step s see the model before update s+1,
epochs are step / steps_per_epoch. The loop never waits for the device inside a step: batch losses go into a
device buffer that is read back every `train.log_every` steps and at probe and checkpoint steps, which is
where a non-finite loss is noticed (and pinned to its exact step) and the progress bar moves.

How the training step computes is the config's `train.precision`, `train.channels_last` and `train.compile`
(docs/precision.md): the forward in the device's autocast (fp16 with a GradScaler, whose state the checkpoints
carry), the model and image batches in channels_last memory format, the forward compiled. Only the training
step changes: probes run on the model module itself (the compiled forward shares its parameters), in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ..config import Config
from ..curvature import hvp_operator, top_eigenvalue
from ..data import BatchLoader, Dataset, build_data, validate_dataset
from ..data.loader import steps_per_epoch
from ..errors import ConfigError, LearnscopeError, out_of_memory
from ..inputs import recording_inputs
from ..optim import INVERSE_SHARPNESS, Schedule, build_optimizer, loss_function, set_lr
from ..probes import ProbeContext, Steps, build_probes, probe_steps
from ..registry import MODELS, RUN_KINDS
from ..store import RunDir
from ..ui import notice, progress_bar
from .lifecycle import RunResult, execute, finished

LOADER_SEED_OFFSET = 1_000_003  # the loader's generators are seeded apart from the global (init) RNG
# The batch losses are read back at least every this many steps, whatever train.log_every says: the window
# that holds them on the device is that long at most.
MAX_LOSS_WINDOW = 65_536


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LearnscopeError("device=cuda but no CUDA device is available")
    return torch.device(name)


def build_model(cfg: Config, data: Dataset) -> nn.Module:
    """The model of `cfg.model`, initialised from a torch RNG seeded with `cfg.seed` (`init_model`); the
    global RNGs are left as found."""
    return init_model(cfg, data)[0]


def init_model(cfg: Config, data: Dataset) -> tuple[nn.Module, dict[str, Any]]:
    """The model of `cfg.model`, initialised from the torch RNG seeded with `cfg.seed`, and the RNGs' state
    after it: the run's own RNG stream goes on from there (dropout, probes), so a run's numbers depend on
    its seed alone and the caller's global RNGs are left as found. A model whose weights and gradients cannot
    fit in the device's memory is refused in one line before anything is allocated (`check_model_fits`); one
    that fails to allocate all the same is a one-line error too."""
    check_model_fits(cfg, data)
    with preserved_rng():
        torch.manual_seed(cfg.seed)
        try:
            model = MODELS.builder(cfg.model.kind)(cfg.model, data.input_shape, data.num_classes)
        except Exception as exc:
            error = out_of_memory(exc, "building the model")
            if error is None:
                raise
            raise error from None
        return model, get_rng_state()


def check_model_fits(cfg: Config, data: Dataset) -> None:
    """A ConfigError when the model's weights and their gradients alone take more than the memory of its
    device: found by building it on the meta device (shapes, no storage)."""
    try:
        with torch.device("meta"):
            shapes = MODELS.builder(cfg.model.kind)(cfg.model, data.input_shape, data.num_classes)
    except Exception:  # a builder that cannot run on the meta device is simply built for real
        return
    tensors = [*shapes.parameters(), *shapes.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    device = resolve_device(cfg.device)
    memory = device_memory(device)
    if memory and 2 * weights > memory:
        count = sum(t.numel() for t in shapes.parameters())
        raise ConfigError(
            f"model ({cfg.model.kind}, {_model_keys(cfg)}): {count:.3g} parameters need "
            f"{_gib(2 * weights)} for weights and gradients, more than the {_gib(memory)} of "
            f"{device.type} memory; make it smaller"
        )


def device_memory(device: torch.device) -> int:
    """Bytes of memory of the device: the GPU's, or the machine's physical memory (0: unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _model_keys(cfg: Config) -> str:
    sizes = {k: v for k, v in cfg.model.model_dump().items() if k in ("width", "depth", "channels", "dim")}
    return ", ".join(f"model.{k}={v}" for k, v in sizes.items()) or "its defaults"


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.3g} GiB"


def fingerprint(model: nn.Module | None, data: Dataset | None, model_id: str | None = None) -> str:
    """Identity of user-supplied objects, so their runs get their own directories: a model by its class and
    structure (`model_structure`), not its weights, with the caller's `model_id` if given, so that a model
    built afresh in each call (another random init) is the same run, which resumes or is read back; data by
    its content."""
    parts = []
    if model is not None:
        h = hashlib.sha256(model_structure(model).encode())
        if model_id is not None:
            h.update(f"\0model_id={model_id}".encode())
        parts.append(f"model:{h.hexdigest()[:16]}")
    if data is not None:
        h = hashlib.sha256()
        for name, split in [*sorted(data.evals.items()), ("__train__", data.train)]:
            h.update(name.encode())
            for t in (split.x, split.y):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        parts.append(f"data:{h.hexdigest()[:16]}")
    return ",".join(parts)


def model_structure(model: nn.Module) -> str:
    """A model's structure as text, one line per item: each module of its tree (name, class with its module,
    and the constructor arguments torch prints for it: `extra_repr`, e.g. in_features=5, out_features=16),
    then each parameter and buffer (name, shape, dtype, trainable or not). No values: models built alike from
    different random draws have the same structure."""
    lines = []
    for name, module in model.named_modules(remove_duplicate=False):
        # a repr of a function or object held by a module names its address, which changes every process
        shown = re.sub(r" at 0x[0-9a-fA-F]+", "", module.extra_repr())
        lines.append(f"module {name or '.'} {class_name(module)}({shown})")
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        shape = "lazy" if is_lazy(tensor) else tuple(tensor.shape)  # a lazy module's shapes come later
        trainable = isinstance(tensor, nn.Parameter) and tensor.requires_grad
        lines.append(f"tensor {name} {shape} {tensor.dtype} {'trainable' if trainable else 'fixed'}")
    return "\n".join(lines)


def class_name(obj: Any) -> str:
    """An object's class as module.qualname (e.g. mypackage.nets.MyNet)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def supplied(model: nn.Module | None, data: Dataset | None, model_id: str | None = None) -> dict[str, str]:
    """What a run's user-supplied model and data are, for config.json (`store.supplied_keys`): the model's
    class and model_id, the data as its splits' sizes."""
    out = {}
    if model is not None:
        out["model"] = class_name(model)
        if model_id is not None:
            out["model_id"] = model_id
    if data is not None:
        evals = [f"{len(split)} {name}" for name, split in data.evals.items() if name != "train"]
        sizes = [f"{len(data.train)} train", *evals]
        out["data"] = f"tensors ({', '.join(sizes)})"
    return out


@RUN_KINDS.register("train", Config)  # the runner of the `train` kind: (cfg, store, quiet=...)
def run(
    cfg: Config,
    store: str | Path | None = "runs",
    *,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    model_id: str | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run `cfg` (resuming from its checkpoint if one exists) or return its stored result if it is final.

    `model` and `data` replace what the config would build (any nn.Module, any Dataset); the run directory
    is then named by the config (its seed included) and their identity (`fingerprint`): data by its values,
    a model by its class and structure (module tree, parameter and buffer shapes and dtypes), not its
    weights, so a model built afresh in each call, whatever its random init, finds its run again: resumed
    from the checkpoint, or read back once final (then `computed` is False and `model` None, and a one-line
    notice says so). The flip side: a model of the same structure with other weights (pre-trained, a
    fine-tuning start) or another `forward` is the same run. `model_id` (any text, e.g. the name or hash of
    the weights file) joins the identity to tell such models apart; `runs ls` shows it beside the class.
    config.json records what was supplied (the model's class, model_id, the data's sizes), which `runs ls`
    and the trackers show in place of the config's kinds. The caller's `model` is copied, not trained in
    place, so two calls start from the same weights. With `store=None` nothing is written.

    Bad data or model input fails before anything is written. Ctrl-C (or SIGTERM through the CLI) leaves the
    run `interrupted`; an error of the operating system (a full disk, a read-only store) is a one-line
    StoreError and leaves the run `failed`; both resume from the last checkpoint when run again.
    """
    if model_id is not None and (model is None or not isinstance(model_id, str) or not model_id.strip()):
        raise ConfigError(
            f"model_id={model_id!r}: must be a non-empty string naming the model passed as model="
            if model is not None
            else "model_id needs model=: the config's own model is already known by the config"
        )
    if model is not None:
        model = copy.deepcopy(model)
    rng = None  # a caller's model: the run's RNG stream starts from the global RNGs as they are
    if store is None:
        data = data if data is not None else build_data(cfg.data)
        check_data(cfg, data)
        if model is None:
            model, rng = init_model(cfg, data)
        return train(cfg, model, data, None, quiet=quiet, rng=rng)

    run_dir = RunDir(store, cfg, fingerprint(model, data, model_id), supplied(model, data, model_id))
    done = finished(run_dir)
    if done is not None:
        if model is not None and model_id is None:  # the case where weights the caller loaded go unseen
            notice(
                f"run {run_dir.hash} of {class_name(model)} is {done.status}: read back, not trained (a "
                "model is known by its class and structure, not its weights: model_id= tells them apart)"
            )
        return done
    with recording_inputs() as read:  # the files the data was read from, part of what the run is
        data = data if data is not None else build_data(cfg.data)
    check_data(cfg, data)
    if model is None:
        model, rng = init_model(cfg, data)

    def work(todo: list[RunDir], checkpoints: list) -> list[RunResult]:
        return [train(cfg, model, data, todo[0], checkpoints[0], quiet=quiet, rng=rng)]

    return execute([run_dir], work, inputs=read, doing="training")[0]


def check_data(cfg: Config, data: Dataset) -> None:
    """Data errors before anything is written: empty or non-finite splits, a loss that cannot take the
    targets (cross-entropy on a regression's real-valued targets)."""
    validate_dataset(data)
    if data.regression and cfg.train.loss == "ce":
        raise ConfigError(
            "train.loss=ce needs class labels; this data's targets are real (a regression): loss=mse"
        )
    check_step_options(cfg, data)


def check_step_options(cfg: Config, data: Dataset) -> None:
    """A one-line ConfigError for a training-step option (docs/precision.md) that this data or device cannot
    take. channels_last on inputs that are not images would do nothing while naming another run: refused.
    The CPU's autocast takes bf16 and fp16 alike (torch 2.13; fp16 is slow there, docs/precision.md); a GPU
    without bfloat16 arithmetic refuses bf16 rather than emulate it."""
    tc = cfg.train
    if tc.channels_last and len(data.input_shape) != 3:
        raise ConfigError(
            f"train.channels_last=true needs image inputs (batches N×C×H×W); this data's samples have shape "
            f"{tuple(data.input_shape)}: leave it out"
        )
    on_gpu = tc.precision == "bf16" and resolve_device(cfg.device).type == "cuda"
    if on_gpu and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(
            f"train.precision=bf16: {torch.cuda.get_device_name()} has no bfloat16 arithmetic; use fp16"
        )


def environment_stretches(envs: list[dict[str, Any]], env: dict[str, Any], step: int) -> list[dict[str, Any]]:
    """The environment of each stretch of a run (its checkpoints keep the list): `envs`, and `env` from `step`
    on where it is not the last one's (a run resumed elsewhere: its numbers may differ from there)."""
    if envs and {k: v for k, v in envs[-1].items() if k != "from_step"} == env:
        return list(envs)
    return [*envs, {**env, "from_step": step}]


def step_schedule(cfg: Config, train_size: int) -> tuple[int, int, Steps, Steps]:
    """A run's steps as the loop counts them, from its config and the size of its training split: (its
    length, the steps of an epoch, the steps its probes run at, the steps a checkpoint is written at). Step
    sets are progressions (Steps): setting up takes no time or memory that grows with the steps."""
    tc = cfg.train
    per_epoch = steps_per_epoch(train_size, None if tc.batch_size == "full" else tc.batch_size, tc.drop_last)
    total = tc.steps if tc.steps is not None else math.ceil(tc.epochs * per_epoch)
    probe_at = probe_steps(cfg.probes, total, per_epoch) if cfg.probes.use else Steps(total)
    every = [(tc.checkpoint_every, tc.checkpoint_every)] if tc.checkpoint_every else []
    return total, per_epoch, probe_at, Steps(total, {total}, every)


def environment(device: torch.device | None) -> dict[str, Any]:
    """What decides the numbers of a run beside its config (docs/store.md, "Reproducibility"); the device
    where the run's code chooses it (None: not known here)."""
    env = {"torch": str(torch.__version__), "numpy": str(np.__version__), "threads": torch.get_num_threads()}
    return env if device is None else {**env, "device": device.type}


def train(
    cfg: Config,
    model: nn.Module,
    data: Dataset,
    run_dir: RunDir | None = None,
    checkpoint: dict[str, Any] | None = None,
    quiet: bool = False,
    rng: dict[str, Any] | None = None,
) -> RunResult:
    """One run of `cfg` on `model` and `data`, resumed from `checkpoint` if given: `drive` with one model.
    `rng`: the RNG state the run's stream starts from (`init_model`'s; None: the global RNGs' as they are)."""
    t0 = time.perf_counter()
    loop = RunLoop.start(cfg, model, data, run_dir, checkpoint, rng=rng)
    with loop.own_rng():  # the whole run draws from its own stream (dropout too)
        (result,) = drive([loop], loop.backward, cfg.name or "train", quiet, started=t0)
    return result


Gradients = Callable[[], torch.Tensor]


def drive(
    loops: Sequence[RunLoop],
    gradients: Gradients,
    label: str,
    quiet: bool = False,
    *,
    columns: Sequence[int] | None = None,
    width: int | None = None,
    stop_at: int | None = None,
    started: float | None = None,
) -> list[RunResult | None]:
    """The train loop, for one model or for the members of a stacked ensemble (ensemble.py), all at one
    step: probes and checkpoints at their scheduled steps; `gradients()` leaves each model's gradient on the
    next batch in its parameters' `.grad` and returns the batch losses (`width` of them, default one per
    loop; loop i's is `columns[i]`, default i); each live run steps its optimiser at its scheduled learning
    rate; the losses go to a device buffer that is read back at sync steps, where a non-finite one marks its
    run diverged at its exact step (that run stops; the others go on). Runs to the last step, or to `stop_at`
    (checkpointing there: an ensemble bringing members level); the results, in order: once done or diverged,
    None for one still going at `stop_at`."""
    started = time.perf_counter() if started is None else started
    columns = list(range(len(loops))) if columns is None else list(columns)
    first = loops[0]
    for loop in loops:
        loop.model.train()
        if stop_at is not None:  # a step at which others of its group checkpointed: one of the schedule's
            loop.also_checkpoint_at(stop_at)
    stop = first.total if stop_at is None else stop_at
    results: list[RunResult | None] = [None] * len(loops)
    live = list(range(len(loops)))
    width = len(loops) if width is None else width
    window = torch.zeros(first.window_size, width, device=first.device)  # the losses since the last read-back
    last_sync = first.step
    with progress_bar(first.total, label, quiet) as bar:
        bar.update(first.step)
        while True:
            if first.step != first.resumed_at and first.due():
                shown = [loops[i].probe_and_checkpoint() for i in live]
                if shown[0] is not None:
                    bar.update(first.step, probe=_summary(shown[0]))
            if first.step >= stop:
                break

            _update(loops, live, gradients, window[first.step - last_sync])
            for loop in loops:
                loop.advance()

            if first.step in first.sync_at:
                table = window[: first.step - last_sync].T.tolist()
                for i in list(live):
                    if loops[i].take_losses(table[columns[i]]):
                        live.remove(i)  # diverged: it stops; an ensemble's slice goes on, ignored
                        results[i] = loops[i].result(time.perf_counter() - started)
                last_sync = first.step
                if not live:
                    break
                mean = sum(table[columns[i]][-1] for i in live) / len(live)
                bar.update(first.step, loss=f"loss {mean:.4f}")
    if stop_at is None:
        for i in live:
            results[i] = loops[i].result(time.perf_counter() - started)
    return results


def _update(loops: Sequence[RunLoop], live: list[int], gradients: Gradients, row: torch.Tensor) -> None:
    """One step of `drive`: the gradients on the next batch, each live run's update at its scheduled
    learning rate, the batch losses into `row` of the device buffer. Nothing here waits for the device
    (tests/test_gpu.py runs it under CUDA's sync debug mode), except fp16's GradScaler (`RunLoop.update`)."""
    row.copy_(gradients())
    for i in live:
        loops[i].set_lr()
        loops[i].update()


@dataclass
class RunLoop:
    """One run's state in the train loop and what happens at its scheduled steps: built by `start` (a
    fresh run or one resumed from a checkpoint), stepped by `train` (one model) or by `ensemble.py` (a
    member of a stacked ensemble), so both write the same records and checkpoints."""

    cfg: Config
    model: nn.Module
    data: Dataset
    run_dir: RunDir | None
    device: torch.device
    loader: BatchLoader
    per_epoch: int
    total: int
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    schedule: Schedule
    loss_fn: Any
    probes: list[Any]
    context: ProbeContext
    probe_at: Steps
    checkpoint_at: Steps
    sync_at: Steps
    records: list[dict[str, Any]]
    host: dict[str, Any]  # loss read back since the last record
    envs: list[dict[str, Any]]  # the environment of each stretch of the run, kept in its checkpoints
    info: dict[str, Any]
    rng: dict[str, Any]  # the run's own RNG stream (`own_rng`), saved in its checkpoints
    step: int = 0
    _rng_in_place: bool = False
    resumed_at: int | None = None
    status: str = "done"
    # the training step's options (`step_options`): the forward it calls, the autocast dtype (None: fp32),
    # fp16's GradScaler, whether batches go channels_last
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    autocast: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    @classmethod
    def start(
        cls,
        cfg: Config,
        model: nn.Module,
        data: Dataset,
        run_dir: RunDir | None = None,
        checkpoint: dict[str, Any] | None = None,
        env_extra: dict[str, Any] | None = None,
        rng: dict[str, Any] | None = None,
    ) -> RunLoop:
        """Everything the loop needs, resumed from `checkpoint` if given; `metrics.jsonl` is rewritten to the
        checkpoint's records. `env_extra`: what else decides the numbers (an ensemble says so). `rng`: where
        the run's RNG stream starts (`init_model`'s state; None: the global RNGs' as they are), which
        whatever is built here draws from too; the global RNGs are left as found."""
        rng = rng if rng is not None else get_rng_state()
        with preserved_rng():
            set_rng_state(rng)
            loop = cls._build(cfg, model, data, run_dir, checkpoint, env_extra)
            loop.rng = get_rng_state()
        if run_dir is not None:  # the store's invariant: the checkpoint's records, or none, and nothing after
            run_dir.restart_metrics(loop.records)
        return loop

    @classmethod
    def _build(cls, cfg, model, data, run_dir, checkpoint, env_extra) -> RunLoop:
        device = resolve_device(cfg.device)
        env = {**environment(device), **(env_extra or {})}
        check_step_options(cfg, data)
        data = data.to(device)
        model.to(device)
        if cfg.train.channels_last:  # in place: the optimiser and probes see the same parameters
            model.to(memory_format=torch.channels_last)
        tc = cfg.train
        batch_size = None if tc.batch_size == "full" else tc.batch_size
        loader = BatchLoader(
            data.train, batch_size, cfg.seed + LOADER_SEED_OFFSET, tc.drop_last, data.augment
        )
        total, per_epoch, probe_at, checkpoint_at = step_schedule(cfg, loader.n)

        optimizer = build_optimizer(_resolved_lr(cfg, model, data), model)
        probes = build_probes(cfg.probes)
        context = ProbeContext(
            model, data, loss_function(tc.loss, "sum"), 0, cfg.probes.batch_size, optimizer=optimizer
        )
        loop = cls(
            cfg=cfg,
            model=model,
            data=data,
            run_dir=run_dir,
            device=device,
            loader=loader,
            per_epoch=per_epoch,
            total=total,
            optimizer=optimizer,
            base_lrs=[group["lr"] for group in optimizer.param_groups],
            schedule=Schedule(tc, per_epoch, total),
            loss_fn=loss_function(tc.loss),
            probes=probes,
            context=context,
            probe_at=probe_at,
            checkpoint_at=checkpoint_at,
            sync_at=probe_at | checkpoint_at | Steps(total, every=[(0, min(tc.log_every, MAX_LOSS_WINDOW))]),
            records=[],
            host={"loss_sum": 0.0, "loss_count": 0, "last_sync": 0},
            envs=[{**env, "from_step": 0}],
            info={"env": env},
            rng={},
        )
        loop.step_options()
        if checkpoint is not None:
            loop._resume(checkpoint, env)
        if len(loop.envs) > 1:
            loop.info["env_history"] = loop.envs
        return loop

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """The run's own RNG stream in place of the global RNGs while the block runs (dropout, probes and the
        checkpoint draw from it), the caller's left as found: runs in one process, an ensemble's members
        too, never share or disturb one RNG."""
        if self._rng_in_place:  # already (the whole of a single run is): nothing to swap
            yield
            return
        with preserved_rng():
            set_rng_state(self.rng)
            self._rng_in_place = True
            try:
                yield
            finally:
                self._rng_in_place = False
                self.rng = get_rng_state()

    def _resume(self, checkpoint: dict[str, Any], env: dict[str, Any]) -> None:
        self.step = self.resumed_at = checkpoint["step"]
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scaler is not None and "scaler" in checkpoint:  # absent: a fresh scale (its first steps)
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.loader.load_state_dict(checkpoint["loader"])
        set_rng_state(checkpoint["rng"])
        self.host = dict(checkpoint["host"])
        for probe, state in zip(self.probes, checkpoint.get("probes", []), strict=False):
            if state is not None:
                probe.load_state_dict(state)
        if "records" in checkpoint:
            self.records = list(checkpoint["records"])
        else:  # a checkpoint of an older learnscope: the records it covers are those in the file
            self.records = [r for r in self.run_dir.records() if r["step"] <= self.step]
        self.envs = environment_stretches(checkpoint.get("envs", self.envs), env, self.step)

    def due(self) -> bool:
        """Whether probes or a checkpoint are scheduled at this step."""
        return self.step in self.probe_at or self.step in self.checkpoint_at

    def also_checkpoint_at(self, step: int) -> None:
        """One more checkpoint (and loss read-back) at `step`, beside the schedule's."""
        self.checkpoint_at.add(step)
        self.sync_at.add(step)

    def advance(self) -> None:
        """One update done: the clock moves on (a diverged run's too; it is not stepped any more)."""
        self.step += 1

    def step_options(self) -> None:
        """The training step as `train.precision` and `train.compile` say (channels_last's model is set in
        `_build`). The compiled forward wraps the module and shares its parameters, so probes, checkpoints
        and an ensemble keep using the module itself. fp16 takes a GradScaler: the loss is scaled before the
        backward so small gradients do not flush to zero in fp16, and a step whose gradients overflowed is
        skipped while the scale backs off; bf16 has fp32's exponent range and needs none."""
        tc = self.cfg.train
        self.forward = torch.compile(self.model) if tc.compile else self.model
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision or "fp32")
        if tc.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        self.channels_last = bool(tc.channels_last)

    def backward(self) -> torch.Tensor:
        """The gradient of the loss on the next batch, in the parameters' `.grad`; the loss, on the device
        (one model's `Gradients` for `drive`). Under autocast only the forward runs in bf16/fp16: the loss
        is computed in fp32 from its output (as torch's AMP recipe has it), so it and the read-back losses
        are fp32 whatever the precision."""
        x, y = self.loader.next()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast is None:
            loss = self.loss_fn(self.forward(x), y)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast):
                out = self.forward(x)
            loss = self.loss_fn(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return loss.detach()

    def update(self) -> None:
        """The optimiser's step on the gradients `backward` left. fp16: through the GradScaler, which
        unscales them and checks them for inf/nan on the device, then reads that check back (`.item()`,
        one host sync per step: torch's GradScaler.step does so unless the optimiser takes the scale itself,
        as fused ones do) to skip the step on overflow; its `update` of the scale stays on the device."""
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def probe_and_checkpoint(self) -> dict[str, Any] | None:
        """`at_step` drawing from the run's own RNG stream (`own_rng`)."""
        with self.own_rng():
            return self.at_step()

    def at_step(self) -> dict[str, Any] | None:
        """The probes and the checkpoint scheduled at this step (the model is that after `step` updates);
        returns the record when probes ran."""
        record = None
        if self.step in self.probe_at:
            record = {
                "step": self.step,
                "epoch": self.step / self.per_epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            if self.host["loss_count"]:
                record["batch_loss"] = self.host["loss_sum"] / self.host["loss_count"]
            self.host["loss_sum"], self.host["loss_count"] = 0.0, 0
            self.context.step = self.step
            for probe in self.probes:
                record.update(probe(self.context))
            self.records.append(record)
            if self.run_dir is not None:
                self.run_dir.append(record)
        if self.step in self.checkpoint_at and self.run_dir is not None:
            self.run_dir.save_checkpoint(
                {
                    "step": self.step,
                    "model": _own_storage(self.model.state_dict()),
                    "optimizer": _own_storage(self.optimizer.state_dict()),
                    "loader": self.loader.state_dict(),
                    "rng": get_rng_state(),
                    "host": self.host,
                    "envs": self.envs,
                    "probes": [_probe_state(probe) for probe in self.probes],
                    **({} if self.scaler is None else {"scaler": self.scaler.state_dict()}),
                },
                self.records,
            )
        return record

    @property
    def window_size(self) -> int:
        """Room for the batch losses between two read-backs (at most `log_every`, and MAX_LOSS_WINDOW, steps
        apart)."""
        return min(self.cfg.train.log_every, MAX_LOSS_WINDOW, self.total) + 1

    def set_lr(self) -> None:
        """The scheduled learning rate of the update from `step` to `step + 1`."""
        if not self.schedule.constant:
            set_lr(self.optimizer, self.base_lrs, self.schedule(self.step))

    def take_losses(self, losses: list[float]) -> bool:
        """The batch losses of the steps since the last read-back (host floats, read at a sync step): True,
        with the run `diverged` at the exact step, when one is not finite."""
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            self.status = "diverged"
            self.info.update(step=self.host["last_sync"] + bad[0] + 1, loss=str(losses[bad[0]]))
            return True
        self.host["loss_sum"] += sum(losses)
        self.host["loss_count"] += len(losses)
        self.host["last_sync"] = self.step
        return False

    def result(self, seconds: float) -> RunResult:
        self.info["seconds"] = round(seconds, 3)
        return RunResult(self.cfg, self.status, self.records, model=self.model, info=self.info)


def _own_storage(value: Any) -> Any:
    """`value` with every tensor that views a larger storage copied out, since torch.save writes a view's
    whole storage (an ensemble member's weights view the stacked ones). Where nothing views more, `value`
    itself: a single run's checkpoint is saved as it always was."""
    if isinstance(value, torch.Tensor):
        viewing_more = value.untyped_storage().nbytes() > value.numel() * value.element_size()
        return value.clone() if viewing_more else value
    if isinstance(value, dict | list):
        pairs = list(value.items() if isinstance(value, dict) else enumerate(value))
        owned = {k: _own_storage(v) for k, v in pairs}
        if all(owned[k] is v for k, v in pairs):
            return value
        out = copy.copy(value)  # the same type and attributes (a state_dict's _metadata)
        for k, v in owned.items():
            out[k] = v
        return out
    return value


def _resolved_lr(cfg: Config, model: nn.Module, data: Dataset):
    """The optimiser config with a learning rate of "1/sharpness" replaced by its value at initialisation
    (the sharpness of the training objective: the summed loss for `sse`, the mean otherwise)."""
    if getattr(cfg.optim, "lr", None) != INVERSE_SHARPNESS:
        return cfg.optim
    summed = loss_function(cfg.train.loss, "sum")
    per_sample = 1.0 if cfg.train.loss == "sse" else 1.0 / len(data.train)
    was_training = model.training
    model.eval()  # no normalisation statistics move; a model without them is the same in both modes
    try:
        hessian = hvp_operator(model, data.train.x, data.train.y, summed, batch_size=4096, scale=per_sample)
        sharpness = float(top_eigenvalue(hessian, 30))  # Lanczos: the largest algebraic eigenvalue
    finally:
        model.train(was_training)
    if not sharpness > 0:
        raise ConfigError(f"optim.lr=1/sharpness: the loss has no positive curvature at init ({sharpness})")
    return cfg.optim.model_copy(update={"lr": 1.0 / sharpness})


def _probe_state(probe) -> Any:
    """The state a probe keeps across steps (e.g. the weights at its previous step, for an angle turned
    since), if any: a probe with `state_dict()` and `load_state_dict()` resumes exactly from a checkpoint."""
    return probe.state_dict() if hasattr(probe, "state_dict") else None


def _summary(record: dict[str, Any]) -> str:
    shown = [f"{k} {v:.3f}" for k, v in record.items() if k.endswith("/acc")][:2]
    return "  ".join(shown)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG a run may touch: torch (CPU and CUDA), numpy, Python."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": np_state[2],
            "has_gauss": np_state[3],
            "gauss": np_state[4],
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The global RNGs (`get_rng_state`) left as found, whatever the block seeds or draws."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """Python's RNG state is nested tuples; a checkpoint round trip may give lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value
