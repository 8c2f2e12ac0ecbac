"""The predictions probe: compact encoding round trip, agreement, and the same predictions as the model's
argmax whether or not it shares the evaluation probe's forward pass."""

import numpy as np
import pytest
import torch

from learnscope import Config, run
from learnscope.data import build_data
from learnscope.probes import predictions as predictions_module
from learnscope.probes.predictions import agreement, decode_predictions, encode_predictions


def test_encoding_round_trips_in_one_or_two_bytes_per_sample():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 10, size=2000)
    text = encode_predictions(small, 10)
    assert text.startswith("u1:") and len(text) == 3 + 4 * 667  # base64: 4 characters per 3 bytes
    assert np.array_equal(decode_predictions(text), small)
    large = rng.integers(0, 1000, size=777)
    text = encode_predictions(torch.from_numpy(large), 1000)
    assert text.startswith("u2:") and np.array_equal(decode_predictions(text), large)
    assert decode_predictions(encode_predictions(np.array([], dtype=int), 10)).shape == (0,)
    with pytest.raises(ValueError, match=r"lie in \[0, 10\)"):
        encode_predictions(np.array([3, 10]), 10)
    with pytest.raises(ValueError, match="not an encoded"):
        decode_predictions("3,4,5")


def test_agreement_counts_equal_predictions():
    a = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    b = np.array([0, 1, 0, 3, 4, 0, 6, 0])
    assert agreement(a, b) == 5 / 8
    assert agreement(encode_predictions(a, 10), encode_predictions(b, 10)) == 5 / 8
    assert agreement(a, a) == 1.0
    with pytest.raises(ValueError, match="cannot be compared"):
        agreement(a, b[:4])


def _run(use, monkeypatch):
    calls = []
    real_predict = predictions_module.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(predictions_module, "predict", counting)
    cfg = Config.from_dict(
        {
            "device": "cpu",
            "model": {"kind": "mlp", "width": 32},
            "train": {"steps": 12, "checkpoint_every": 0},
            "probes": {"schedule": ["every"], "every": 6, "use": use},
        }
    )
    return run(cfg, store=None, quiet=True), calls


@pytest.mark.parametrize("shared", [True, False])
def test_recorded_predictions_are_the_argmax_on_the_test_set(shared, monkeypatch):
    use = ["evaluation", "predictions"] if shared else ["predictions"]
    result, calls = _run(use, monkeypatch)
    assert len(calls) == (0 if shared else 3)  # three probe steps: 0, 6, 12
    data = build_data(result.config.data)
    model = result.model.eval()
    with torch.no_grad():
        expected = model(data.evals["test"].x).argmax(1).numpy()
    last = result.records[-1]
    assert np.array_equal(decode_predictions(last["test/pred"]), expected)
    if shared:
        assert last["test/acc"] == pytest.approx(np.mean(expected == data.evals["test"].y.numpy()))


def test_unknown_set_is_a_one_line_error(monkeypatch):
    from learnscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"predictions.sets: unknown \['nope'\]"):
        _run([{"kind": "predictions", "sets": ["nope"]}], monkeypatch)
