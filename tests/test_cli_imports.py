"""The commands that only read (help, version, a store's runs and states) answer without importing torch or
pandas: `import learnscope` is light (public names and built-in kinds load on first use, see
learnscope/__init__.py and registry.load_builtins). Each command runs in a fresh interpreter, as from a
shell."""

import subprocess
import sys

import pytest

from learnscope import Config, run

PROBE = """
import sys
sys.argv = ["learnscope", *sys.argv[1:]]
from learnscope.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "pandas", "scipy", "numba", "matplotlib") if m in sys.modules)
print("HEAVY", code, ",".join(heavy) or "-", file=sys.stderr)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    cfg = Config.from_dict({"data": {"kind": "digits"}, "train": {"steps": 5}, "probes": {"points": 2}})
    return root, run(cfg, root, quiet=True).path.name


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["sweep", "--help"],
        ["runs", "ls", "-s", "{store}"],
        ["runs", "show", "{run}", "-s", "{store}"],
        ["sweep", "status", "{store}"],
        ["data", "list"],
    ],
    ids=lambda args: " ".join(a for a in args if "{" not in a),
)
def test_reading_commands_import_no_torch(store, args):
    root, digest = store
    args = [a.format(store=root, run=digest) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY")][-1].split()
    assert line[1] == "0", done.stderr
    assert line[2] == "-", f"learnscope {' '.join(args)} imported {line[2]}"


def test_study_list_imports_no_torch():
    """`study list` reads every study's scales, axes and options (pandas comes with the study modules'
    analysis; matplotlib only where a figure is drawn; torch, scipy and numba only with their runs)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "study", "list"], capture_output=True, text=True, timeout=120
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY")][-1].split()
    assert line[1] == "0", done.stderr
    assert "neural_collapse" in done.stdout and "axes (tiny): model.depth=8,12" in done.stdout
    heavy = set(line[2].split(","))
    assert not heavy & {"torch", "scipy", "numba", "matplotlib"}, f"learnscope study list imported {line[2]}"


NUMPY_ONLY = [
    "learnscope.config",
    "learnscope.store",
    "learnscope.theory.double_descent",
    "learnscope.runs.committee.ode",
    "learnscope.runs.committee.model",
    "learnscope.runs.committee.gaussian_integrals",
    "learnscope.runs.committee.kernels",
]


@pytest.mark.parametrize("module", NUMPY_ONLY)
def test_numpy_only_modules_import_without_torch(module):
    """The pure numerics (and the config and store) import without torch, as docs/architecture.md says."""
    probe = (
        f"import sys, {module}; print(','.join(m for m in ('torch', 'pandas') if m in sys.modules) or '-')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "-", f"import {module} imported {done.stdout.strip()}"
