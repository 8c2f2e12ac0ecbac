"""The CUDA device paths (marker `gpu`: skipped, with the reason, where torch sees no GPU; tests/conftest.py).

What a run on a GPU keeps of the CPU's: the same numbers to float tolerance (the kernels sum in other orders),
the data on the device, and no step that waits for it: CUDA's sync debug mode, set to "error" around
`train._update` (each step's whole work: batch, forward, backward, update, loss buffer), makes any host sync
in a step raise. The bounds follow tests/test_precision.py's CPU measurements with wider margins, since they
have not been measured on a GPU yet (docs/precision.md); each says why.
"""

import pytest
import torch

from learnscope import run
from learnscope.data import build_data
from learnscope.runs import train as train_module
from learnscope.runs.ensemble import train_ensemble
from learnscope.runs.train import RunLoop, build_model
from tests.conftest import tiny
from tests.test_precision import ROUNDOFF, conv_config, max_relative

pytestmark = pytest.mark.gpu

SHORT = "train.steps=20"  # probes at steps 0, 10, 20: float-order differences have not grown yet
SPHERE = ("model=mlp_si", "optim=sphere_sgd")
# Two runs whose sums are ordered differently (CPU and GPU, stacked or not, compiled or not) over 20 steps:
# 1e-4 relatively. On the CPU, two convolution orders differed by at most 3.9e-7 over 20 steps (six seeds).
ORDER_RTOL = 1e-4


def strict_steps(monkeypatch) -> list[int]:
    """Every step of the train loop under CUDA's sync debug mode "error", but a step that starts an epoch:
    there data/loader.py draws the epoch's permutation on the CPU and copies it to the device (a copy from
    pageable memory, which waits: one sync per epoch). Returns the steps checked, filled as the run goes."""
    checked: list[int] = []
    inner = train_module._update

    def strict(loops, live, gradients, row):
        if any(loop.loader.perm is None and not loop.loader.full_batch for loop in loops):
            return inner(loops, live, gradients, row)
        torch.cuda.set_sync_debug_mode("error")
        try:
            inner(loops, live, gradients, row)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        checked.append(loops[0].step)

    monkeypatch.setattr(train_module, "_update", strict)
    return checked


def test_a_short_run_on_cuda_matches_the_cpu_run():
    """fp32 on both: torch computes float32 matmuls without TF32 unless told to
    (torch.backends.cuda.matmul), so only the order of the sums differs."""
    cpu = run(tiny().override(SHORT), None, quiet=True)
    gpu = run(tiny().override(SHORT, "device=cuda"), None, quiet=True)
    assert gpu.status == "done" and gpu.info["env"]["device"] == "cuda"
    assert max_relative(gpu.records, cpu.records) < ORDER_RTOL
    assert abs(gpu.records[-1]["test/acc"] - cpu.records[-1]["test/acc"]) <= 0.01


def test_data_batches_and_model_stay_on_the_device():
    cfg = tiny().override("device=cuda")
    data = build_data(cfg.data)
    loop = RunLoop.start(cfg, build_model(cfg, data), data)
    x, y = loop.loader.next()
    assert x.is_cuda and y.is_cuda
    assert all(s.x.is_cuda and s.y.is_cuda for s in [loop.data.train, *loop.data.evals.values()])
    assert all(p.is_cuda for p in loop.model.parameters())


@pytest.mark.parametrize(
    "overrides", [(), ("train.precision=bf16",), SPHERE], ids=["fp32", "bf16", "sphere_sgd"]
)
def test_no_step_waits_for_the_device(monkeypatch, overrides):
    """60 steps of 10 per epoch: the 54 that start no epoch run with any host sync an error. SphereSGD keeps
    its scalars on the device there (optim.py, `_DeviceScalars`)."""
    checked = strict_steps(monkeypatch)
    result = run(tiny().override("device=cuda", *overrides), None, quiet=True)
    assert result.status == "done" and len(checked) == 54


def test_fp16_waits_for_the_device_only_in_the_grad_scalers_step(monkeypatch):
    """torch's GradScaler.step reads its inf/nan check back (`.item()` in `_maybe_opt_step`) to skip a step
    whose gradients overflowed: fp16's one sync per step, allowed here; nothing else in the step syncs."""
    checked = strict_steps(monkeypatch)
    inner = torch.amp.GradScaler._maybe_opt_step

    def allowed(self, *args, **kwargs):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            return inner(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(torch.amp.GradScaler, "_maybe_opt_step", allowed)
    result = run(tiny().override("device=cuda", "train.precision=fp16"), None, quiet=True)
    assert result.status == "done" and len(checked) == 54


def test_an_ensemble_on_cuda_gives_its_members_records_and_waits_for_nothing(monkeypatch):
    """Two members stacked by vmap (20 steps: 18 start no epoch) against each run alone on the GPU."""
    configs = [tiny().override("device=cuda", SHORT, f"seed={seed}") for seed in (0, 1)]
    alone = [run(cfg, None, quiet=True) for cfg in configs]
    checked = strict_steps(monkeypatch)
    stacked = train_ensemble(configs, build_data(configs[0].data), quiet=True)
    assert len(checked) == 18
    for member, single in zip(stacked, alone, strict=True):
        assert member.status == "done" and max_relative(member.records, single.records) < ORDER_RTOL


def test_sphere_sgd_on_cuda_matches_the_cpu_run():
    """SphereSGD's float64 scalars: on the host on the CPU, device scalars on the GPU; the same arithmetic."""
    cfg = tiny().override(*SPHERE, SHORT)
    cpu = run(cfg, None, quiet=True)
    gpu = run(cfg.override("device=cuda"), None, quiet=True)
    assert gpu.status == "done" and max_relative(gpu.records, cpu.records) < ORDER_RTOL


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_cuda_trains_close_to_fp32(precision):
    """As tests/test_precision.py on the CPU (3 unit roundoffs, measured up to 1.3), with 5: cuBLAS may
    reduce bf16/fp16 products in reduced precision (torch.backends.cuda.matmul's default), and this bound
    awaits a measurement on a GPU. Not equal: the forward did run in the lower precision."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(
            f"{torch.cuda.get_device_name()} has no bfloat16 arithmetic (learnscope refuses bf16 there)"
        )
    cfg = tiny().override("device=cuda")
    reference = run(cfg, None, quiet=True)
    result = run(cfg.override(f"train.precision={precision}"), None, quiet=True)
    assert result.status == "done"
    assert 1e-6 < max_relative(result.records, reference.records) < 5 * ROUNDOFF[precision]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_compiled_training_on_cuda_gives_the_records_of_eager():
    """One batch shape (drop_last), one compile; Triton kernels sum in their own order."""
    pytest.importorskip("triton", reason="torch.compile on a GPU needs triton")
    cfg = tiny().override("device=cuda", SHORT, "train.drop_last=true")
    eager = run(cfg, None, quiet=True)
    compiled = run(cfg.override("train.compile=true"), None, quiet=True)
    assert compiled.status == "done" and max_relative(compiled.records, eager.records) < ORDER_RTOL


def test_channels_last_on_cuda_equals_the_default_to_rounding():
    """cuDNN picks other convolution kernels for channels_last, in TF32 for float32 in both layouts by
    default (torch.backends.cudnn.allow_tf32) and BatchNorm amplifies the difference: a 1e-3 bound."""
    cfg = conv_config().override("device=cuda", SHORT)
    reference = run(cfg, None, quiet=True)
    result = run(cfg.override("train.channels_last=true"), None, quiet=True)
    assert result.status == "done" and max_relative(result.records, reference.records) < 1e-3
