"""Record (or check) the golden runs: what a refactor of the run machinery must leave unchanged.

    .venv/bin/python tests/golden/record_golden.py            write tests/golden/golden.json (refuses to
                                                               overwrite it unless --force)
    .venv/bin/python tests/golden/record_golden.py --check    compare this checkout with golden.json and print
                                                               each difference; writes nothing

What is pinned (tests/test_golden_runs.py checks the same with `compare`):

1. The run hash of every run each study plans at every scale (`Study(scale).configs()`, what
   `learnscope study NAME --scale S --dry-run` lists, in its order), and of every shipped config
   (configs/*.toml). Pure functions of the configs, compared exactly on any machine. Runs an adaptive study
   adds after seeing results (`Study.refine`: sphere_regimes' boundary bisection) are not pinned: they need
   the results of the planned runs.
2. The records (`metrics.jsonl`) of a sample of each study's tiny-scale runs, shortened (fewer steps, a
   smaller mnist1d draw, fewer ODE points) but with the study's model, data kind, optimiser and probes, run
   through the runner of their kind (`RUN_KINDS`) into a temporary store; one seed ensemble through the
   sweep's `ensemble` executor (several seeds trained stacked) and one mixed sweep through `run_all` with the
   `serial` executor. Torch runs with one thread (the records depend on the thread count), on the CPU.
   Their sha256 is keyed by `torch.backends.cpu.get_cpu_capability()` of the recording machine: float32
   sums are ordered differently under AVX2 and AVX-512, so byte identity holds (and is checked) on a machine
   of the recording kind; elsewhere the stored records are compared value by value within the float bounds
   below (keys, integers and strings exactly).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden.json"
FORMAT = 1

# Off the recording machine type, the bound of a float value: |a - b| <= RTOL * max(1, |a|, |b|) (values
# below 1 in size are held to RTOL absolutely). Evidence: the samples recorded on one AVX2 machine with other
# code paths forced (ATEN_CPU_CAPABILITY=default: torch's unvectorised kernels; MKL_CBWR=COMPATIBLE;
# OPENBLAS_CORETYPE=Prescott/Sandybridge; NUMBA_CPU_NAME=generic) deviated from the plain run by at most
# 8e-7 (float32: the BatchNorm runs included, 18-60 steps) and 9e-16 (float64), and one test/acc moved by
# one prediction in 539 (an argmax flip). The bounds leave a margin of over 100x.
RTOL = {
    "float32": 1e-4,  # a few dozen steps of float32 training, no BatchNorm
    "float32-batchnorm": 1e-3,  # float32 BatchNorm amplifies a one-rounding difference from step to step
    "float64": 1e-10,  # numpy/numba float64 (committee machines, closed-form theory): BLAS order only
}
# Off the recording machine type, the share of encoded predictions (`<set>/pred`) that may differ: an argmax
# of nearly tied logits can flip with the last bits of a float32 logit. An accuracy (`/acc`, `/ncc`) may
# differ by that share on top of RTOL (one flip in 539 digits test samples is 0.0019).
PRED_SHARE = {"float32": 0.005, "float32-batchnorm": 0.01, "float64": 0.0}


@dataclass(frozen=True)
class Sample:
    """A study's tiny-scale run (by the run hash it has at that scale), shortened by `overrides`."""

    id: str
    study: str
    base: str  # run hash of the unshortened run in Study("tiny").configs()
    overrides: tuple[str, ...]
    floats: str  # a key of RTOL


@dataclass(frozen=True)
class Group:
    """Runs through one executor of `sweep.run_all` (the ensemble or the serial one), every member pinned."""

    id: str
    executor: str
    members: tuple[Sample, ...]
    source: str = ""  # a shipped config the members derive from (instead of a study's runs)
    seeds: tuple[int, ...] = ()  # with `source`: one member per seed


