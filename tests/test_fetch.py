"""`learnscope data fetch | list` (learnscope/fetch.py) against a local HTTP server of the test's own, on
127.0.0.1: it serves archives in the official formats written here (a tiny cifar-10-python.tar.gz, IDX .gz
files), honours Range requests (206) or ignores them (200), and can drop a connection or vanish mid-file. The
official checksums are replaced for these files by `monkeypatch.setitem(fetch.DATASETS, ...)`, the one
override there is; `urlopen` refuses any host but 127.0.0.1, so no test can reach the internet."""

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import struct
import tarfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from learnscope import fetch
from learnscope.data.files import load_cifar
from learnscope.fetch import MARKER, PART_SUFFIX, Remote, Source
from tests.conftest import cli, mounted_tmpfs
from tests.data.test_files import CIFAR_TEST, CIFAR_TRAIN, cifar_batch

ARCHIVE = "cifar-10-python.tar.gz"
IDX_FILES = [r.name for r in fetch.DATASETS["mnist"].files]


# --- the server ---------------------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    server: "FileServer"

    def do_GET(self) -> None:
        name = urllib.parse.urlparse(self.path).path.lstrip("/")
        asked = self.headers.get("Range")
        data = self.server.files.get(name)
        if data is None:
            self.server.log.append((name, asked, 404))
            self.send_error(404)
            return
        start, status = 0, 200
        if asked is not None and self.server.ranges:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", asked)[1]), 206
            if start >= len(data):
                self.server.log.append((name, asked, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.server.log.append((name, asked, status))
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, vanish = self.server.cut.pop(name, None), self.server.vanish.pop(name, None)
        if cut is None and vanish is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[: cut if cut is not None else vanish])
        self.wfile.flush()
        if vanish is not None:  # stop listening before this connection closes: a retry finds no server
            self.server.stop()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes) at http://127.0.0.1:PORT/NAME; `log` holds (name, Range, status)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.ranges = dict(files), ranges
        self.log: list[tuple[str, str | None, int]] = []
        self.cut: dict[str, int] = {}  # the next GET of a name sends this many bytes, then hangs up
        self.vanish: dict[str, int] = {}  # ... then the server stops listening for good
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes], ranges: bool = True) -> FileServer:
        servers.append(FileServer(files, ranges))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A fresh data directory, no proxy, short waits, and no host but 127.0.0.1."""
    monkeypatch.setenv("LEARNSCOPE_DATA", str(tmp_path / "data"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(fetch, "TIMEOUT_S", 10.0)
    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        host = urllib.parse.urlparse(request.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {request.full_url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


# --- archives in the official formats -----------------------------------------------------------------------


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar10_archive(seed: int = 0) -> tuple[bytes, dict[str, dict]]:
    """A cifar-10-python.tar.gz as the official one is laid out (5 train batches, a test batch, the meta and
    readme files), 3 images a batch; returns the archive and the batch dicts."""
    rng = np.random.default_rng(seed)
    batches = {m: cifar_batch(rng, 3, "cifar10") for m in CIFAR_TRAIN["cifar10"] + CIFAR_TEST["cifar10"]}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {m: pickle.dumps(b, protocol=2) for m, b in batches.items()}
        members["batches.meta"] = pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2)
        members["readme.html"] = b"<p>"
        for member, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), batches


def use_cifar10(monkeypatch, archive: bytes, server: "FileServer") -> None:
    """The test's archive is "the official file": its checksum, served from `server`."""
    source = Source((Remote(ARCHIVE, md5(archive)),), (server.url,), folder="cifar-10-batches-py")
    monkeypatch.setitem(fetch.DATASETS, "cifar10", source)


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def mnist_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    images = {"train": rng.integers(0, 256, (6, 28, 28)), "t10k": rng.integers(0, 256, (4, 28, 28))}
    out = {}
    for split, x in images.items():
        out[f"{split}-images-idx3-ubyte.gz"] = idx_gz(x)
        out[f"{split}-labels-idx1-ubyte.gz"] = idx_gz(np.arange(len(x)) % 10)
    return out


def data_root() -> Path:
    return Path(os.environ["LEARNSCOPE_DATA"])


