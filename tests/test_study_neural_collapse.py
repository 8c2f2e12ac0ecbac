"""Acceptance of the neural-collapse study at its tiny scale (digits, MLP-L-256), as the issue states it."""

import itertools

import pytest

from learnscope.studies import neural_collapse


def test_tiny_configs_follow_the_reference_recipe():
    cfgs = neural_collapse.configs("tiny")
    assert len(cfgs) == 6 and {c.model.depth for c in cfgs} == {8, 12}
    c = cfgs[0]
    assert c.model.batchnorm and c.model.width == 256 and c.optim.lr == 0.05 and c.train.epochs == 200
    assert c.train.milestones == [100, 150] and c.train.gamma == 0.1 and c.data.test_fraction == 0.3
    assert {c.data.label_noise for c in cfgs} == {0.0, 0.2, 0.4}


@pytest.mark.slow
def test_tiny_scale_shows_intermediate_collapse_and_noise_raises_effective_depth(tmp_path):
    summary, paths = neural_collapse.run_study(
        "tiny", store=tmp_path / "runs", out_dir=tmp_path / "fig", executor="local", workers=2, quiet=True
    )
    assert all(p.exists() for p in paths)
    for _, row in summary.iterrows():
        L = row["L"]
        assert row["train_acc"] == 1.0, row  # the network fits its (possibly noisy) training labels
        if row["noise"] == 0:
            assert row["ncc_train"][-1] == 1.0
            cdnv = row["cdnv_train"]
            assert all(a > b for a, b in itertools.pairwise(cdnv)), cdnv  # collapse deepens layer by layer
            assert row["effective_depth"] <= 4 < L
        else:
            assert row["effective_depth"] >= L - 1, row
        if row["noise"] == 0.4:
            assert max(row["ncc_test"][:-1]) > row["ncc_test"][-1]  # a lower layer generalises better
