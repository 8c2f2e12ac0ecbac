import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from learnscope.cli import main
from learnscope.config import Config

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Slow tests first: pytest-xdist hands tests out in this order, so the long ones start early on every
    worker and the short ones fill in around them (a long test last would run alone at the end). Tests
    marked `gpu` are skipped, with the reason, where torch sees no CUDA device."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:  # torch is imported only where such tests were collected
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="gpu: torch sees no CUDA device here (torch.cuda.is_available())")
            for item in gpu:
                item.add_marker(skip)


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n auto`), the machine's cores are shared among the workers: each
    worker's torch gets its share of threads, so two workers on two cores do not run four threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs of the test's own at `path` (mount options such as "size=320k" or "ro"; needs root and
    mount(2)), unmounted afterwards; the test is skipped, with the reason, where none can be mounted."""
    path.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command: a tmpfs (a real full or read-only disk) cannot be made here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path_factory, monkeypatch):
    """No test sees the developer's fetched data sets (`learnscope data fetch` into ~/.cache or
    $LEARNSCOPE_DATA): a config without `data.path` fails or reads what it does on a fresh machine."""
    monkeypatch.setenv("LEARNSCOPE_DATA", str(tmp_path_factory.getbasetemp() / "no-fetched-data"))


@pytest.fixture
def one_thread():
    """One torch thread for the test: for tiny models and problems, waking more threads costs more than the
    arithmetic (and on busy cores far more). Modules opt in with pytest.mark.usefixtures("one_thread")."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> Config:
    return tiny()


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """`plugin(name, source)`: write the module `name` into tmp_path, importable for this test (--plugin)."""

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))

    return write


def tiny() -> Config:
    """A few seconds of training: an MLP on digits, probes every 10 steps, checkpoints every 20."""
    return Config.from_dict(
        {
            "name": "tiny",
            "device": "cpu",
            "model": {"kind": "mlp", "width": 64},
            "train": {"steps": 60, "checkpoint_every": 20, "log_every": 7},
            "probes": {"schedule": ["every"], "every": 10},
        }
    )


def cli(*args: str, capsys) -> tuple[int, str, str]:
    """Run the `learnscope` command in-process: (exit code, stdout, stderr)."""
    sys.argv = ["learnscope", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
