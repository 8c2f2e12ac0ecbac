"""The training step's options (docs/precision.md): `train.precision`, `train.channels_last`, `train.compile`.

Each is checked against the fp32 eager run, the trusted reference: the numbers each option may change and by
how much (bounds stated at each test, from measurements on this CPU), exact resume where fp32's is exact, the
run hashes of configs that do not use them, and the one-line refusals.
"""

import pytest
import torch

from learnscope import Config, run
from learnscope.config import load_run_config
from learnscope.data import build_data
from learnscope.runs import train as train_module
from learnscope.runs.ensemble import NotBatchable, run_ensemble
from learnscope.runs.train import RunLoop, build_model
from learnscope.store import RunDir
from learnscope.sweep import run_all
from tests.conftest import REPO, cli, tiny

pytestmark = pytest.mark.usefixtures("one_thread")

# Importing torch._dynamo (the first torch.compile) warns of torch's own deprecated torch.jit.script_method.
dynamo_import = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")

LOSSES = ("batch_loss", "train/loss", "test/loss")

# Unit roundoff of each autocast format: 2^-(mantissa bits + 1).
ROUNDOFF = {"bf16": 2.0**-8, "fp16": 2.0**-11}


def max_relative(records, reference, keys=LOSSES) -> float:
    """The largest relative difference of the losses of two runs' records, step by step."""
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    return max(
        abs(r[k] - ref[k]) / abs(ref[k])
        for r, ref in zip(records, reference, strict=True)
        for k in keys
        if k in ref
    )


def conv_config() -> Config:
    """The tiny run (conftest.tiny) with a small CONV net: BatchNorm, 3 convolutions, 8 channels."""
    return tiny().override("model=conv", "model.depth=1", "model.width=8")


# --- run identity ----------------------------------------------------------------------------------------


def test_configs_without_the_new_keys_keep_their_run_hashes():
    """Literals computed before the keys existed: a run stored then is found again now. An explicit default
    (fp32, false) is the same run; another value is another run."""
    assert Config().run_hash() == "9416c82b1ce196f1"
    assert load_run_config(REPO / "configs" / "digits_mlp.toml").run_hash() == "d68a93d8c930b514"
    spelled = Config().override("train.precision=fp32", "train.channels_last=false", "train.compile=false")
    assert spelled.run_hash() == "9416c82b1ce196f1" and spelled == Config()
    assert "precision" not in spelled.to_dict()["train"]
    bf16 = Config().override("train.precision=bf16")
    assert bf16.run_hash() != Config().run_hash() and Config.from_dict(bf16.to_dict()) == bf16
    names = {Config().override(f"train.{key}=true").run_hash() for key in ("channels_last", "compile")}
    assert len(names) == 2 and Config().run_hash() not in names


# --- precision ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_close_to_fp32(precision):
    """The tiny MLP run (60 steps) in autocast against fp32: its losses (batch, train, test, at 7 probe steps)
    within 3 unit roundoffs of the format, relatively (bf16: 1.2e-2, fp16: 1.5e-3). Measured on this CPU over
    seeds 0-3: bf16 1.1e-3 to 3.0e-3 (0.3-0.8 roundoff), fp16 3.0e-4 to 6.5e-4 (0.6-1.3 roundoff); seed 0:
    bf16 1.1e-3, fp16 4.3e-4. And not equal: the forward did run in the lower precision."""
    reference = run(tiny(), None, quiet=True)
    result = run(tiny().override(f"train.precision={precision}"), None, quiet=True)
    assert result.status == "done"
    difference = max_relative(result.records, reference.records)
    assert 1e-6 < difference < 3 * ROUNDOFF[precision], difference
    assert all(r["step"] == 0 or r["batch_loss"] > 0 for r in result.records)
    final, expected = result.records[-1], reference.records[-1]
    assert abs(final["test/acc"] - expected["test/acc"]) <= 0.01
    assert next(result.model.parameters()).dtype == torch.float32  # the weights stay fp32 (autocast)