TRAIN = ("device=cpu",)
SAMPLES: tuple[Sample, ...] = (
    # double_descent: the closed-form theory (numpy, exact form) and the linear teacher-student by GD at
    # lr = 1/sharpness with the teacher probe (R, Q, generalisation error).
    Sample(
        "double_descent/exact kappa=1",
        "double_descent",
        "aded19b3e9466e9d",
        ("points=60", "draws=4"),
        "float64",
    ),
    Sample(
        "double_descent/gd kappa=1 draw=0",
        "double_descent",
        "9971a3adcd898bb0",
        (*TRAIN, "train.steps=60", "probes.points=20"),
        "float32",
    ),
    # gaussian_equivalence: online SGD of the committee machine on the rand L=4 generator and its ODE from
    # the replicas' initial weights (numba kernels, moments estimated), to t = 2.
    Sample(
        "gaussian_equivalence/simulation rand L=4",
        "gaussian_equivalence",
        "c36d54bf498e69ed",
        ("t_max=2.0", "points=5", "replicas=2", "moment_samples=20000", "n_test=1000"),
        "float64",
    ),
    Sample(
        "gaussian_equivalence/ode rand L=4",
        "gaussian_equivalence",
        "7fc382e95f79f0d9",
        ("t_max=2.0", "points=5", "replicas=2", "moment_samples=20000", "n_test=1000"),
        "float64",
    ),
    # increasing_complexity: the MLP on real mnist1d and on its Gaussian-mixture clone, evaluation and
    # prediction probes; 1,200 mnist1d samples instead of 12,000 (generating them dominates otherwise).
    Sample(
        "increasing_complexity/real seed=0",
        "increasing_complexity",
        "808d4b8a0e4cc1b1",
        (*TRAIN, "train.steps=60", "probes.points=20", "data.num_samples=1200"),
        "float32",
    ),
    Sample(
        "increasing_complexity/gaussian clone seed=0",
        "increasing_complexity",
        "945533e5fdd8f4c7",
        (*TRAIN, "train.steps=60", "probes.points=20", "data.source.num_samples=1200"),
        "float32",
    ),
    # neural_collapse: the depth-8 BatchNorm MLP on digits with the collapse probe (CDNV, NCC per layer).
    Sample(
        "neural_collapse/depth=8",
        "neural_collapse",
        "34f5b7a3706c24d5",
        (*TRAIN, "train.epochs=2", "probes.points=10"),
        "float32-batchnorm",
    ),
    # sphere_regimes: the scale-invariant MLP on the sphere at a fixed effective learning rate, and its
    # affine twin by SGD with weight decay, with the sphere probe (norms, effective steps).
    Sample(
        "sphere_regimes/elr=0.001 seed=1",
        "sphere_regimes",
        "6b90b473af6a32e8",
        (*TRAIN, "train.epochs=3"),
        "float32-batchnorm",
    ),
    Sample(
        "sphere_regimes/lr+wd seed=1",
        "sphere_regimes",
        "30ab4acd1b478f2b",
        (*TRAIN, "train.epochs=3"),
        "float32-batchnorm",
    ),
)
GROUPS: tuple[Group, ...] = (
    # Three seeds of configs/digits_mlp.toml trained stacked (vmap) by the ensemble executor.
    Group(
        "ensemble/digits_mlp seeds 0-2",
        "ensemble",
        (),
        source="configs/digits_mlp.toml",
        seeds=(0, 1, 2),
    ),
    # A study-like mixed sweep: a LeNet run of double_descent (mnist1d, label noise, Adam) and a theory curve.
    Group(
        "sweep serial/double_descent",
        "serial",
        (
            Sample(
                "network x=1 seed=0",
                "double_descent",
                "90fbe2e6c949bd1b",
                (*TRAIN, "train.epochs=2", "data.num_samples=1000"),
                "float32",
            ),
            Sample("fig1 slow", "double_descent", "d584289a2042bbd7", ("points=60",), "float64"),
        ),
    ),
)
ENSEMBLE_OVERRIDES = (*TRAIN, "train.epochs=2")
GROUP_IDS = {group.id for group in GROUPS}
RUN_IDS = [*(sample.id for sample in SAMPLES), *(group.id for group in GROUPS)]  # what `only` may name


# --- computing ----------------------------------------------------------------------------------------------


def capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def study_hashes() -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """{study: {scale: [run hash of each planned run, in order]}}, and {"study/scale": why it was skipped}."""
    from learnscope.studies import STUDIES

    hashes: dict[str, dict[str, list[str]]] = {}
    skipped: dict[str, str] = {}
    for name in sorted(STUDIES):
        cls = STUDIES[name]
        hashes[name] = {}
        for scale in cls.scales:
            try:
                hashes[name][scale] = [cfg.run_hash() for cfg in cls(scale).configs()]
            except FileNotFoundError as exc:  # a scale that needs a file absent here
                skipped[f"{name}/{scale}"] = f"{type(exc).__name__}: {exc}"
    return hashes, skipped


def repo() -> Path:
    """The checkout whose package is imported (src/learnscope -> its root): its configs/ are pinned."""
    import learnscope

    return Path(learnscope.__file__).resolve().parents[2]


def config_hashes() -> dict[str, str]:
    from learnscope.config import load_run_config

    root = repo()
    return {
        str(path.relative_to(root)): load_run_config(path).run_hash()
        for path in sorted((root / "configs").glob("*.toml"))
    }


_TINY: dict[str, dict[str, Any]] = {}


def tiny_config(study: str, base: str):
    """The run of `study`'s tiny scale whose run hash is `base` (KeyError naming it if it is not planned)."""
    if study not in _TINY:
        from learnscope.studies import STUDIES

        _TINY[study] = {cfg.run_hash(): cfg for cfg in STUDIES[study]("tiny").configs()}
    if base not in _TINY[study]:
        raise KeyError(f"{study} tiny no longer plans the run {base} this sample is taken from")
    return _TINY[study][base]


