"""Acceptance of the neural-collapse study at its tiny scale (digits, MLP-L-256), as the issue states it."""

import itertools

import pandas as pd
import pytest

from learnscope.studies import neural_collapse, run_study


def test_tiny_configs_follow_the_reference_recipe():
    cfgs = neural_collapse.configs("tiny")
    assert len(cfgs) == 6 and {c.model.depth for c in cfgs} == {8, 12}
    c = cfgs[0]
    assert c.model.batchnorm and c.model.width == 256 and c.optim.lr == 0.05 and c.train.epochs == 200
    assert c.train.milestones == [100, 150] and c.train.gamma == 0.1 and c.data.test_fraction == 0.3
    assert {c.data.label_noise for c in cfgs} == {0.0, 0.2, 0.4}


@pytest.mark.slow
def test_tiny_scale_shows_intermediate_collapse_and_noise_raises_effective_depth(tmp_path):
    result = run_study(
        "neural_collapse", "tiny", store=tmp_path / "runs", out=tmp_path / "fig", executor="local", workers=2,
        quiet=True,
    )  # fmt: skip
    summary, paths = result.summary, result.paths
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


def test_summary_and_figures_keep_a_network_whose_top_layer_misses_eps(tmp_path):
    """A run whose top layer is not NCC-separable has no effective depth (None, not 0 or L), and the figures
    still draw it (at L + 1) instead of failing or dropping it."""
    rows = []
    for run, noise, top in (("clean", 0.0, 1.0), ("noisy", 0.2, 0.9)):
        for step in (0, 10):
            rows.append(
                {
                    "run": run, "step": step, "epoch": step / 10, "seed": 0,
                    "model.depth": 2, "data.label_noise": noise, "train/acc": 1.0, "test/acc": 0.9,
                    "train/ncc/1": 0.8, "train/ncc/2": top, "test/ncc/1": 0.8, "test/ncc/2": 0.7,
                    "train/cdnv/1": 1.0, "train/cdnv/2": 0.5,
                    "train/effective_depth_lo": 2.0 if top == 1 else 3.0,
                    "train/effective_depth_hi": 2.0 if top == 1 else 3.0,
                }
            )  # fmt: skip
    table = pd.DataFrame(rows)
    summary = neural_collapse.summarise(table)
    depth = dict(zip(summary["run"], summary["effective_depth"], strict=True))
    assert depth["clean"] == 2 and pd.isna(depth["noisy"])
    paths = neural_collapse.figures(table, summary, tmp_path)
    assert [p.name for p in paths] == ["ncc_train_per_layer.png", "cdnv_per_layer.png", "effective_depth.png"]
    assert all(p.stat().st_size > 0 for p in paths)