def _killed_and_resumed(cfg: Config, tmp_path, *, drop: tuple[str, ...] = ()):
    """The run `cfg` whole, and again killed at step 20 and resumed from the checkpoint a run of 20 steps
    writes (as tests/test_train.py does), with the checkpoint's `drop` keys removed."""
    whole = run(cfg, tmp_path / "whole", quiet=True)
    short = run(cfg.override("train.steps=20", "train.checkpoint_every=20"), tmp_path / "short", quiet=True)
    state = torch.load(short.path / "checkpoint.pt", weights_only=True)
    state = {k: v for k, v in state.items() if k not in ("run", *drop)}
    killed = RunDir(tmp_path / "killed", cfg)
    killed.path.mkdir(parents=True)
    killed.write_config()
    killed.save_checkpoint(state, state.pop("records"))
    return whole, run(cfg, tmp_path / "killed", quiet=True), killed


def test_a_killed_bf16_run_resumes_to_the_records_of_an_uninterrupted_one(tmp_path):
    cfg = tiny().override("train.precision=bf16")
    whole, resumed, killed = _killed_and_resumed(cfg, tmp_path)
    assert resumed.records == whole.records
    assert killed.metrics_path.read_bytes() == (whole.path / "metrics.jsonl").read_bytes()
    state = torch.load(whole.path / "checkpoint.pt", weights_only=True)
    assert "scaler" not in state  # bf16 and fp32 checkpoints keep the format they had


def test_fp16_checkpoints_carry_the_grad_scaler_and_resume_exactly(tmp_path):
    """On the CPU (torch 2.13) fp16 autocast and its GradScaler work, so fp16 is not refused there."""
    cfg = tiny().override("train.precision=fp16")
    whole, resumed, killed = _killed_and_resumed(cfg, tmp_path)
    assert resumed.records == whole.records
    assert killed.metrics_path.read_bytes() == (whole.path / "metrics.jsonl").read_bytes()
    scaler = torch.load(whole.path / "checkpoint.pt", weights_only=True)["scaler"]
    after = torch.load(killed.checkpoint_path, weights_only=True)["scaler"]
    assert after == scaler and scaler["scale"] > 1 and scaler["_growth_tracker"] == 60  # no step skipped


def test_an_fp16_checkpoint_without_the_scaler_still_resumes(tmp_path):
    """A checkpoint written before checkpoints carried the scaler: the run goes on with a fresh scale (so it
    counts its growth interval from the resume)."""
    cfg = tiny().override("train.precision=fp16")
    _, resumed, killed = _killed_and_resumed(cfg, tmp_path, drop=("scaler",))
    assert resumed.status == "done" and [r["step"] for r in resumed.records] == [0, 10, 20, 30, 40, 50, 60]
    assert torch.load(killed.checkpoint_path, weights_only=True)["scaler"]["_growth_tracker"] == 40


# --- channels_last and compile ---------------------------------------------------------------------------


