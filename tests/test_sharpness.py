"""The top Hessian eigenvalue (optim.top_hessian_eigenvalue) and the summed loss, against exact Hessians."""

import pytest
import torch

from learnscope.optim import loss_function, top_hessian_eigenvalue


def test_linear_model_on_the_summed_loss_has_hessian_x_transpose_x():
    torch.manual_seed(0)
    x, y = torch.randn(60, 8), torch.randn(60, 1)
    model = torch.nn.Linear(8, 1, bias=False)
    top = top_hessian_eigenvalue(model, x, y, loss_function("sse"), batch_size=25)
    exact = torch.linalg.eigvalsh(x.double().T @ x.double()).max().item()
    assert top == pytest.approx(exact, rel=1e-5)
    # the summed loss's gradient is Xᵀ(Xw − y)
    loss_function("sse")(model(x), y).backward()
    w = model.weight.detach()[0]
    assert torch.allclose(model.weight.grad[0], x.T @ (x @ w - y[:, 0]), atol=1e-4)


def test_small_mlp_against_the_full_autograd_hessian():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    loss = loss_function("ce", "sum")
    params = list(model.parameters())
    shapes = [p.shape for p in params]

    def flat_loss(theta):
        chunks, start = [], 0
        for shape in shapes:
            size = torch.Size(shape).numel()
            chunks.append(theta[start : start + size].reshape(shape))
            start += size
        names = [n for n, _ in model.named_parameters()]
        out = torch.func.functional_call(model, dict(zip(names, chunks, strict=True)), (x,))
        return loss(out, y)

    theta = torch.cat([p.detach().flatten() for p in params])
    hessian = torch.autograd.functional.hessian(flat_loss, theta)
    eig = torch.linalg.eigvalsh(hessian)
    largest = eig[eig.abs().argmax()].item()  # power iteration finds the eigenvalue of largest modulus
    assert top_hessian_eigenvalue(model, x, y, loss, rtol=1e-12, max_iter=20000) == pytest.approx(
        largest, rel=1e-6
    )
