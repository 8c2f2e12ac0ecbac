"""Acceptance of the neural-collapse study at its tiny scale (digits, MLP-L-256), as the issue states it."""

import itertools

import matplotlib.colors
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


def collapse_table(settings, steps=(0, 10, 100)):
    """Records of tiny networks, one run per (depth, noise, seed): NCC accuracy rising with the layer, the
    top layers separable when clean (effective depth 2), CDNV falling with the layer."""
    rows = []
    for depth, noise, seed in settings:
        for step in steps:
            record = {
                "run": f"L{depth}-n{noise}-s{seed}", "step": step, "epoch": step / 10, "seed": seed,
                "model.depth": depth, "data.label_noise": noise, "train/acc": 1.0, "test/acc": 0.9,
            }  # fmt: skip
            for i in range(1, depth + 1):
                record[f"train/ncc/{i}"] = 1.0 if (noise == 0 and i >= 2) else 0.9 + 0.01 * i
                record[f"test/ncc/{i}"] = 0.8
                record[f"train/cdnv/{i}"] = (1 + noise) * 0.5**i
            record["train/effective_depth_lo"] = record["train/effective_depth_hi"] = 2.0
            rows.append(record)
    return pd.DataFrame(rows)


def drawn(table, tmp_path, monkeypatch) -> dict:
    """The study's figures by file name, as drawn (they are also written)."""
    figures = {}
    save = neural_collapse.save_figure

    def kept(fig, path, *args):
        figures[path.name] = fig
        return save(fig, path, *args)

    monkeypatch.setattr(neural_collapse, "save_figure", kept)
    neural_collapse.figures(table, neural_collapse.summarise(table), tmp_path)
    return figures


def data_axes(figure) -> list:
    """The figure's panels: axes that are neither a colour bar nor an inset."""
    insets = {child for ax in figure.axes for child in ax.child_axes}
    return [ax for ax in figure.axes if ax not in insets and ax.get_label() != "<colorbar>"]


def test_each_ncc_panel_has_a_colour_bar_of_its_own_layers(tmp_path, monkeypatch):
    table = collapse_table([(4, 0.0, 0), (12, 0.0, 0), (12, 0.4, 0)])
    figures = drawn(table, tmp_path, monkeypatch)
    figure = figures["ncc_train_per_layer.png"]
    panels = data_axes(figure)
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == 2 and len(bars) == 2  # a panel per depth of the clean runs, each with its bar
    for ax, bar, depth in zip(panels, bars, (4, 12), strict=True):
        (mesh,) = [c for c in bar.collections if c.get_array() is not None]  # its colours: layer i at i
        layer_colours = {i: matplotlib.colors.to_hex(mesh.cmap(mesh.norm(i))) for i in range(1, depth + 1)}
        lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(lines) == depth  # layer i drawn in the colour its bar gives layer i
        for i, line in enumerate(lines, start=1):
            assert matplotlib.colors.to_hex(line.get_color()) == layer_colours[i]
        assert len(set(layer_colours.values())) == depth


def test_figures_have_no_empty_panel_without_clean_runs_or_with_one_depth(tmp_path, monkeypatch):
    for settings in ([(8, 0.2, 0), (8, 0.4, 0)], [(4, 0.0, 0), (4, 0.0, 1)], [(3, 0.0, 0), (5, 0.0, 0)]):
        figures = drawn(collapse_table(settings), tmp_path, monkeypatch)
        assert list(figures) == ["ncc_train_per_layer.png", "cdnv_per_layer.png", "effective_depth.png"]
        for name, figure in figures.items():
            panels = data_axes(figure)
            assert panels, (settings, name)
            for ax in panels:
                assert any(len(line.get_xdata()) for line in ax.get_lines()), (settings, name, ax.get_title())
        noises = {noise for _, noise, _ in settings}
        if 0.0 not in noises:  # the least noisy runs stand in for the clean ones, and the panel says so
            (ax,) = data_axes(figures["ncc_train_per_layer.png"])
            assert "label noise 20%" in ax.get_title()
        # effective depth: against L only where there are several depths, against noise only where several
        depths = {depth for depth, _, _ in settings}
        x_labels = [ax.get_xlabel() for ax in data_axes(figures["effective_depth.png"])]
        assert any(x.startswith("depth L") for x in x_labels) == (len(depths) > 1 or len(noises) == 1)
        assert ("label noise" in x_labels) == (len(noises) > 1)


def test_cdnv_colours_depths_from_the_palette_and_styles_noise_levels(tmp_path, monkeypatch):
    from learnscope.report import PALETTE

    table = collapse_table([(d, n, 0) for d in (4, 8) for n in (0.0, 0.2, 0.4)])
    (ax,) = data_axes(drawn(table, tmp_path, monkeypatch)["cdnv_per_layer.png"])
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == 6
    style = {(len(line.get_xdata()), line.get_linestyle()): line.get_color() for line in lines}
    assert len(style) == 6  # (depth, noise) pairs told apart
    assert {line.get_color() for line in lines} == set(PALETTE[:2])  # a palette colour per depth
    assert len({line.get_linestyle() for line in lines}) == 3  # a style per noise level
    assert style[(4, "-")] == style[(4, "--")] != style[(8, "-")]


@pytest.mark.slow
def test_on_mnist1d_clean_labels_collapse_below_the_top_and_noise_pushes_the_effective_depth_up(tmp_path):
    """The claim off the data the tiny scale was tuned on (digits): MNIST-1D, L = 8, clean and 40% noise
    (docs/studies/neural_collapse.md: effective depth 5 of 8 clean, 8 with 40% noise; ~3 min on 2 cores)."""
    result = run_study(
        "neural_collapse", "tiny", ("data=mnist1d",), tmp_path / "runs", tmp_path / "fig",
        axes={"model.depth": [8], "data.label_noise": [0.0, 0.4]}, executor="local", workers=2, quiet=True,
    )  # fmt: skip
    summary = result.summary.set_index("noise")
    assert set(summary["data"]) == {"mnist1d"}
    clean, noisy = summary.loc[0.0], summary.loc[0.4]
    assert clean["train_acc"] == 1.0 and clean["ncc_train"][-1] == 1.0
    assert clean["effective_depth"] <= 6 < 8  # the top layers add nothing the lower ones have not
    assert all(a > b for a, b in itertools.pairwise(clean["cdnv_train"]))
    assert noisy["effective_depth"] >= 7  # noise pushes it up to the top
    notes = [headline["note"] for headline in result.record["headlines"]]
    assert any("mlp-8-256 on mnist1d" in note for note in notes), notes  # the headline says what ran
