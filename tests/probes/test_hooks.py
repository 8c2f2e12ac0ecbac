"""Probes read layers by name, on our models and on any user nn.Module."""

import pytest
import torch
from torch import nn

from learnscope import Config, from_tensors, run
from learnscope.errors import ConfigError
from learnscope.probes.hooks import capture, layer_names


def user_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_capture_gives_the_named_outputs():
    torch.manual_seed(0)
    model, x = user_model(), torch.randn(5, 1, 8, 8)
    with capture(model, ["1", "3"]) as out:
        logits = model(x)
    assert torch.equal(out["3"], logits)
    assert torch.allclose(out["1"], model[1](x.flatten(1)))
    model(x)  # hooks are gone after the block
    assert len(model[1]._forward_hooks) == 0


def test_layer_names_from_the_model_or_the_user():
    from learnscope.models.mlp import MLP

    mlp = MLP(64, 10, depth=2, width=8, batchnorm=False, bias=True)
    assert layer_names(mlp) == ["blocks.0.linear", "blocks.1.linear"]
    assert layer_names(user_model(), ["1"]) == ["1"]
    with pytest.raises(ConfigError, match="no probe_layers"):
        layer_names(user_model())
    with pytest.raises(ConfigError, match=r"\['9'\] are not modules"):
        layer_names(user_model(), ["9"])


def test_norms_probe_on_a_user_model_matches_torch():
    cfg = Config().override("train.steps=3", "device=cpu", "probes.use=[evaluation, norms]")
    cfg = Config.from_dict(
        {
            **cfg.to_dict(),
            "probes": {
                **cfg.to_dict()["probes"],
                "use": [{"kind": "evaluation"}, {"kind": "norms", "layers": ["1", "3"]}],
            },
        }
    )
    x = torch.randn(40, 1, 8, 8)
    y = torch.arange(40) % 10
    result = run(cfg, None, model=user_model(), data=from_tensors(x, y, x, y), quiet=True)
    model = result.model  # the trained copy (the caller's module is left as it was)
    last = result.records[-1]
    assert last["norm/1"] == pytest.approx(model[1].weight.norm().item(), rel=1e-6)
    total = torch.cat([p.flatten() for p in model.parameters()]).norm().item()
    assert last["norm/all"] == pytest.approx(total, rel=1e-6)