def test_channels_last_on_a_conv_net_equals_the_default_to_float_rounding():
    """The conv net's weights and batches in channels_last take other convolution kernels: the same sums in
    another order. Over 20 steps (probes at 0, 10, 20) the losses agree within 1e-5 relatively; measured
    1.4e-7 (seed 0; at most 3.9e-7 over seeds 0-5). Longer runs drift further, as any two float orders do
    (up to 3e-3 by step 60 on one seed of six): the rounding difference, amplified by training."""
    cfg = conv_config().override("train.steps=20")
    reference = run(cfg, None, quiet=True)
    result = run(cfg.override("train.channels_last=true"), None, quiet=True)
    assert max_relative(result.records, reference.records) < 1e-5
    weight = result.model.blocks[0].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_channels_last_on_inputs_that_are_not_images_exits_2_with_one_line(tmp_path, capsys):
    """The linear teacher's samples are vectors: nothing to lay out, so the key is refused, not ignored."""
    config = REPO / "configs" / "linear_teacher_gd.toml"
    store = tmp_path / "runs"
    code, _, err = cli("run", config, "train.channels_last=true", "--store", store, "--quiet", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train.channels_last=true needs image inputs" in err and "(100,)" in err
    assert not list(store.rglob("config.json"))


@dynamo_import
def test_compiled_training_step_leaves_probes_on_the_module_itself():
    """The compiled forward (built, not yet run: compiling happens at the first step) wraps the model and
    shares its parameters; probes, checkpoints and the optimiser hold the module."""
    cfg = tiny().override("train.compile=true")
    data = build_data(cfg.data)
    model = build_model(cfg, data)
    loop = RunLoop.start(cfg, model, data)
    assert isinstance(loop.forward, torch._dynamo.eval_frame.OptimizedModule)
    assert loop.forward._orig_mod is model and loop.context.model is model
    assert RunLoop.start(tiny(), build_model(cfg, data), data).forward is not None


@dynamo_import
def test_compiled_training_gives_the_records_of_eager_to_float_tolerance():
    """The smallest MLP, 6 full-size steps (drop_last: one batch shape, one compile). Inductor fuses the
    same arithmetic, possibly in another order: the losses agree within 1e-5 relatively (measured here:
    equal; 1e-7 on the 60-step tiny run, whose partial last batch recompiles with dynamic shapes). Its cold
    compile (an empty inductor cache) took 15-23 s on this 2-core machine at load 2.4-4 (4 s cached)."""
    cfg = Config.from_dict(
        {
            "device": "cpu",
            "model": {"kind": "mlp", "width": 16, "depth": 1},
            "train": {"steps": 6, "batch_size": 128, "drop_last": True, "checkpoint_every": 0},
            "probes": {"schedule": ["every"], "every": 3},
        }
    )
    reference = run(cfg, None, quiet=True)
    result = run(cfg.override("train.compile=true"), None, quiet=True)
    assert max_relative(result.records, reference.records) < 1e-5
    assert not isinstance(result.model, torch._dynamo.eval_frame.OptimizedModule)


# --- the loop's step and the ensemble ----------------------------------------------------------------------


def test_every_update_goes_through_the_one_step_function(monkeypatch):
    """tests/test_gpu.py puts CUDA's sync debug mode around `train._update`: it must be each step's whole
    work (batch, forward, backward, optimiser, loss buffer), once per step."""
    steps = []
    inner = train_module._update

    def counted(loops, live, gradients, row):
        steps.append(loops[0].step)
        inner(loops, live, gradients, row)

    monkeypatch.setattr(train_module, "_update", counted)
    result = run(tiny().override("train.precision=fp16"), None, quiet=True)
    assert steps == list(range(60)) and result.records[-1]["batch_loss"] > 0


def test_the_ensemble_refuses_the_step_options_in_one_line_and_a_sweep_runs_them_alone(tmp_path):
    configs = [tiny().override(f"seed={seed}", "train.precision=bf16", "train.steps=10") for seed in (0, 1)]
    with pytest.raises(NotBatchable, match=r"^train\.precision=bf16: an ensemble trains in fp32") as error:
        run_ensemble(configs, None, quiet=True)
    assert "\n" not in str(error.value)
    with pytest.raises(NotBatchable, match=r"^train\.compile=true: "):
        run_ensemble([tiny().override("train.compile=true")], None, quiet=True)
    results = run_all(configs, tmp_path, executor="ensemble", quiet=True)
    assert [r.status for r in results] == ["done", "done"]
    alone = run(configs[1], None, quiet=True)
    assert [r["test/loss"] for r in load_records(results[1].path)] == [r["test/loss"] for r in alone.records]


def load_records(path):
    from learnscope.store import read_records

    return read_records(path / "metrics.jsonl")