@contextlib.contextmanager
def one_thread():
    """Torch and the BLAS libraries (numpy's OpenBLAS) on one thread: how a sum is split among threads
    changes float results, so the records are recorded and checked with one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency
    except ImportError:  # pragma: no cover - then numpy's BLAS keeps its threads
        threadpool_limits = None
    try:
        with threadpool_limits(limits=1) if threadpool_limits else contextlib.nullcontext():
            yield
    finally:
        torch.set_num_threads(threads)


def _metrics(path) -> str:
    return (Path(path) / "metrics.jsonl").read_bytes().decode()


def selected(key: str, only: list[str] | None) -> bool:
    """Whether the run `key` (a sample's id, or "<group id>/<member>") is among `only` (sample or group ids;
    None: all)."""
    return (
        only is None or key in only or any(key.startswith(f"{name}/") for name in only if name in GROUP_IDS)
    )


def run_samples(
    only: list[str] | None = None, root: Path | None = None, pinned: dict[str, dict] | None = None
) -> dict[str, dict[str, Any]]:
    """{id: {"run_hash", "status", "metrics" (the text of metrics.jsonl), "floats", "config"}} of the samples
    and group members (a member's id: "<group id>/<member>") among `only` (None: all), each computed in a
    fresh store under `root` (default: a temporary folder). A sample whose study no longer plans its run
    runs from the config `pinned` (golden.json's samples) holds for it, with a "note" saying so."""
    from learnscope import RUN_KINDS
    from learnscope.config import load_run_config
    from learnscope.sweep import run_all

    results: dict[str, dict[str, Any]] = {}
    pinned = pinned or {}

    def wanted(key: str) -> bool:
        return only is None or key in only

    def config(key: str, sample: Sample):
        try:
            return tiny_config(sample.study, sample.base).override(*sample.overrides), ""
        except KeyError as exc:
            if key not in pinned:
                raise
            return from_dict(pinned[key]["config"]), f"{exc.args[0]}; ran the config pinned in golden.json"

    def entry(cfg, note: str, floats: str, status: str, path, error: str = "") -> dict[str, Any]:
        return {
            "run_hash": cfg.run_hash(),
            "status": status,
            "metrics": _metrics(path) if path else f"(no run directory: {error})",
            "floats": floats,
            "config": cfg.to_dict(),
            "note": note,
        }

    with one_thread(), _folder(root) as tmp:
        for sample in SAMPLES:
            if not wanted(sample.id):
                continue
            cfg, note = config(sample.id, sample)
            store = Path(tmp) / f"s{len(results)}"
            result = RUN_KINDS.builder(cfg.kind)(cfg, store, quiet=True)
            results[sample.id] = entry(cfg, note, sample.floats, result.status, result.path)
        for group in GROUPS:
            if not wanted(group.id):
                continue
            if group.source:
                base = load_run_config(repo() / group.source, list(ENSEMBLE_OVERRIDES))
                members = [(f"seed={s}", base.override(f"seed={s}"), "", "float32") for s in group.seeds]
            else:
                members = [(m.id, *config(f"{group.id}/{m.id}", m), m.floats) for m in group.members]
            store = Path(tmp) / f"g{len(results)}"
            outcomes = run_all([c for _, c, _, _ in members], store, executor=group.executor, quiet=True)
            for (label, cfg, note, floats), outcome in zip(members, outcomes, strict=True):
                results[f"{group.id}/{label}"] = entry(
                    cfg, note, floats, outcome.status, outcome.path, outcome.error
                )
    return results


def from_dict(body: dict[str, Any]):
    """A config of any run kind from its dict (`to_dict`); no `kind`: a training config."""
    from learnscope import RUN_KINDS

    kind = body.get("kind", "train")
    return RUN_KINDS.params(kind).from_dict({k: v for k, v in body.items() if kind != "train" or k != "kind"})


@contextlib.contextmanager
def _folder(root: Path | None):
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        yield str(root)
    else:
        with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
            yield tmp


def sample_ids() -> list[str]:
    ids = [s.id for s in SAMPLES]
    for group in GROUPS:
        labels = [f"seed={s}" for s in group.seeds] if group.source else [m.id for m in group.members]
        ids += [f"{group.id}/{label}" for label in labels]
    return ids


def record() -> dict[str, Any]:
    import numpy as np
    import torch

    import learnscope

    hashes, skipped = study_hashes()
    cap = capability()
    samples = {}
    for key, result in run_samples().items():
        samples[key] = {
            "run_hash": result["run_hash"],
            "status": result["status"],
            "floats": result["floats"],
            "sha256": {cap: hashlib.sha256(result["metrics"].encode()).hexdigest()},
            "config": result["config"],
            "metrics": result["metrics"],
        }
    return {
        "format": FORMAT,
        "recorded": {
            "commit": _commit(Path(learnscope.__file__).resolve().parent),
            "cpu_capability": cap,
            "torch": str(torch.__version__),
            "numpy": str(np.__version__),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "torch_threads": 1,
        },
        "rtol": RTOL,
        "pred_share": PRED_SHARE,
        "study_hashes": hashes,
        "skipped_scales": skipped,
        "config_hashes": config_hashes(),
        "samples": samples,
    }


def _commit(folder: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes in src)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- comparing ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare_hashes(golden: dict[str, Any], report: Report) -> None:
    hashes, skipped = study_hashes()
    for study, scales in golden["study_hashes"].items():
        if study not in hashes:
            report.differences.append(f"study {study}: no longer registered")
            continue
        for scale, pinned in scales.items():
            where = f"study {study} scale {scale}"
            if scale not in hashes[study]:
                why = skipped.get(f"{study}/{scale}", "the study has no such scale now")
                report.differences.append(f"{where}: not planned ({why})")
                continue
            _compare_hash_list(where, pinned, hashes[study][scale], report)
        for scale in hashes[study]:
            if scale not in scales:
                report.notes.append(f"study {study} scale {scale}: not in golden.json (new), not checked")
    for study in hashes:
        if study not in golden["study_hashes"]:
            report.notes.append(f"study {study}: not in golden.json (new), not checked")
    for key, why in golden.get("skipped_scales", {}).items():
        report.notes.append(f"{key}: skipped when recorded ({why})")
    now = config_hashes()
    for path, pinned in golden["config_hashes"].items():
        if path not in now:
            report.differences.append(f"config {path}: missing")
        elif now[path] != pinned:
            report.differences.append(f"config {path}: run hash {now[path]}, was {pinned}")


def _compare_hash_list(where: str, pinned: list[str], now: list[str], report: Report) -> None:
    if now == pinned:
        return
    gone = [h for h in pinned if h not in now]
    new = [h for h in now if h not in pinned]
    if not gone and not new and len(now) == len(pinned):
        first = next(i for i, (a, b) in enumerate(zip(pinned, now, strict=True)) if a != b)
        report.differences.append(
            f"{where}: the same {len(now)} run hashes in another order (from run #{first})"
        )
        return
    index = {h: i for i, h in enumerate(pinned)}
    shown_gone = ", ".join(f"#{index[h]} {h}" for h in gone[:5]) + (" ..." if len(gone) > 5 else "")
    shown_new = ", ".join(new[:5]) + (" ..." if len(new) > 5 else "")
    report.differences.append(
        f"{where}: {len(now)} runs planned (was {len(pinned)}); {len(gone)} pinned run hashes gone"
        + (f" ({shown_gone})" if gone else "")
        + f", {len(new)} new"
        + (f" ({shown_new})" if new else "")
    )


def compare_samples(
    golden: dict[str, Any], report: Report, only: list[str] | None = None, root: Path | None = None
) -> None:
    """The pinned runs among `only` (sample or group ids; None: all) against this checkout's."""
    cap = capability()
    pinned_all = golden["samples"]
    wanted = [k for k in pinned_all if selected(k, only)]
    now_all = run_samples(only, root, pinned_all)
    for key in wanted:
        pinned = pinned_all[key]
        now = now_all.get(key)
        if now is None:
            report.differences.append(f"run {key}: no longer defined by record_golden.py")
            continue
        if now["note"]:
            report.differences.append(f"run {key}: {now['note']}")
        if now["run_hash"] != pinned["run_hash"]:
            report.differences.append(f"run {key}: run hash {now['run_hash']}, was {pinned['run_hash']}")
        if now["status"] != pinned["status"]:
            report.differences.append(f"run {key}: status {now['status']}, was {pinned['status']}")
        digest = hashlib.sha256(now["metrics"].encode()).hexdigest()
        if cap in pinned["sha256"]:
            if digest != pinned["sha256"][cap]:
                detail = first_difference(pinned["metrics"], now["metrics"])
                report.differences.append(
                    f"run {key} ({pinned['run_hash']}): metrics.jsonl sha256 {digest[:16]}, was "
                    f"{pinned['sha256'][cap][:16]} on {cap} (byte identity is required on the recording "
                    f"machine type): {detail}"
                )
        else:
            floats = pinned["floats"]
            problems = within_bounds(
                pinned["metrics"], now["metrics"], golden["rtol"][floats], golden["pred_share"][floats]
            )
            if problems:
                report.differences.append(
                    f"run {key} ({pinned['run_hash']}): records differ beyond the {floats} bound "
                    f"(rtol {golden['rtol'][floats]:g}) on {cap}; byte identity was proven only on "
                    f"{', '.join(pinned['sha256'])}: {problems}"
                )
            else:
                report.notes.append(
                    f"run {key}: on {cap} (recorded on {', '.join(pinned['sha256'])}) the records match "
                    f"within rtol {golden['rtol'][floats]:g}, max relative deviation "
                    f"{max_deviation(pinned['metrics'], now['metrics']):.2e}; byte identity is checked only "
                    "on the recording machine type"
                )


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def first_difference(old: str, new: str) -> str:
    """The first record and key that differ, for a readable failure message."""
    try:
        a, b = _records(old), _records(new)
    except json.JSONDecodeError:
        return "metrics.jsonl is not JSON lines now"
    if len(a) != len(b):
        return f"{len(b)} records, was {len(a)}"
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):
        if list(ra) != list(rb):
            return f"record {i}: keys {list(rb)}, was {list(ra)}"
        for k in ra:
            if ra[k] != rb[k] or type(ra[k]) is not type(rb[k]):
                return f"record {i} (step {_step(ra)}) {k}: {_shown(rb[k])}, was {_shown(ra[k])}"
    return "the same values, written differently (number formatting, key order or whitespace)"


def _step(record: dict[str, Any]) -> Any:
    return record.get("step", record.get("t", "?"))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def _decode_predictions(text: str):
    import numpy as np

    prefix, _, body = text.partition(":")
    dtype = {"u1": np.uint8, "u2": np.dtype("<u2")}.get(prefix)
    if dtype is None or not body:
        return None
    try:
        return np.frombuffer(base64.b64decode(body, validate=True), dtype=dtype)
    except ValueError:
        return None


def within_bounds(old: str, new: str, rtol: float, pred_share: float) -> str:
    """'' when `new` holds the records of `old` within the bounds; else the first few violations."""
    try:
        a, b = _records(old), _records(new)
    except json.JSONDecodeError:
        return "metrics.jsonl is not JSON lines now"
    if len(a) != len(b):
        return f"{len(b)} records, was {len(a)}"
    problems = []
    for i, (ra, rb) in enumerate(zip(a, b, strict=True)):
        if list(ra) != list(rb):
            return f"record {i}: keys {list(rb)}, was {list(ra)}"
        for k, va in ra.items():
            vb = rb[k]
            ok = True
            if isinstance(va, bool) or isinstance(vb, bool) or va is None or vb is None:
                ok = va == vb and type(va) is type(vb)
            elif isinstance(va, int) and isinstance(vb, int):
                ok = va == vb
            elif isinstance(va, int | float) and isinstance(vb, int | float):
                if isinstance(va, int) or isinstance(vb, int):  # an integer field must stay one
                    ok = False
                else:
                    slack = pred_share if k.endswith(("/acc", "/ncc")) or "/ncc/" in k else 0.0
                    ok = _close(va, vb, rtol) or abs(va - vb) <= slack + rtol
            elif isinstance(va, str) and isinstance(vb, str):
                if va != vb:
                    pa, pb = _decode_predictions(va), _decode_predictions(vb)
                    ok = (
                        pa is not None
                        and pb is not None
                        and pa.shape == pb.shape
                        and (pa != pb).mean() <= pred_share
                    )
            else:
                ok = va == vb
            if not ok:
                problems.append(f"record {i} (step {_step(ra)}) {k}: {_shown(vb)}, was {_shown(va)}")
    shown = "; ".join(problems[:4])
    return shown + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")


def max_deviation(old: str, new: str) -> float:
    """The largest |a - b| / max(1, |a|, |b|) over the float values of two runs' records (same shape)."""
    worst = 0.0
    for ra, rb in zip(_records(old), _records(new), strict=False):
        for k, va in ra.items():
            vb = rb.get(k)
            if isinstance(va, float) and isinstance(vb, float) and math.isfinite(va) and math.isfinite(vb):
                worst = max(worst, abs(va - vb) / max(1.0, abs(va), abs(vb)))
    return worst


def compare(
    golden: dict[str, Any], only: list[str] | None = None, hashes: bool = True, root: Path | None = None
) -> Report:
    """Every difference between this checkout and `golden` (and notes on what was not checked exactly)."""
    if golden.get("format") != FORMAT:
        return Report([f"golden.json has format {golden.get('format')}, this script reads {FORMAT}"])
    report = Report()
    if hashes:
        compare_hashes(golden, report)
    compare_samples(golden, report, only, root)
    return report


# --- command line -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with golden.json; write nothing")
    parser.add_argument("--force", action="store_true", help="overwrite an existing golden.json")
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="the file to write or check")
    parser.add_argument("--dump", type=Path, help="write this checkout's samples (records) here as JSON")
    args = parser.parse_args(argv)
    import learnscope

    print(f"learnscope from {Path(learnscope.__file__).resolve().parent}", file=sys.stderr)
    if args.dump:
        args.dump.write_text(json.dumps(run_samples(), indent=1))
        return 0
    if args.check:
        golden = json.loads(args.golden.read_text())
        report = compare(golden)
        for line in report.notes:
            print(f"note: {line}")
        for line in report.differences:
            print(f"DIFFERENT: {line}")
        total = sum(len(v) for scales in golden["study_hashes"].values() for v in scales.values())
        print(
            f"{len(report.differences)} differences ({total} study run hashes, "
            f"{len(golden['config_hashes'])} configs, {len(golden['samples'])} runs' records checked)"
        )
        return 1 if report.differences else 0
    if args.golden.exists() and not args.force:
        print(f"{args.golden} exists (recorded before the refactor); --force overwrites it", file=sys.stderr)
        return 2
    golden = record()
    args.golden.write_text(json.dumps(golden, indent=1, sort_keys=False) + "\n")
    cap = golden["recorded"]["cpu_capability"]
    print(f"wrote {args.golden}: {len(golden['samples'])} runs' records on {cap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
