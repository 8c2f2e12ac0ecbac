"""The train loop, and `run`: a config in, a stored run out.

Steps are the clock: step s means s updates have been done, probes at step s see the model before update s+1,
epochs are step / steps_per_epoch. The loop never waits for the device inside a step: batch losses go into a
device buffer that is read back every `train.log_every` steps and at probe and checkpoint steps, which is
where a non-finite loss is noticed (and pinned to its exact step) and the progress bar moves.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import Config
from .curvature import hvp_operator, top_eigenvalue
from .data import BatchLoader, Dataset, build_data, validate_dataset
from .errors import INTERRUPTS, ConfigError, LearnscopeError, StoreError, describe_os_error
from .optim import INVERSE_SHARPNESS, Schedule, build_optimizer, loss_function, set_lr
from .probes import ProbeContext, build_probes, probe_steps
from .registry import MODELS, RUN_KINDS
from .store import FINAL, RunDir
from .ui import progress_bar

LOADER_SEED_OFFSET = 1_000_003  # the loader's generators are seeded apart from the global (init) RNG


@dataclass
class RunResult:
    config: Config
    status: str  # done | diverged
    records: list[dict[str, Any]]
    path: Path | None = None
    model: nn.Module | None = None  # the trained model when trained in this process
    info: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)

    def final(self, metric: str) -> float:
        return self.records[-1][metric]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LearnscopeError("device=cuda but no CUDA device is available")
    return torch.device(name)


def build_model(cfg: Config, data: Dataset) -> nn.Module:
    """The model of `cfg.model`, initialised from the global RNG seeded with `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    return MODELS.builder(cfg.model.kind)(cfg.model, data.input_shape, data.num_classes)


def fingerprint(model: nn.Module | None, data: Dataset | None) -> str:
    """Identity of user-supplied objects, so their runs get their own directories."""
    parts = []
    if model is not None:
        h = hashlib.sha256(type(model).__qualname__.encode())
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        parts.append(f"model:{h.hexdigest()[:16]}")
    if data is not None:
        h = hashlib.sha256()
        for name, split in [*sorted(data.evals.items()), ("__train__", data.train)]:
            h.update(name.encode())
            for t in (split.x, split.y):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        parts.append(f"data:{h.hexdigest()[:16]}")
    return ",".join(parts)


@RUN_KINDS.register("train", Config)  # the runner of the `train` kind: (cfg, store, quiet=...)
def run(
    cfg: Config,
    store: str | Path | None = "runs",
    *,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run `cfg` (resuming from its checkpoint if one exists) or return its stored result if it is final.

    `model` and `data` replace what the config would build (any nn.Module, any Dataset); the run directory
    is then named by the config and a fingerprint of them. The caller's `model` is copied, not trained in
    place, so two calls start from the same weights. With `store=None` nothing is written.

    Bad data or model input fails before anything is written. Ctrl-C (or SIGTERM through the CLI) leaves the
    run `interrupted`; an error of the operating system (a full disk, a read-only store) is a one-line
    StoreError and leaves the run `failed`; both resume from the last checkpoint when run again.
    """
    if model is not None:
        model = copy.deepcopy(model)
    if store is None:
        data = data if data is not None else build_data(cfg.data)
        check_data(cfg, data)
        model = model if model is not None else build_model(cfg, data)
        return train(cfg, model, data, None, quiet=quiet)

    run_dir = RunDir(store, cfg, fingerprint(model, data))
    if _state(run_dir) in FINAL:
        return _stored(run_dir)
    data = data if data is not None else build_data(cfg.data)
    check_data(cfg, data)
    model = model if model is not None else build_model(cfg, data)
    try:
        with run_dir.lock():
            if _state(run_dir) in FINAL:  # finished by another process meanwhile
                return _stored(run_dir)
            checkpoint = run_dir.load_checkpoint()  # fails early (and harmlessly) on a foreign checkpoint
            run_dir.write_config()
            run_dir.set_status("running", pid=os.getpid())
            try:
                result = train(cfg, model, data, run_dir, checkpoint, quiet=quiet)
            except INTERRUPTS:
                run_dir.set_status_if_possible("interrupted")
                raise
            except OSError as exc:
                run_dir.set_status_if_possible("failed", error=describe_os_error(exc))
                raise
            except LearnscopeError as exc:
                run_dir.set_status_if_possible("failed", error=str(exc))
                raise
            except Exception as exc:
                run_dir.set_status_if_possible(
                    "failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
                )
                raise
            run_dir.set_status(result.status, **result.info)
    except OSError as exc:
        raise StoreError(describe_os_error(exc)) from None
    result.path = run_dir.path
    return result


def check_data(cfg: Config, data: Dataset) -> None:
    """Data errors before anything is written: empty or non-finite splits, a loss that cannot take the
    targets (cross-entropy on a regression's real-valued targets)."""
    validate_dataset(data)
    if data.regression and cfg.train.loss == "ce":
        raise ConfigError(
            "train.loss=ce needs class labels; this data's targets are real (a regression): loss=mse"
        )


def _state(run_dir: RunDir) -> str:
    """The run's state; an unreadable status.json counts as not final (the run is computed again)."""
    try:
        return run_dir.status()["state"]
    except StoreError:
        return "unreadable"


def environment(device: torch.device) -> dict[str, Any]:
    """What decides the numbers of a run beside its config (see the README on reproducibility)."""
    return {
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "threads": torch.get_num_threads(),
        "device": device.type,
    }


def _stored(run_dir: RunDir) -> RunResult:
    status = run_dir.status()
    return RunResult(run_dir.config, status["state"], run_dir.records(), run_dir.path, info=status)


def train(
    cfg: Config,
    model: nn.Module,
    data: Dataset,
    run_dir: RunDir | None = None,
    checkpoint: dict[str, Any] | None = None,
    quiet: bool = False,
) -> RunResult:
    """The loop: draw a batch, step the optimiser, run probes at scheduled steps, checkpoint, repeat."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    env = environment(device)
    data = data.to(device)
    model.to(device)
    tc = cfg.train
    batch_size = None if tc.batch_size == "full" else tc.batch_size
    loader = BatchLoader(data.train, batch_size, cfg.seed + LOADER_SEED_OFFSET, tc.drop_last, data.augment)
    per_epoch = loader.steps_per_epoch
    total = tc.steps if tc.steps is not None else math.ceil(tc.epochs * per_epoch)

    optimizer = build_optimizer(_resolved_lr(cfg, model, data), model)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    schedule = Schedule(tc, per_epoch, total)
    loss_fn = loss_function(tc.loss)
    probes = build_probes(cfg.probes)
    context = ProbeContext(
        model, data, loss_function(tc.loss, "sum"), 0, cfg.probes.batch_size, optimizer=optimizer
    )
    probe_at = set(probe_steps(cfg.probes, total, per_epoch)) if probes else set()
    checkpoint_at = (
        set(range(tc.checkpoint_every, total, tc.checkpoint_every)) if tc.checkpoint_every else set()
    )
    checkpoint_at.add(total)
    sync_at = probe_at | checkpoint_at | set(range(0, total + 1, tc.log_every))

    records: list[dict[str, Any]] = []
    window = torch.zeros(tc.log_every + 1, device=device)  # batch losses since the last read-back
    host = {"loss_sum": 0.0, "loss_count": 0, "last_sync": 0}  # loss read back since the last record
    step, resumed_at = 0, None
    status, info = "done", {"env": env}
    envs = [{**env, "from_step": 0}]  # the environment of each stretch of the run, kept in its checkpoints
    if checkpoint is not None:
        step = resumed_at = checkpoint["step"]
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        set_rng_state(checkpoint["rng"])
        host = dict(checkpoint["host"])
        for probe, state in zip(probes, checkpoint.get("probes", []), strict=False):
            if state is not None:
                probe.load_state_dict(state)
        if "records" in checkpoint:
            records = list(checkpoint["records"])
        else:  # a checkpoint of an older learnscope: the records it covers are those in the file
            records = [r for r in run_dir.records() if r["step"] <= step]
        envs = list(checkpoint.get("envs", envs))
        if {k: v for k, v in envs[-1].items() if k != "from_step"} != env:
            envs.append({**env, "from_step": step})  # resumed elsewhere: the numbers may differ from here on
    if len(envs) > 1:
        info["env_history"] = envs
    if run_dir is not None:  # the store's invariant: the checkpoint's records, or none, and nothing after
        run_dir.restart_metrics(records)
    model.train()
    with progress_bar(total, cfg.name or "train", quiet) as bar:
        bar.update(step)
        while True:
            if step != resumed_at:
                if step in probe_at:
                    record = {"step": step, "epoch": step / per_epoch, "lr": optimizer.param_groups[0]["lr"]}
                    if host["loss_count"]:
                        record["batch_loss"] = host["loss_sum"] / host["loss_count"]
                    host["loss_sum"], host["loss_count"] = 0.0, 0
                    context.step = step
                    for probe in probes:
                        record.update(probe(context))
                    records.append(record)
                    if run_dir is not None:
                        run_dir.append(record)
                    bar.update(step, probe=_summary(record))
                if step in checkpoint_at and run_dir is not None:
                    run_dir.save_checkpoint(
                        {
                            "step": step,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "loader": loader.state_dict(),
                            "rng": get_rng_state(),
                            "host": host,
                            "envs": envs,
                            "probes": [_probe_state(probe) for probe in probes],
                        },
                        records,
                    )
            if step >= total:
                break

            if not schedule.constant:
                set_lr(optimizer, base_lrs, schedule(step))
            x, y = loader.next()
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window[step - host["last_sync"]] = loss.detach()
            step += 1

            if step in sync_at:
                losses = window[: step - host["last_sync"]].tolist()
                bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
                if bad:
                    status = "diverged"
                    info.update(step=host["last_sync"] + bad[0] + 1, loss=str(losses[bad[0]]))
                    break
                host["loss_sum"] += sum(losses)
                host["loss_count"] += len(losses)
                host["last_sync"] = step
                bar.update(step, loss=f"loss {losses[-1]:.4f}")

    info["seconds"] = round(time.perf_counter() - t0, 3)
    return RunResult(cfg, status, records, model=model, info=info)


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
