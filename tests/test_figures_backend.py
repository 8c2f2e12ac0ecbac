"""Figures never touch matplotlib's global state: importing the library and drawing through it leaves the
user's backend as it was (a notebook keeps its own) and registers nothing with pyplot's figure manager."""

import os
import subprocess
import sys
import textwrap

# Run in a fresh interpreter whose backend was chosen before learnscope is imported (MPLBACKEND=svg, as a
# user's environment would set it): every figure-drawing module is imported, then each draws its figures.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    out = Path(sys.argv[1])
    assert matplotlib.get_backend() == "svg", matplotlib.get_backend()

    from learnscope import report
    from learnscope.studies import gaussian_equivalence as ge
    from learnscope.studies import increasing_complexity as ic
    from learnscope.studies import neural_collapse as nc

    assert matplotlib.get_backend() == "svg", f"importing changed the backend to {matplotlib.get_backend()}"

    paths = []
    curves = pd.DataFrame(
        {"run": ["a", "a", "b", "b"], "step": [0, 10, 0, 10], "test/acc": [0.1, 0.5, 0.1, 0.7]}
    )
    paths.append(report.plot_curves(curves, ["test/acc"], out / "curves.png", label="run", title="t"))
    x = np.random.default_rng(0).random((6, 1, 4, 4))
    paths.append(report.plot_sample_grid(x, np.array([0, 0, 0, 1, 1, 1]), 2, out / "grid.png", per_class=3))

    rows = []
    for run, noise, top in (("clean", 0.0, 1.0), ("noisy", 0.2, 0.9)):
        for step in (0, 10):
            rows.append({
                "run": run, "step": step, "epoch": step / 10, "seed": 0, "model.depth": 2,
                "data.label_noise": noise, "train/acc": 1.0, "test/acc": 0.9, "train/ncc/1": 0.8,
                "train/ncc/2": top, "test/ncc/1": 0.8, "test/ncc/2": 0.7, "train/cdnv/1": 1.0,
                "train/cdnv/2": 0.5, "train/effective_depth_lo": 2.0, "train/effective_depth_hi": 3.0,
            })
    table = pd.DataFrame(rows)
    paths += nc.figures(table, nc.summarise(table), out / "nc", "neural collapse")

    data = pd.DataFrame({
        "distribution": ["real"] * 3 + ["gaussian"] * 3, "seed": 0, "step": [0, 10, 100] * 2,
        "test_acc": [0.1, 0.5, 0.8, 0.1, 0.45, 0.5], "real_train_acc": np.nan, "clone_test_acc": np.nan,
        "pred": None,
    })
    summary = pd.DataFrame({
        "distribution": ["real", "gaussian"], "horizon": [np.nan, 10.0], "horizon_lo": [np.nan, 10.0],
        "horizon_hi": [np.nan, 100.0],
    })
    paths += ic.figures(data, summary, out / "ic", "clones")

    ge_rows = []
    for method, force in (("simulation", np.nan), ("ode", np.nan), ("ode", 0.5)):
        for t in (0.0, 0.1, 1.0):
            ge_rows.append({
                "generator": "rand", "D": 20, "N": 50, "L": 2, "generator_seed": 0, "weights": None,
                "method": method, "force_delta": force, "replica": 0, "t": t, "eg": 0.5 - 0.1 * t,
                "Q_00": 1.0 + t, "R_00": 0.1 * t, "v_0": 0.3,
            })
    paths += ge.figures(pd.DataFrame(ge_rows), out / "ge")

    assert matplotlib.get_backend() == "svg", f"drawing changed the backend to {matplotlib.get_backend()}"
    assert plt.get_fignums() == [], f"figures left with pyplot: {plt.get_fignums()}"
    for path in paths:
        assert path.suffix == ".png" and path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", path
    print(len(paths))
    """
)


def test_library_figures_leave_the_backend_and_pyplot_alone(tmp_path):
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    # plot_curves, plot_sample_grid, three neural-collapse figures, one clone figure, one committee figure
    assert done.stdout.split() == ["7"]
    assert len(list(tmp_path.rglob("*.png"))) == 7
