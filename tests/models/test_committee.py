"""Online SGD simulator of committee machines (docs/studies/gaussian_equivalence.md §2): the vectorised
update against autograd, the analytic eg against the test error, the simulation against the Saad-Solla ODE."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from learnscope.runs.committee.model import (
    CommitteeMachine,
    activation,
    iid_gaussian_sampler,
    init_teacher_student,
    sgd_step,
    simulate_online_sgd,
)
from learnscope.runs.committee.ode import Moments, log_times, order_parameters, saad_solla_ode


@pytest.mark.parametrize("g", ["erf", "linear", "relu"])
def test_sgd_step_matches_autograd_per_replica(g):
    """One step for R = 3 replicas equals torch SGD on 1/2 (y - yhat)^2 with lr eta for w and eta/N for v,
    fields w.x/sqrt(N), done replica by replica (docs/studies/gaussian_equivalence.md Eq. (2.2))."""
    rng = np.random.default_rng(0)
    R, K, N, eta = 3, 4, 50, 0.7
    w, v = rng.standard_normal((R, K, N)), rng.standard_normal((R, K))
    x, y = rng.standard_normal((R, N)), rng.standard_normal(R)
    tg = {"erf": lambda u: torch.erf(u / math.sqrt(2)), "linear": lambda u: u, "relu": torch.relu}[g]
    want_w, want_v = [], []
    for r in range(R):
        tw = torch.tensor(w[r], requires_grad=True)
        tv = torch.tensor(v[r], requires_grad=True)
        loss = 0.5 * (tg(tw @ torch.tensor(x[r]) / math.sqrt(N)) @ tv - y[r]) ** 2
        loss.backward()
        want_w.append((tw - eta * tw.grad).detach().numpy())
        want_v.append((tv - eta / N * tv.grad).detach().numpy())
    sgd_step(w, v, x, y, eta, g)
    np.testing.assert_allclose(w, np.stack(want_w), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(v, np.stack(want_v), rtol=1e-12, atol=1e-13)
    v_before = v.copy()
    sgd_step(w, v, x, y, eta, g, train_second_layer=False)
    assert np.array_equal(v, v_before)


def test_committee_machine_output():
    rng = np.random.default_rng(1)
    w, v, x = rng.standard_normal((3, 20)), rng.standard_normal(3), rng.standard_normal((5, 20))
    g, _ = activation("erf")
    expected = g(x @ w.T / math.sqrt(20)) @ v
    np.testing.assert_allclose(CommitteeMachine(w, v, "erf")(x), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="allowed"):
        activation("tanh")


def _by_time(records, key):
    out = defaultdict(list)
    for r in records:
        out[r["t"]].append(r[key])
    return {t: np.array(vals) for t, vals in out.items()}


def _simulate_small(seed, moments, g="erf", R=3):
    rng = np.random.default_rng(seed)
    N = 60
    ws = init_teacher_student(rng, N, N, K=2, M=2, n_replicas=R)
    return simulate_online_sgd(
        ws["w"], ws["v"], ws["B"], ws["A"], iid_gaussian_sampler(N), eta=0.5, times=log_times(3, 6, N=N),
        rng=rng, g=g, n_test=20_000, moments=moments,
    )  # fmt: skip


@pytest.mark.parametrize("moments", [Moments.iid(), None], ids=["exact", "test-set"])
def test_analytic_eg_matches_test_error(moments):
    """For every replica and time, |eg (test set) - eg_analytic| <= 4 standard errors of the test mean, with
    order parameters exact (w w'/N) or estimated on the test set as the original
    (docs/studies/gaussian_equivalence.md §2)."""
    recs = _simulate_small(2, moments)
    assert len(recs) == 3 * 7
    for r in recs:
        assert abs(r["eg"] - r["eg_analytic"]) <= 4 * r["eg_sem"], r
    assert len({round(r["eg"], 6) for r in recs}) > 10  # training moves the error


def test_same_seed_same_records():
    a, b = _simulate_small(3, Moments.iid()), _simulate_small(3, Moments.iid())
    assert a == b
    assert a != _simulate_small(4, Moments.iid())
    relu = _simulate_small(3, None, g="relu")
    assert all(math.isnan(r["eg_analytic"]) and math.isfinite(r["eg"]) for r in relu)


def test_records_and_replica_layout():
    rng = np.random.default_rng(5)
    N = 30
    ws = init_teacher_student(rng, N, N, K=3, M=1)
    recs = simulate_online_sgd(
        ws["w"], ws["v"], ws["B"], ws["A"], iid_gaussian_sampler(N), eta=0.3, times=[0, 0.5, 0.5, 1.0],
        rng=rng, n_replicas=2, n_test=500, moments=Moments.iid(), train_second_layer=False,
    )  # fmt: skip
    assert [(r["t"], r["step"], r["replica"]) for r in recs] == [
        (0.0, 0, 0), (0.0, 0, 1), (0.5, 15, 0), (0.5, 15, 1), (1.0, 30, 0), (1.0, 30, 1)
    ]  # fmt: skip
    assert {"Q_00", "Q_12", "R_20", "T_00", "v_2", "eg", "eg_sem", "eg_analytic"} <= set(recs[0])
    assert all(r["v_1"] == ws["v"][1] for r in recs)  # second layer frozen
    Q, R, _ = order_parameters(ws["w"], ws["B"])
    assert recs[0]["Q_01"] == pytest.approx(Q[0, 1]) and recs[0]["R_20"] == pytest.approx(R[2, 0])


def _sim_vs_ode(R, t_max, num):
    """N = 1000, K = M = 2, eta = 0.2 (the original's defaults, docs/studies/gaussian_equivalence.md §6), all
    replicas from the same initial weights."""
    N, eta = 1000, 0.2
    rng = np.random.default_rng(0)
    ws = init_teacher_student(rng, N, N, K=2, M=2)
    times = log_times(t_max, num, t_min=0.5, N=N)
    sim = simulate_online_sgd(
        ws["w"], ws["v"], ws["B"], ws["A"], iid_gaussian_sampler(N), eta=eta, times=times, rng=rng,
        n_replicas=R, moments=Moments.iid(),
    )  # fmt: skip
    ode = saad_solla_ode(*order_parameters(ws["w"], ws["B"]), ws["v"], ws["A"], eta=eta, times=times)
    eg, ega = _by_time(sim, "eg"), _by_time(sim, "eg_analytic")
    return sim, ode, eg, ega


def _check_sim_vs_ode(sim, ode, eg, ega, tol):
    assert {r["t"] for r in sim} == {o["t"] for o in ode}
    for o in ode:
        t = o["t"]
        # finite-N fluctuations only: the exact order parameters of the simulation, averaged over replicas
        assert abs(ega[t].mean() - o["eg"]) <= tol, (t, ega[t].mean(), o["eg"])
        if t >= 5:  # the test error adds the fixed test set's sampling error (~0.004 at eg ~ 0.4, t ~ 0)
            assert abs(eg[t].mean() - o["eg"]) <= tol, (t, eg[t].mean(), o["eg"])
    assert ode[-1]["eg"] < 0.5 * ode[0]["eg"]  # the compared stretch includes real learning


def test_simulation_matches_saad_solla_ode():
    """Replica-averaged test error within 0.005 of the ODE for t >= 5 (8 replicas, t <= 30; ~8 s)."""
    _check_sim_vs_ode(*_sim_vs_ode(R=8, t_max=30, num=10), tol=0.005)


@pytest.mark.slow
def test_simulation_matches_saad_solla_ode_long():
    """As above through specialisation and the approach to the fixed point: 16 replicas, t <= 200 (~75 s)."""
    sim, ode, eg, ega = _sim_vs_ode(R=16, t_max=200, num=20)
    _check_sim_vs_ode(sim, ode, eg, ega, tol=0.005)
    last = ode[-1]
    for key in ("Q_00", "Q_01", "Q_11", "R_00", "R_01", "R_10", "R_11", "v_0", "v_1"):
        vals = np.array([r[key] for r in sim if r["t"] == last["t"]])
        assert abs(vals.mean() - last[key]) <= 0.05, (key, vals.mean(), last[key])


@pytest.mark.parametrize("g", ["erf", "linear", "relu"])
@pytest.mark.parametrize("train_v", [True, False])
def test_compiled_steps_are_sgd_step(g, train_v):
    """The compiled chunk loop (kernels.sgd_chunk) against `sgd_step`, the numpy definition that
    autograd checks above: the same 3 replicas from the same samples, logs inside and across chunks; records
    agree to 1e-12 (reassociated dot products move them by rounding only)."""
    rng = np.random.default_rng(8)
    N, D = 40, 25
    ws = init_teacher_student(rng, N, D, K=3, M=2, n_replicas=3)
    F = rng.standard_normal((N, D)) / math.sqrt(D)

    def sample(r, n):
        c = r.standard_normal((n, D))
        return np.tanh(c @ F.T), c

    kw = dict(eta=0.4, times=[0, 0.1, 1.0, 3.3, 8.0], n_test=300, g=g, train_second_layer=train_v, chunk=7)
    runs = [
        simulate_online_sgd(ws["w"], ws["v"], ws["B"], ws["A"], sample, rng=np.random.default_rng(1),
                            backend=backend, **kw)
        for backend in ("numba", "numpy")
    ]  # fmt: skip
    assert [r.keys() for r in runs[0]] == [r.keys() for r in runs[1]]
    assert max(abs(a[k] - b[k]) for a, b in zip(*runs, strict=True) for k in a) < 1e-12
    assert abs(runs[1][-1]["eg"] - runs[1][0]["eg"]) > 0.01  # training moves the error
