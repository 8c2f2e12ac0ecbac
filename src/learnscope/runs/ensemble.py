"""Seed ensembles: training runs that differ only in their seed (and optimiser) trained together in one
process, as one stacked model.

Small models on a CPU use a fraction of its arithmetic when each step is many small operations, each paying
the interpreter, the dispatcher and a wake-up of the thread pool. Stacking M members' weights along a new
first dimension (`torch.func.stack_module_state`) and mapping the model over it (`vmap(functional_call)`)
makes each operation M times larger for the same overhead. (Where a single run is already bound by its
arithmetic, as a 512-wide MLP at batch 128 is, stacking gains little; benchmarks/bench_ensemble.py measures
it.)

Each member is still its own run, computed as `train.train` computes it but for the order of floating-point
sums inside the stacked operations:

- its model is built from its own seed (`train.build_model`), then its parameters and buffers are rebound as
  views of its slice of the stacked tensors: the member is an ordinary `nn.Module` whose weights are always
  the ensemble's, with nothing copied;
- its `train.RunLoop` (the one the train loop uses) holds its loader (its own batches, from its seed), its own
  optimiser over those views (its own state, learning rate, weight decay, schedule), its probes, records,
  checkpoints and run directory: the probes at its scheduled steps run on the member module, so its records
  come from the same code as a single run's, and its `checkpoint.pt` has the same format;
- each member's global RNG (what `build_model` seeded, what a probe may draw from) is kept apart and swapped
  in around its own probes and checkpoints; the stacked step draws from no RNG (vmap's `randomness="error"`):
  a model with dropout cannot be stacked.

A step draws each member's batch, computes the M losses in one vmapped forward and their gradients in one
backward (the gradient of the sum is each member's own: the members share no arithmetic), hands each member
its slice of the gradients and steps its optimiser. Batch losses stay on the device until the read-back every
`train.log_every` steps, as in the train loop, where a member with a non-finite loss stops, `diverged` (its
slice goes on being computed, and ignored).

Resuming. A member's arithmetic does not depend on the values or the places of the others in the stack, but a
stacked convolution's does depend on how many there are (a grouped convolution of M groups). So the stack
keeps its size through every resume: a member is final only when its whole ensemble ends (a killed ensemble
resumes every member, a diverged one too, which diverges again at the same step); members that a kill left
behind the others (between two members' checkpoint writes) catch up while the others hold their places in the
stack; and a member resumed without the rest of its group is stacked with placeholders up to the size its
checkpoint was trained at (`run_ensemble(..., stacked_with=...)`; the `ensemble` executor of `sweep.run_all`
passes the rest of the group). Its environment records the size, so a run resumed in another stack (or alone)
says from which step its numbers may differ.

`run_ensemble` runs one group (or says in one line, `NotBatchable`, why it cannot), `train_ensemble` trains
one without a store; `group_configs` splits a sweep into groups; `sweep.run_all(..., executor="ensemble")`
runs a sweep that way, and each config that cannot join a group on its own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..config import Config
from ..data import Dataset, build_data
from ..errors import LearnscopeError, StoreError
from ..inputs import recording_inputs
from ..optim import loss_function
from ..store import RunDir, flatten_config
from .lifecycle import RunResult, execute, finished
from .train import RunLoop, build_model, check_data, drive, init_model, resolve_device

# Top-level config keys in which the members of one ensemble may differ: everything else (data, model, train,
# probes, device) is shared. The optimiser may differ wholly since each member steps its own.
BATCHABLE = ("name", "seed", "optim")
# The training step's options (config.TrainConfig, docs/precision.md), which the stacked step does not take.
STEP_OPTIONS = ("precision", "channels_last", "compile")
# Largest ensemble `group_configs` forms: past a few members the arithmetic is already in large operations,
# and memory (activations, M copies of the batch) grows with every member.
MAX_MEMBERS = 16


class NotBatchable(LearnscopeError):
    """Configs that cannot train as one ensemble, or a model that cannot be stacked; one line saying why."""


# --- which configs go together ------------------------------------------------------------------------------


def batch_key(cfg: Any) -> str | None:
    """What must be equal for configs to train together (None: not a training config, never batched)."""
    if not isinstance(cfg, Config):
        return None
    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in BATCHABLE}, sort_keys=True)


def group_configs(configs: Sequence[Any], max_members: int = MAX_MEMBERS) -> list[list[int]]:
    """Indices of `configs` in groups that can train as one ensemble (same `batch_key`, distinct runs), in the
    order of their first config; a group over `max_members` is cut into near-equal parts, and a config that
    batches with no other is a group of one (to run alone)."""
    groups: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    for i, cfg in enumerate(configs):
        key = batch_key(cfg)
        if key is None:
            alone.append([i])
        else:
            groups.setdefault(key, []).append(i)
    out: list[list[int]] = []
    for members in groups.values():
        parts = -(-len(members) // max_members)
        size = -(-len(members) // parts)
        out.extend(members[start : start + size] for start in range(0, len(members), size))
    return sorted(out + alone, key=lambda group: group[0])


def check_batchable(configs: Sequence[Any]) -> None:
    """A one-line NotBatchable unless every config is a training config and all differ only in BATCHABLE."""
    if not configs:
        raise NotBatchable("an ensemble needs at least one config")
    for cfg in configs:
        if not isinstance(cfg, Config):
            raise NotBatchable(f"only training configs can train as an ensemble, not kind {cfg.kind!r}")
        # The stacked step is one vmapped fp32 forward of the template, eager: no autocast, GradScaler,
        # memory format or compiled forward of its own (docs/precision.md); such runs train one by one.
        for key in STEP_OPTIONS:
            value = getattr(cfg.train, key)
            if value is not None:
                raise NotBatchable(
                    f"train.{key}={str(value).lower()}: an ensemble trains in fp32, eager, in the default "
                    "memory format; run these configs one by one (executor serial or local)"
                )
    first = flatten_config({k: v for k, v in configs[0].to_dict().items() if k not in BATCHABLE})
    for cfg in configs[1:]:
        other = flatten_config({k: v for k, v in cfg.to_dict().items() if k not in BATCHABLE})
        differ = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if differ:
            raise NotBatchable(
                f"configs differ in {differ[0]} ({first.get(differ[0])!r} vs {other.get(differ[0])!r}); "
                f"an ensemble's members may differ only in {', '.join(BATCHABLE)}"
            )


# --- running one group --------------------------------------------------------------------------------------


def run_ensemble(
    configs: Sequence[Config],
    store: str | Path | None = "runs",
    *,
    quiet: bool = False,
    stacked_with: Sequence[Config] = (),
) -> list[RunResult]:
    """Train `configs` (differing only in BATCHABLE) as one ensemble; one result per config, in order, each
    as `train.run` returns it: finished runs are read back, killed ones resume from their checkpoints, and
    every member is stored as an ordinary run (same directory, files and records). With `store=None` nothing
    is written. A NotBatchable error (different configs, a model vmap cannot map, a member run by another
    process) comes before anything is written; any other error or an interrupt stops every member, each left
    `failed` or `interrupted`, to resume when the group is run again.

    A stacked convolution's arithmetic depends on how many members it holds. So that a member resumes exactly
    where fewer of its group are left to run (some finished, or not to be run now: `stacked_with`, configs of
    its group), those fill the stack, unrun and unstored, up to the size its checkpoint was trained at."""
    configs = list(configs)
    check_batchable([*configs, *stacked_with])
    unique = list({cfg.run_hash(): cfg for cfg in configs}.values())  # the same run twice is one member
    results: dict[str, RunResult] = {}
    pending = unique
    if store is not None:
        pending = []
        for cfg in unique:
            done = finished(RunDir(store, cfg))
            if done is not None:
                results[cfg.run_hash()] = done
            else:
                pending.append(cfg)
    if pending:
        with recording_inputs() as read:  # the files the data was read from, part of what each run is
            data = build_data(pending[0].data)
        check_data(pending[0], data)
        check_stackable(pending, data)
        if store is None:
            trained = _train_group(pending, data, [None] * len(pending), quiet, range(len(pending)))
            results.update((cfg.run_hash(), trained[i]) for i, cfg in enumerate(pending))
        else:
            running = {cfg.run_hash() for cfg in pending}
            spare = [c for c in [*unique, *stacked_with] if c.run_hash() not in running]
            spare = list({c.run_hash(): c for c in spare}.values())
            run_dirs = [RunDir(store, cfg) for cfg in pending]
            results.update(_run_stored(run_dirs, spare, data, read, quiet))
    return [results[cfg.run_hash()] for cfg in configs]


def train_ensemble(configs: Sequence[Config], data: Dataset, *, quiet: bool = False) -> list[RunResult]:
    """What `train.train` is to one run, for distinct configs that differ only in BATCHABLE: train them
    together on `data`, store nothing, and return their results (trained models included)."""
    configs = list(configs)
    check_batchable(configs)
    check_stackable(configs, data)
    results = _train_group(configs, data, [None] * len(configs), quiet, range(len(configs)))
    return [results[i] for i in range(len(configs))]


def _run_stored(
    run_dirs: list[RunDir], spare: list[Config], data: Dataset, read: list[Path], quiet: bool
) -> dict[str, RunResult]:
    """The members' runs through the run lifecycle together, as `train.run` runs one, stacked with as many
    `spare` configs as the largest stack a member's checkpoint was trained in needs (none for fresh runs). A
    member that cannot be run (its lock held by another process, a foreign or unreadable checkpoint) stops the
    group before anything is written, with a NotBatchable error naming it: the group can still run one by
    one. Every member is final only when all are: killed before, every member resumes, in the same stack."""

    def work(todo: list[RunDir], checkpoints: list[dict[str, Any] | None]) -> list[RunResult]:
        sizes = [(c["envs"][-1].get("ensemble") or 1) for c in checkpoints if c is not None and c.get("envs")]
        held = spare[: max(0, max(sizes, default=0) - len(todo))]
        cfgs = [d.config for d in todo] + held
        trained = _train_group(cfgs, data, [*todo, *[None] * len(held)], quiet, range(len(todo)))
        return [trained[i] for i in range(len(todo))]

    def unavailable(exc: StoreError) -> NotBatchable:
        return NotBatchable(f"{exc} (an ensemble needs every member)")

    results = execute(run_dirs, work, inputs=read, doing="training", unavailable=unavailable)
    return {run_dir.hash: result for run_dir, result in zip(run_dirs, results, strict=True)}


def _train_group(
    cfgs: list[Config],
    data: Dataset,
    run_dirs: Sequence[RunDir | None],
    quiet: bool,
    to_run: Sequence[int],
) -> dict[int, RunResult]:
    """Train the members `to_run` (indices into `cfgs`) to their end from their checkpoints, stacked with all
    of `cfgs`; their results. Members at different steps (a kill between two of their checkpoint writes) are
    brought level first: those furthest behind train to the next step at which another stands (the others
    held in the stack meanwhile), until all stand at one."""
    results: dict[int, RunResult] = {}
    while len(results) < len(to_run):
        live = [i for i in to_run if i not in results]
        checkpoints = {i: None if run_dirs[i] is None else run_dirs[i].load_checkpoint() for i in live}
        steps = {i: 0 if c is None else int(c["step"]) for i, c in checkpoints.items()}
        low = min(steps.values())
        together = [i for i in live if steps[i] == low]
        later = [s for s in steps.values() if s > low]
        stop_at = min(later) if later else None
        ensemble = _Ensemble(cfgs, data, run_dirs, {i: checkpoints[i] for i in together})
        for i, result in zip(together, ensemble.train(quiet, stop_at), strict=True):
            if result is not None:  # finished (while catching up: diverged)
                results[i] = result
    return results


# --- the stacked model --------------------------------------------------------------------------------------


class _Stack:
    """The members' parameters and buffers stacked along a new first dimension, each member's module rebound
    to views of its slice, and the vmapped loss of all members at once.

    `sample` is a batch of the shape of the real ones (x, y; stacked per member unless `shared_batch`): one
    stacked step on it, on throwaway copies, shows the layout in which the backward gives each gradient, and
    the stacked parameter takes that layout. (A stacked Linear weight's gradient comes out of the batched
    matmul transposed: in a parameter of the other layout, every elementwise step of the optimiser, and the
    momentum cloned from the gradient, would be strided, or each gradient copied.)"""

    def __init__(
        self,
        models: list[nn.Module],
        loss_name: str,
        sample: tuple[torch.Tensor, torch.Tensor],
        shared_batch: bool = False,
    ):
        # The module that `functional_call` runs with the stacked tensors: its own are never read.
        self.template = copy.deepcopy(models[0]).to("meta").train()
        loss_fn = loss_function(loss_name)

        def member_loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss_fn(functional_call(self.template, (p, b), (x,)), y)

        # randomness="error": a model that draws random numbers in its forward (dropout) would draw them from
        # one shared RNG, not from each member's: it cannot be stacked faithfully, so it must fail.
        in_dims = (0, 0, None, None) if shared_batch else 0
        self._losses = vmap(member_loss, in_dims=in_dims, randomness="error")

        trial, trial_buffers = stack_module_state(models)  # copies: the trial moves BatchNorm statistics
        self.trainable = [name for name, p in trial.items() if p.requires_grad]
        _, grads = self._gradients(trial, trial_buffers, *sample)
        params, buffers = stack_module_state(models)
        for name, grad in zip(self.trainable, grads, strict=True):
            if grad is not None and grad.stride() != params[name].stride():
                laid_out = torch.empty_like(grad)  # the gradient's strides
                laid_out.copy_(params[name].detach())
                params[name] = laid_out.requires_grad_()
        self.params, self.buffers = params, buffers
        self.member_params = [_bind(model, params, buffers, i) for i, model in enumerate(models)]

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The M batch losses (detached) and the stacked gradients of the trainable parameters, in the order
        of `trainable` (None for one no loss depends on, as a single run's `.grad` stays None)."""
        return self._gradients(self.params, self.buffers, x, y)

    def _gradients(self, params, buffers, x, y):
        losses = self._losses(params, buffers, x, y)
        wrt = [params[name] for name in self.trainable]
        # The gradient of the sum with respect to member i's slice is that of member i's loss alone.
        grads = torch.autograd.grad(losses.sum(), wrt, allow_unused=True)
        return losses.detach(), list(grads)


