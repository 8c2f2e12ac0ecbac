"""The linear teacher–student data (data/teachers.py) and the teacher probe, against direct computation."""

import numpy as np
import pytest
import torch

from learnscope import Config, run
from learnscope.config import ProbesConfig
from learnscope.data import build_data
from learnscope.data.teachers import LinearTeacherConfig, haar_orthogonal, sample_teachers, singular_values
from learnscope.errors import ConfigError
from learnscope.probes import ProbeContext, build_probes


def test_data_kind_is_draw_seed_of_the_sampler():
    cfg = LinearTeacherConfig(n=40, d=20, p=5, kappa=10.0, sigma=0.3, n_test=50, seed=7)
    data = build_data(cfg)
    draws = sample_teachers(40, cfg.singular_values(), 0.3, [3, 7], n_test=50)
    assert data.regression and data.num_classes == 1 and data.input_shape == (20,)
    np.testing.assert_allclose(data.train.x.numpy(), draws.x[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.train.y[:, 0].numpy(), draws.y[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(data.extras["teacher"].numpy(), draws.w[1])
    # the student sees x = Fᵀz, the teacher y = zᵀw + σε; test labels are noiseless
    z = draws.x_test[1] @ np.linalg.inv(draws.F[1])
    np.testing.assert_allclose(z @ draws.w[1], draws.y_test[1], atol=1e-9)


def test_modulation_has_the_asked_spectrum_and_haar_factors():
    s = singular_values(30, 10, 50.0)
    draws = sample_teachers(10, s, seeds=2)
    for F in draws.F:
        np.testing.assert_allclose(np.linalg.svd(F, compute_uv=False), np.sort(s)[::-1], rtol=1e-10)
    assert np.array_equal(singular_values(4, 0, 1.0, groups=[(1, 2.0), (3, 0.5)]), [2.0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(singular_values(3, 0, 1.0, power=1.0), [1, 1 / 2, 1 / 3])
    # Haar: E[Q_11^2] = 1/d, and the sign fix leaves no bias in the diagonal's mean (E[Q_11] = 0)
    rng = np.random.default_rng(0)
    q11 = np.array([haar_orthogonal(rng, 4)[0, 0] for _ in range(4000)])
    assert abs(q11.mean()) < 0.03 and abs((q11**2).mean() - 0.25) < 0.02


@pytest.mark.parametrize(
    "raw, culprit",
    [
        ({"groups": [[10, 1.0], [5, 0.1]], "d": 20}, "groups"),
        ({"p": 30, "d": 20}, "p"),
        ({"kappa": 0.5}, "kappa"),
    ],
)
def test_bad_spectrum_is_one_line_naming_the_key(raw, culprit):
    with pytest.raises(ConfigError, match=culprit):
        Config.from_dict({"data": {"kind": "linear_teacher", **raw}})


def test_teacher_probe_is_the_population_error_of_any_linear_student():
    """R, Q, E_G of a linear model with a bias against the Monte-Carlo error on 400k noiseless inputs."""
    data = build_data(LinearTeacherConfig(n=30, d=12, p=4, kappa=5.0, n_test=400_000, seed=2))
    torch.manual_seed(0)
    model = torch.nn.Linear(12, 1)
    probe = build_probes(ProbesConfig(use=["teacher"]))[0]
    record = probe(ProbeContext(model, data, None, 0, 1000))
    w, F = data.extras["teacher"], data.extras["modulation"]
    student = model.weight.detach().double()[0]
    # the probe reads the weights through the model's float32 forward pass: float32 precision
    assert record["teacher/R"] == pytest.approx(float((F @ student) @ w / 12), rel=1e-6)
    assert record["teacher/Q"] == pytest.approx(float((F @ student).pow(2).sum() / 12), rel=1e-6)
    test = data.evals["test"]
    with torch.no_grad():
        mc = 0.5 * (model(test.x).double() - test.y.double()).pow(2)
    assert record["teacher/eg"] == pytest.approx(float(mc.mean()), abs=4 * float(mc.std()) / 400_000**0.5)


def test_teacher_probe_needs_teacher_data():
    probe = build_probes(ProbesConfig(use=["teacher"]))[0]
    data = build_data(Config().data)
    with pytest.raises(ConfigError, match="linear_teacher"):
        probe(ProbeContext(torch.nn.Linear(64, 10), data, None, 0, 100))


def test_gradient_descent_run_starts_at_zero_with_lr_one_over_lambda_max():
    """optim.lr=1/sharpness with the summed loss is 1/λ_max(XᵀX), and the linear student starts at w = 0."""
    cfg = Config.load("configs/linear_teacher_gd.toml", ["train.steps=3", "device=cpu"])
    result = run(cfg, None, quiet=True)
    data = build_data(cfg.data)
    x = data.train.x.double()
    assert result.records[0]["lr"] == pytest.approx(1 / torch.linalg.eigvalsh(x.T @ x).max().item(), rel=1e-5)
    assert result.records[0]["teacher/R"] == 0 and result.records[0]["teacher/Q"] == 0
