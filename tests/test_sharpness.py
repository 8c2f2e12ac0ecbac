"""The summed squared loss and `optim.lr = "1/sharpness"`, against closed forms and the exact Hessian."""

import pytest
import torch

from learnscope import Config, run
from learnscope.data import build_data
from learnscope.optim import loss_function
from learnscope.runs.train import build_model


def test_the_summed_loss_has_gradient_x_transpose_residual():
    torch.manual_seed(0)
    x, y = torch.randn(60, 8), torch.randn(60, 1)
    model = torch.nn.Linear(8, 1, bias=False)
    loss_function("sse")(model(x), y).backward()
    w = model.weight.detach()[0]
    assert torch.allclose(model.weight.grad[0], x.T @ (x @ w - y[:, 0]), atol=1e-4)


def test_inverse_sharpness_is_one_over_the_top_eigenvalue_of_the_mean_loss_hessian():
    """An MLP with mse on digits: lr = 1/λ_max of the Hessian of the mean training loss at initialisation,
    against the full autograd Hessian (float64)."""
    cfg = Config.from_dict(
        {
            "model": {"kind": "mlp", "width": 6},
            "data": {"kind": "digits", "flatten": True, "subset_per_class": 4},
            "optim": {"kind": "sgd", "lr": "1/sharpness", "momentum": 0.0, "weight_decay": 0.0},
            "train": {"steps": 1, "batch_size": "full", "loss": "mse"},
            "device": "cpu",
        }
    )
    lr = run(cfg, None, quiet=True).records[0]["lr"]
    data = build_data(cfg.data)
    model = build_model(cfg, data).double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    x, y = data.train.x.double(), data.train.y

    def mean_loss(theta):
        chunks, start = [], 0
        for shape in shapes:
            chunks.append(theta[start : start + shape.numel()].reshape(shape))
            start += shape.numel()
        out = torch.func.functional_call(model, dict(zip(names, chunks, strict=True)), (x,))
        return loss_function("mse")(out, y)

    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    top = torch.linalg.eigvalsh(torch.autograd.functional.hessian(mean_loss, theta)).max().item()
    assert lr == pytest.approx(1 / top, rel=1e-4)  # float32 Lanczos in the run, float64 here