def _bind(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], i: int):
    """Make `model`'s parameters and buffers views of slice `i` of the stacked ones (tied ones stay tied);
    returns its trainable parameters in the order of the stacked trainable ones."""
    names = {id(p): name for name, p in model.named_parameters()}
    buffer_names = {id(b): name for name, b in model.named_buffers()}
    new: dict[str, nn.Parameter] = {}
    for module in model.modules():
        for leaf, p in list(module._parameters.items()):
            if p is None:
                continue
            name = names[id(p)]
            if name not in new:  # detach: the member's parameter is a leaf of its own, as a single run's
                new[name] = nn.Parameter(params[name].detach()[i], requires_grad=p.requires_grad)
            module._parameters[leaf] = new[name]
        for leaf, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[leaf] = buffers[buffer_names[id(b)]][i]
    return [new[name] for name, p in params.items() if p.requires_grad]


def check_stackable(cfgs: Sequence[Config], data: Dataset) -> None:
    """A NotBatchable error, before anything is written, for a model that vmap cannot map (random draws in
    the forward, data-dependent control flow, an operation without a batching rule): two freshly built
    members stacked (which takes one stacked step, on copies; building a model leaves the RNGs as found)."""
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    try:
        models = [build_model(c, data).to(device) for c in (list(cfgs) * 2)[:2]]
        _Stack(models, cfg.train.loss, *_sample(cfg, data.to(device), len(models)))
    except LearnscopeError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0] if text else ''}"
        if "randomness" in why:  # vmap's randomness="error"
            why = "it draws random numbers in its forward, e.g. dropout, and the members would share one RNG"
        raise NotBatchable(
            f"model {cfg.model.kind!r} cannot be stacked into an ensemble ({why}); run its configs separately"
        ) from None


