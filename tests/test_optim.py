"""Schedules against torch's own schedulers, losses against direct formulas, decay groups by construction."""

import pytest
import torch
from torch import nn

from learnscope import load_runs
from learnscope.config import TrainConfig
from learnscope.optim import AdamConfig, Schedule, SGDConfig, build_optimizer, loss_function
from tests.conftest import cli


def torch_lrs(make_scheduler, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_in_epochs_matches_torch():
    per_epoch, total = 7, 70
    ours = Schedule(
        TrainConfig(steps=total, schedule="multistep", milestones=[3, 6.5], gamma=0.2), per_epoch, total
    )
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [21, 46], gamma=0.2), total)
    assert [ours(s) for s in range(total)] == pytest.approx(ref)


def test_cosine_per_step_matches_torch():
    total = 50
    ours = Schedule(TrainConfig(steps=total, schedule="cosine"), 10, total)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    assert [ours(s) for s in range(total)] == pytest.approx(ref, abs=1e-12)


def test_cosine_stepped_per_epoch_matches_the_clones_original():
    # The clones code steps CosineAnnealingLR(T_max=epochs) once per epoch.
    per_epoch, epochs = 5, 8
    total = per_epoch * epochs
    cfg = TrainConfig(steps=total, schedule="cosine", schedule_per_epoch=True)
    ours = Schedule(cfg, per_epoch, total)
    per_epoch_ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs), epochs)
    assert [ours(s) for s in range(total)] == pytest.approx(
        [v for v in per_epoch_ref for _ in range(per_epoch)]
    )


def test_linear_warmup_then_constant_matches_torch():
    total, warm = 30, 10
    ours = Schedule(TrainConfig(steps=total, warmup=warm, unit="steps"), 3, total)
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1
        ),
        total,
    )
    assert [ours(s) for s in range(total)] == pytest.approx(ref)
    assert Schedule(TrainConfig(steps=total), 3, total).constant


def test_mse_and_ce_against_direct_formulas():
    torch.manual_seed(0)
    out, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = torch.eye(4)[y]
    assert loss_function("mse")(out, y) == pytest.approx(nn.MSELoss()(out, onehot).item())
    assert loss_function("mse", "sum")(out, y) == pytest.approx(((out - onehot) ** 2).mean(1).sum().item())
    logp = out.log_softmax(1)
    assert loss_function("ce")(out, y) == pytest.approx(-logp[range(6), y].mean().item())
    assert loss_function("ce", "sum")(out, y) == pytest.approx(-logp[range(6), y].sum().item())


def test_weight_decay_spares_biases_and_norms_when_asked():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = build_optimizer(SGDConfig(weight_decay=0.1, decay_norm_and_bias=False), model)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    opt = build_optimizer(SGDConfig(weight_decay=0.1), model)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1


def test_sgd_step_matches_the_update_rule():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    model = nn.Module()
    model.w = w
    opt = build_optimizer(SGDConfig(lr=0.1, momentum=0.5, weight_decay=0.01, nesterov=True), model)
    buf = torch.zeros(2)
    expected = w.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        g = 2 * expected + 0.01 * expected
        buf = 0.5 * buf + g
        expected = expected - 0.1 * (g + 0.5 * buf)
    assert torch.allclose(w.detach(), expected)


def test_adamw_kind_builds_adamw():
    model = nn.Linear(2, 2)
    assert isinstance(build_optimizer(AdamConfig(kind="adamw", weight_decay=0.01), model), torch.optim.AdamW)
    assert isinstance(build_optimizer(AdamConfig(), model), torch.optim.Adam)


PLUGIN = """
from typing import Literal

import torch

from learnscope import OPTIMISERS
from learnscope.optim import param_groups
from learnscope.sections import OptimConfig


class SignSGDConfig(OptimConfig):
    kind: Literal["sign_sgd"] = "sign_sgd"
    lr: float = 0.01


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


@OPTIMISERS.register("sign_sgd", SignSGDConfig)
def sign_sgd(cfg, model):
    return SignSGD(param_groups(model, 0.0), cfg.lr)
"""


def test_a_toy_optimiser_registered_by_a_plugin_trains_through_learnscope_run(tmp_path, plugin, capsys):
    plugin("toy_optimiser", PLUGIN)
    config = tmp_path / "sign.toml"
    config.write_text(
        'device = "cpu"\n[optim]\nkind = "sign_sgd"\nlr = 0.002\n[train]\nsteps = 200\n'
        '[probes]\nschedule = ["every"]\nevery = 100\n'
    )
    store = tmp_path / "runs"
    code, _, err = cli("run", config, "--plugin", "toy_optimiser", "--quiet", "--store", store, capsys=capsys)
    assert code == 0, err
    records = load_runs(store)
    assert records["optim.kind"].iloc[0] == "sign_sgd"
    assert records["test/acc"].iloc[-1] > 0.85 > records["test/acc"].iloc[0]
    # one step by hand: w <- w - lr sign(grad), from the same initial weights and first batch
    from toy_optimiser import SignSGD

    from learnscope import Config

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    cfg = Config.load(config).optim
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, SignSGD)
    before = model.weight.detach().clone()
    nn.functional.cross_entropy(model(x), y).backward()
    expected = before - 0.002 * model.weight.grad.sign()
    optimizer.step()
    assert torch.equal(model.weight.detach(), expected)
