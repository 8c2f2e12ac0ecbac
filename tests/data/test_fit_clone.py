"""`learnscope data fit-clone`: the written .npz is what method `file` reads back, the printed report is the
clone's moment errors recomputed with numpy, the grid is a PNG, and bad input exits 2 with one line."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from learnscope.config import Config
from learnscope.data import build_data
from learnscope.data.clones import CloneConfig, load_clone_config, load_clone_file, make_clone
from learnscope.errors import ConfigError
from learnscope.report import plot_sample_grid
from tests.conftest import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNSCOPE_CACHE", str(tmp_path / "cache"))


def report_rows(out: str) -> dict[str, list[str]]:
    """The printed report table: first cell (class or 'mean') -> the other cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["class"])
    rows = {}
    for line in lines[start:]:
        cells = line.split()
        rows[cells[0]] = cells[1:]
        if cells[0] == "mean":
            break
    return rows


def test_fit_clone_writes_what_the_file_clone_reads_back(tmp_path, capsys):
    out, grid = tmp_path / "clones" / "digits.npz", tmp_path / "grid.png"
    code, stdout, err = cli(
        "data", "fit-clone", "method=gaussian", "data.n=400", "clone.seed=3", "--out", out,
        "--grid", grid, "--per-class", "4", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    with np.load(out, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
        stored = CloneConfig.model_validate_json(str(npz["config"]))
    assert x.dtype == np.float32 and x.shape == (400, 1, 8, 8) and y.dtype == np.int64 and y.shape == (400,)

    # The overrides reached the config, and the file holds exactly the sample that config draws.
    cfg = CloneConfig(method="gaussian", n=400, seed=3)
    assert stored == cfg
    direct = make_clone(cfg)
    assert np.array_equal(direct.sample.x.numpy(), x) and np.array_equal(direct.sample.y.numpy(), y)

    # Round trip: the file reader, and a clone of method `file` built from the printed overrides.
    xs, ys = load_clone_file(out, (1, 8, 8), 10)
    assert torch.equal(xs, torch.from_numpy(x)) and torch.equal(ys, torch.from_numpy(y))
    hint = next(line for line in stdout.splitlines() if line.startswith("train on it: "))
    file_cfg = Config().override(*hint.removeprefix("train on it: ").split())
    assert file_cfg.data.method == "file" and file_cfg.data.path == out
    from_file = make_clone(file_cfg.data)
    assert torch.equal(from_file.sample.x, torch.from_numpy(x))
    assert torch.equal(from_file.sample.y, torch.from_numpy(y))

    # The printed errors are the relative errors of class means and covariances, recomputed here.
    source = build_data(Config().data.model_copy(update={"normalize": False}))
    xs_src, ys_src = source.train.x.reshape(-1, 64).double().numpy(), source.train.y.numpy()
    rows = report_rows(stdout)
    errors = []
    for k in range(10):
        a, b = x.reshape(-1, 64)[y == k].astype(np.float64), xs_src[ys_src == k]
        mean_err = np.linalg.norm(a.mean(0) - b.mean(0)) / np.linalg.norm(b.mean(0))
        cov_err = np.linalg.norm(np.cov(a.T) - np.cov(b.T)) / np.linalg.norm(np.cov(b.T))
        n_source, n_clone, printed_mean, printed_cov = rows[str(k)][:4]
        assert int(n_source) == (ys_src == k).sum() and int(n_clone) == (y == k).sum()
        np.testing.assert_allclose([float(printed_mean), float(printed_cov)], [mean_err, cov_err], rtol=1e-3)
        errors.append(cov_err)
    np.testing.assert_allclose(float(rows["mean"][3]), np.mean(errors), rtol=1e-3)
    assert "gmm_loglik" not in stdout

    data = grid.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(grid)
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # 10 rows of 4 samples: taller than wide


def test_fit_clone_of_a_1d_source_with_gmm_reports_the_log_likelihood(tmp_path, capsys):
    out, grid = tmp_path / "m.npz", tmp_path / "m.png"
    source = ["source.kind=mnist1d", "source.num_samples=600"]
    code, stdout, err = cli(
        "data", "fit-clone", *source, "method=gmm", "components=2", "em_iters=5", "n=200",
        "--out", out, "--grid", grid, capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    result = make_clone(load_clone_config([*source, "method=gmm", "components=2", "em_iters=5", "n=200"]))
    with np.load(out) as npz:
        assert np.array_equal(npz["x"], result.sample.x.numpy()) and npz["x"].shape == (200, 1, 40)
    rows = report_rows(stdout)
    loglik = result.fit.log_likelihood.numpy()
    np.testing.assert_allclose([float(rows[str(k)][-1]) for k in range(10)], loglik, rtol=1e-3)
    np.testing.assert_allclose(float(rows["mean"][-1]), loglik.mean(), rtol=1e-3)
    assert grid.read_bytes().startswith(PNG_SIGNATURE)


def test_clone_config_from_a_file_and_overrides(tmp_path):
    run_cfg = tmp_path / "run.toml"
    run_cfg.write_text('[data]\nkind = "mnist1d"\nnum_samples = 600\n[model]\nkind = "mlp"\n')
    cfg = load_clone_config([str(run_cfg), "method=diagonal"])
    assert cfg.method == "diagonal" and cfg.source.kind == "mnist1d" and cfg.source.num_samples == 600
    clone_run = tmp_path / "clone_run.json"
    clone_run.write_text('{"data": {"kind": "clone", "method": "mean", "seed": 4}}')
    assert load_clone_config([str(clone_run)]) == CloneConfig(method="mean", seed=4)
    table = tmp_path / "clone.toml"
    table.write_text('method = "isotropic"\n[source]\nkind = "digits"\ntest_fraction = 0.5\n')
    cfg = load_clone_config([str(table)])
    assert cfg.method == "isotropic" and cfg.source.test_fraction == 0.5
    same = [["n=5", "source.kind=digits"], ["data.n=5", "data.source.kind=digits"], ["clone.n=5"]]
    assert len({load_clone_config(args) for args in same}) == 1
    assert load_clone_config([]) == CloneConfig()
    with pytest.raises(ConfigError, match="kind 'clone'"):
        load_clone_config(["kind=digits"])


@pytest.mark.parametrize("per_class", [3, 6])
@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 8, 8), (1, 40), (40,)])
def test_sample_grid_is_a_png_with_a_row_per_class(tmp_path, shape, per_class):
    g = np.random.default_rng(0)
    x, y = g.random((40, *shape)), np.arange(40) % 4
    path = plot_sample_grid(x, y, 4, tmp_path / "sub" / "grid.png", per_class=per_class, title="t")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    height, width = matplotlib.image.imread(path).shape[:2]
    wider = plot_sample_grid(x, y, 4, tmp_path / "wide.png", per_class=2 * per_class)
    assert matplotlib.image.imread(wider).shape[1] > width  # a column per sample
    assert matplotlib.image.imread(wider).shape[0] <= height  # the same rows (and no title)


def bad_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("method = \n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["methd=gaussian"], "unknown config key 'data.methd'"),
        (["method=fourier"], "data.method"),
        (["source.kind=nope"], "data.source.kind: unknown 'nope'"),
        (["n=-3"], "data.n"),
        (["nowhere.toml"], "config file not found: nowhere.toml"),
        ([bad_toml], "is not valid TOML"),
        (["method=file"], "data.path: required for method 'file'"),
        (["method=file", "path=missing.npz"], "missing.npz"),
        (["--out", "clone.txt"], "must end in .npz"),
        (["--grid", "grid.jpg"], "must end in .png"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    args = [a(tmp_path) if callable(a) else a for a in args]
    out = [] if "--out" in args else ["--out", "clone.npz"]
    code, _, err = cli("data", "fit-clone", *args, *out, capsys=capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.png"))


def test_missing_out_is_a_usage_error(capsys):
    code, _, err = cli("data", "fit-clone", "method=mean", capsys=capsys)
    assert code == 2 and "--out" in err