def _sample(cfg: Config, data: Dataset, members: int) -> tuple[tuple[torch.Tensor, torch.Tensor], bool]:
    """A batch of the shape the members train on (the first training samples), and whether it is one batch
    shared by all (the whole split unaugmented: every member would draw the same) or one per member."""
    split = data.train
    full = cfg.train.batch_size == "full" or cfg.train.batch_size >= len(split)
    if full and not data.augment.active:
        return (split.x, split.y), True
    n = len(split) if full else cfg.train.batch_size
    x, y = split.x[:n], split.y[:n]
    return (torch.stack([x] * members), torch.stack([y] * members)), False


@dataclass
class _Member:
    loop: RunLoop
    slot: int  # its place in the stack
    params: list[nn.Parameter]  # its trainable parameters, in the order of the stacked ones


class _Ensemble:
    """All of `cfgs` built and stacked; the members in `running` (index -> its checkpoint or None, all at one
    step) started as runs and stepped together. The others hold their places: their slices are computed (on
    a running member's batch: members share no arithmetic, so what a slice holds changes no other) and
    ignored."""

    def __init__(
        self,
        cfgs: list[Config],
        data: Dataset,
        run_dirs: Sequence[RunDir | None],
        running: dict[int, dict[str, Any] | None],
    ):
        device = resolve_device(cfgs[0].device)
        data = data.to(device)
        models, rngs = [], []
        for cfg in cfgs:
            model, rng = init_model(cfg, data)  # seeded with the member's seed, as `run` does
            models.append(model.to(device))
            rngs.append(rng)
        sample, self.shared_batch = _sample(cfgs[0], data, len(models))
        self.stack = _Stack(models, cfgs[0].train.loss, sample, self.shared_batch)
        self.size = len(models)
        self.members = []
        for slot, checkpoint in running.items():
            env = {"ensemble": self.size}  # what else decides its numbers: how many are stacked
            loop = RunLoop.start(
                cfgs[slot], models[slot], data, run_dirs[slot], checkpoint, env_extra=env, rng=rngs[slot]
            )
            self.members.append(_Member(loop, slot, self.stack.member_params[slot]))
        self.device = self.members[0].loop.device

    def train(self, quiet: bool, stop_at: int | None = None) -> list[RunResult | None]:
        """Step the running members to their last step, or to `stop_at` (checkpointing there: a catch-up),
        through the one train loop (`train.drive`). Their results, in the order of `running`: once done or
        diverged; None for one still going."""
        loops = [member.loop for member in self.members]
        columns = [member.slot for member in self.members]
        label = f"ensemble of {self.size}"
        return drive(loops, self.gradients, label, quiet, columns=columns, width=self.size, stop_at=stop_at)

    def gradients(self) -> torch.Tensor:
        """Every slot's gradient on its member's next batch, by one vmapped backward, handed to the running
        members' parameters; the batch losses of all slots. (Every member draws its batch, a diverged one
        too; a held place computes on the first member's.)"""
        batches = [member.loop.loader.next() for member in self.members]
        if self.shared_batch:
            x, y = batches[0]
        else:
            slots = [batches[0]] * self.size  # a held place's: any batch
            for member, batch in zip(self.members, batches, strict=True):
                slots[member.slot] = batch
            x = torch.stack([b[0] for b in slots])
            y = torch.stack([b[1] for b in slots])
        losses, grads = self.stack.gradients(x, y)
        slices = [g.unbind(0) if g is not None else None for g in grads]
        for member in self.members:
            if member.loop.status == "diverged":
                continue
            for param, g in zip(member.params, slices, strict=True):
                param.grad = None if g is None else g[member.slot]
        return losses