def leftovers(folder: Path) -> list[str]:
    """What a failed fetch left in a data set's folder that could look like data."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- the cases ----------------------------------------------------------------------------------------------


def test_fetch_unpacks_verifies_and_a_config_without_path_trains_on_it(tmp_path, serve, monkeypatch, capsys):
    archive, batches = cifar10_archive()
    server = serve({ARCHIVE: archive})
    use_cifar10(monkeypatch, archive, server)
    code, out, _ = cli("data", "list", capsys=capsys)
    assert code == 0 and re.search(r"cifar10\s+not fetched\s+learnscope data fetch cifar10", out)

    code, out, err = cli("data", "fetch", "cifar10", capsys=capsys)  # no terminal: no bar for a short fetch
    folder = data_root() / "cifar10"
    assert code == 0, err
    assert out.strip() == f"cifar10: fetched and verified: {folder / 'cifar-10-batches-py'}"
    assert leftovers(folder) == [MARKER, "cifar-10-batches-py"]  # the archive is gone once unpacked
    marker = json.loads((folder / MARKER).read_text())
    assert marker["files"] == {ARCHIVE: md5(archive)} and marker["sources"] == {ARCHIVE: server.url + ARCHIVE}
    # Read back as the loader reads it, against the batches written above.
    arrays = load_cifar(fetch.fetched_path("cifar10"), "cifar10")
    rows = np.concatenate([batches[m][b"data"] for m in CIFAR_TRAIN["cifar10"]])
    assert np.array_equal(arrays["x_train"], rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert arrays["y_test"].tolist() == batches["test_batch"][b"labels"]

    code, out, _ = cli("data", "list", capsys=capsys)
    assert re.search(rf"cifar10\s+verified\s+{re.escape(str(folder / 'cifar-10-batches-py'))}", out)
    assert cli("data", "fetch", "cifar10", capsys=capsys)[1].startswith("cifar10: already fetched")
    assert len(server.log) == 1  # the verified copy was not downloaded again

    config = tmp_path / "cifar.toml"
    config.write_text(
        'device = "cpu"\n[data]\nkind = "cifar10"\n[model]\nkind = "mlp"\nwidth = 8\n'
        "[train]\nsteps = 3\nbatch_size = 5\n[probes]\npoints = 2\n"
    )
    code, out, err = cli("run", config, "--quiet", "--store", tmp_path / "runs", capsys=capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    read = {Path(entry["path"]).name for entry in json.loads((run_dir / "inputs.json").read_text())}
    assert read == set(CIFAR_TRAIN["cifar10"] + CIFAR_TEST["cifar10"])
    assert "path" not in json.loads((run_dir / "config.json").read_text())["config"]["data"]


@pytest.mark.parametrize("ranges", [True, False], ids=["206 resumes", "200 starts again"])
def test_a_dropped_connection_is_resumed_with_range_or_started_again(serve, monkeypatch, capsys, ranges):
    archive, _ = cifar10_archive()
    server = serve({ARCHIVE: archive}, ranges=ranges)
    server.cut[ARCHIVE] = 20_000
    use_cifar10(monkeypatch, archive, server)
    code, _, err = cli("data", "fetch", "cifar10", "--quiet", capsys=capsys)
    assert code == 0, err
    assert server.log == [(ARCHIVE, None, 200), (ARCHIVE, "bytes=20000-", 206 if ranges else 200)]
    assert fetch.status("cifar10").state == "verified"


def test_a_checksum_mismatch_exits_2_and_leaves_nothing_that_looks_complete(serve, monkeypatch, capsys):
    good = mnist_files()
    wrong = dict(good, **{"t10k-labels-idx1-ubyte.gz": idx_gz(np.zeros(4))})
    server = serve(wrong)
    # The first mirror lacks the files (404): the next one is tried, as for yann.lecun.com's mirror.
    remotes = tuple(Remote(name, md5(good[name])) for name in IDX_FILES)
    monkeypatch.setitem(fetch.DATASETS, "mnist", Source(remotes, (server.url + "gone/", server.url)))

    code, _, err = cli("data", "fetch", "mnist", "--quiet", capsys=capsys)
    line = one_line(err)
    assert code == 2 and "t10k-labels-idx1-ubyte.gz" in line and "checksum mismatch" in line
    assert md5(wrong["t10k-labels-idx1-ubyte.gz"]) in line and md5(good["t10k-labels-idx1-ubyte.gz"]) in line
    # The three verified files stay (renamed only when verified); the wrong one is neither there nor a .part.
    assert leftovers(data_root() / "mnist") == sorted(IDX_FILES[:3])
    assert fetch.fetched_path("mnist") is None and fetch.status("mnist").state == "incomplete"

    server.files["t10k-labels-idx1-ubyte.gz"] = good["t10k-labels-idx1-ubyte.gz"]
    server.log.clear()
    assert cli("data", "fetch", "mnist", "--quiet", capsys=capsys)[0] == 0
    assert [(name, status) for name, _, status in server.log] == [
        ("gone/t10k-labels-idx1-ubyte.gz", 404),
        ("t10k-labels-idx1-ubyte.gz", 200),
    ]
    assert fetch.fetched_path("mnist") == data_root() / "mnist"


def test_a_server_that_vanishes_is_one_line_and_a_rerun_resumes(serve, monkeypatch, capsys):
    archive, _ = cifar10_archive()
    first = serve({ARCHIVE: archive})
    first.vanish[ARCHIVE] = 30_000
    use_cifar10(monkeypatch, archive, first)
    code, _, err = cli("data", "fetch", "cifar10", "--quiet", "--mirror", first.url, capsys=capsys)
    line = one_line(err)
    assert code == 2 and line.startswith(f"error: {ARCHIVE}: download failed from {first.url}{ARCHIVE}")
    assert "30000 bytes kept" in line and "run the same command again to resume" in line
    folder = data_root() / "cifar10"
    assert leftovers(folder) == [ARCHIVE + PART_SUFFIX] and fetch.status("cifar10").state == "incomplete"
    assert cli("data", "list", capsys=capsys)[1].count("interrupted") == 1

    second = serve({ARCHIVE: archive})
    code, _, err = cli("data", "fetch", "cifar10", "--quiet", "--mirror", second.url, capsys=capsys)
    assert code == 0, err
    assert second.log == [(ARCHIVE, "bytes=30000-", 206)]
    assert leftovers(folder) == [MARKER, "cifar-10-batches-py"]


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory no one may write to: by its mode, or as root (whom modes do not stop) a read-only tmpfs."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with mounted_tmpfs(path, "ro,size=64k"):
        yield path


def test_a_read_only_data_directory_is_one_line_before_any_download(
    serve, monkeypatch, capsys, read_only_dir
):
    archive, _ = cifar10_archive()
    server = serve({ARCHIVE: archive})
    use_cifar10(monkeypatch, archive, server)
    code, _, err = cli("data", "fetch", "cifar10", "--dir", read_only_dir, capsys=capsys)
    line = one_line(err)
    assert code == 2 and "cannot write the data directory" in line and str(read_only_dir) in line
    assert server.log == []


def test_a_wrong_file_from_a_mirror_is_refused_and_a_run_without_path_says_how_to_fetch(
    tmp_path, serve, capsys
):
    """No override here: the wrong file is checked against the official CIFAR-10 MD5 itself."""
    wrong, _ = cifar10_archive(seed=1)
    server = serve({ARCHIVE: wrong})
    code, _, err = cli("data", "fetch", "cifar10", "--quiet", "--mirror", server.url, capsys=capsys)
    line = one_line(err)
    assert code == 2 and "checksum mismatch" in line and ARCHIVE in line
    assert md5(wrong) in line and "c58f30108f718f92721af3b95e74349a" in line
    assert leftovers(data_root() / "cifar10") == []

    config = tmp_path / "cifar.toml"
    config.write_text('device = "cpu"\n[data]\nkind = "cifar10"\n[train]\nsteps = 2\n')
    code, _, err = cli("run", config, "--quiet", "--store", tmp_path / "runs", capsys=capsys)
    line = one_line(err)
    assert code == 2 and "run `learnscope data fetch cifar10`" in line and str(data_root()) in line


def test_mnist_without_path_keeps_the_bundled_test_split_and_finds_a_fetched_training_split(
    serve, monkeypatch, capsys
):
    from learnscope.config import Config
    from learnscope.data import build_data
    from learnscope.data.real import BUNDLED_MNIST
    from learnscope.inputs import recording_inputs

    def read(*overrides: str) -> set[Path]:
        with recording_inputs() as paths:
            build_data(Config().override("data=mnist", *overrides).data)
        return {p.parent for p in paths}

    with pytest.raises(Exception, match=r"run `learnscope data fetch mnist`"):
        read("data.train_prefix=train")
    files = mnist_files()
    server = serve(files)
    remotes = tuple(Remote(name, md5(files[name])) for name in IDX_FILES)
    monkeypatch.setitem(fetch.DATASETS, "mnist", Source(remotes, (server.url,)))
    assert cli("data", "fetch", "mnist", "-q", capsys=capsys)[0] == 0
    # A t10k-only config reads the bundled files as before (a run's inputs do not move); the rest the fetched.
    assert read("data.train_prefix=t10k", "data.split_at=5000") == {BUNDLED_MNIST.resolve()}
    assert read("data.train_prefix=train") == {(data_root() / "mnist").resolve()}


def test_a_changed_file_is_no_longer_trusted(serve, monkeypatch, capsys):
    files = mnist_files()
    server = serve(files)
    remotes = tuple(Remote(name, md5(files[name])) for name in IDX_FILES)
    monkeypatch.setitem(fetch.DATASETS, "fashion_mnist", Source(remotes, (server.url,)))
    assert cli("data", "fetch", "fashion_mnist", "-q", capsys=capsys)[0] == 0
    (data_root() / "fashion_mnist" / IDX_FILES[0]).write_bytes(b"truncated")
    found = fetch.status("fashion_mnist")
    assert found.state == "incomplete" and IDX_FILES[0] in found.detail
    assert fetch.fetched_path("fashion_mnist") is None
    server.log.clear()
    assert cli("data", "fetch", "fashion_mnist", "-q", capsys=capsys)[0] == 0  # only the changed file again
    assert server.log == [(IDX_FILES[0], None, 200)]


def test_an_archive_member_outside_its_folder_is_refused(serve, monkeypatch, capsys):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = buffer.getvalue()
    use_cifar10(monkeypatch, archive, serve({ARCHIVE: archive}))
    code, _, err = cli("data", "fetch", "cifar10", "-q", capsys=capsys)
    assert code == 2 and "unexpected member" in one_line(err)
    assert not (data_root().parent / "evil").exists() and fetch.status("cifar10").state != "verified"
    assert not list((data_root() / "cifar10").glob(".cifar-10-batches-py.*"))


def test_bad_names_and_mirrors_are_one_line(capsys):
    code, _, err = cli("data", "fetch", "mnist", "imagenet", capsys=capsys)
    assert code == 2 and "'imagenet'" in one_line(err) and not data_root().exists()
    code, _, err = cli("data", "fetch", "mnist", "--mirror", "mirror.example.org/mnist", capsys=capsys)
    assert code == 2 and "expected a base URL" in one_line(err)


def test_the_data_directory_is_dir_then_the_environment_then_the_user_cache(monkeypatch, tmp_path):
    assert fetch.data_dir(tmp_path / "x") == tmp_path / "x"
    assert fetch.data_dir() == data_root()
    monkeypatch.delenv("LEARNSCOPE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fetch.data_dir() == tmp_path / "cache" / "learnscope" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec says to ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch.data_dir() == tmp_path / "home" / ".cache" / "learnscope" / "data"


def test_the_recorded_mnist_test_split_sums_are_those_of_the_bundled_official_files():
    """The one check of the recorded sums against official bytes that ships with the repository."""
    from learnscope.data.real import BUNDLED_MNIST

    sums = {r.name: r.md5 for r in fetch.DATASETS["mnist"].files}
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5((BUNDLED_MNIST / name).read_bytes()) == sums[name]


def test_a_second_fetch_of_the_same_data_set_waits_for_the_first(serve, monkeypatch):
    import fcntl

    archive, _ = cifar10_archive()
    server = serve({ARCHIVE: archive})
    use_cifar10(monkeypatch, archive, server)
    folder = data_root() / "cifar10"
    folder.mkdir(parents=True)
    waiting = threading.Event()
    monkeypatch.setattr(fetch, "notice", lambda text: waiting.set())
    held = os.open(folder, os.O_RDONLY)  # as another process fetching it would hold it
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        worker = threading.Thread(target=fetch.fetch, args=("cifar10",), kwargs={"quiet": True})
        worker.start()
        assert waiting.wait(10)
        assert server.log == []  # it waits: nothing downloaded while the lock is held
    finally:
        os.close(held)
    worker.join(10)
    assert server.log == [(ARCHIVE, None, 200)] and fetch.status("cifar10").state == "verified"
