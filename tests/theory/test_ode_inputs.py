"""What the Gaussian-equivalence ODE reads from disk: a moments file (data.generators.save_moments) and the
initial weights of a simulation (committee_ode.save_initial_weights). delta = D/N must come from the file's
shapes, and the state built from a loaded file must reproduce the overlaps computed directly from the weights
(docs/studies/gaussian_equivalence.md Eq. (5.2), §7.1)."""

import numpy as np
import pytest

from learnscope.errors import DataError
from learnscope.runs.committee.generators import (
    RandomSignGenerator,
    estimate_moments,
    load_moments,
    save_moments,
)
from learnscope.runs.committee.model import init_teacher_student
from learnscope.runs.committee.ode import (
    eg_analytic,
    gaussian_equivalence_ode,
    ge_initial_state,
    load_initial_weights,
    order_parameters,
    save_initial_weights,
)


def test_ode_starts_from_a_loaded_moments_file_with_delta_d_over_n(tmp_path):
    D, N = 12, 30
    gen = RandomSignGenerator(D, N, 2, rng=0)
    est = estimate_moments(gen, np.random.default_rng(0), 3000, batch_size=1000, quiet=True)
    loaded = load_moments(save_moments(tmp_path / "m.npz", est, {"generator": "rand"}))
    init = init_teacher_student(np.random.default_rng(1), N, D, K=3, M=2)
    state = ge_initial_state(init["w"], init["v"], init["B"], init["A"], loaded.moments)
    assert state.N == N and state.D == D and state.delta == pytest.approx(D / N)
    # the eigenbasis state carries exactly the overlaps Q = w Omega w'/N, R = w Phi B'/sqrt(N D)
    Q, R, T = order_parameters(init["w"], init["B"], est.moments)
    Qs, Rs, Ts = state.overlaps()
    np.testing.assert_allclose(Qs, Q, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(Rs, R, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(Ts, T)
    # and the ODE run from the file equals the one run from the in-memory moments
    a = gaussian_equivalence_ode(state, eta=0.2, times=[0.0, 0.5], dt=0.05)
    b = gaussian_equivalence_ode(
        ge_initial_state(init["w"], init["v"], init["B"], init["A"], est.moments),
        eta=0.2,
        times=[0.0, 0.5],
        dt=0.05,
    )
    assert a == b
    assert a[0]["eg"] == pytest.approx(float(eg_analytic(Q, R, T, init["v"], init["A"])), rel=1e-10)


def test_initial_weights_round_trip_and_errors(tmp_path):
    init = init_teacher_student(np.random.default_rng(0), 8, 5, K=2, M=3, n_replicas=4)
    path = save_initial_weights(tmp_path / "w.npz", **init)
    back = load_initial_weights(path)
    assert set(back) == {"w", "v", "B", "A"}
    for key in back:
        np.testing.assert_array_equal(back[key], init[key])
    single = load_initial_weights(
        save_initial_weights(tmp_path / "one.npz", init["w"][0], init["v"][0], init["B"], init["A"])
    )
    assert single["w"].shape == (2, 8) and single["v"].shape == (2,)
    with pytest.raises(ValueError, match="inconsistent weights"):
        save_initial_weights(tmp_path / "bad.npz", init["w"], init["v"][0], init["B"], init["A"])

    np.savez(tmp_path / "no_B.npz", w=init["w"], v=init["v"], A=init["A"])
    np.savez(tmp_path / "shapes.npz", w=init["w"], v=init["v"], B=init["B"], A=np.ones(2))
    np.savez(tmp_path / "nan.npz", w=init["w"] * np.nan, v=init["v"], B=init["B"], A=init["A"])
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 nothing")
    cases = {
        "absent.npz": "no such file",
        "no_B.npz": "missing key 'B'",
        "shapes.npz": "inconsistent weights",
        "nan.npz": "w has non-finite values",
        "garbage.npz": "cannot be read",
    }
    for name, culprit in cases.items():
        with pytest.raises(DataError, match=culprit) as info:
            load_initial_weights(tmp_path / name)
        assert "\n" not in str(info.value)
