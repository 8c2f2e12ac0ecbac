"""`learnscope data fetch NAME`: the official CIFAR-10/100, MNIST and Fashion-MNIST files, downloaded once
into a data directory and checked against the MD5 sums recorded here, so that a config with `data.kind =
"cifar10"` and no `data.path` runs on the same bytes on every machine (docs/data.md).

Why it works the way it does:

- The checksums are those torchvision's dataset classes record for the same official archives; a file is
  used only if its MD5 matches, whatever server or `--mirror` it came from. MD5 is enough here: it guards
  against corruption and wrong files, and no one can make a second file with the MD5 of a fixed official one
  (plain-http mirrors are safe for the same reason).
- Nothing that looks complete is ever half-written: a download goes to `NAME.part` (a name no loader reads),
  is renamed only once complete and verified, and is deleted when its checksum is wrong (resuming a wrong file
  could never make it right). An archive is unpacked into a hidden temporary folder and renamed. The marker
  `.verified` is written last, and only the marker is trusted: by `data list`, and by the loaders, which fall
  back to a fetched copy only where it is present and every file it lists has the size it records.
- Downloads resume: an interrupted `.part` is continued with an HTTP Range request where the server answers
  206, and started again from zero where it answers 200 (it ignores Range). Transient failures are retried a
  few times in the same command; a failure that outlasts them is one line (`DataError`), the `.part` kept for
  the next attempt.
- Two processes fetching one data set (a Slurm array whose every job runs `data fetch`) do not write the same
  `.part`: the data set's folder is locked (flock), the second waits and then finds the copy verified.

The module itself imports no torch: only the standard library, the progress bar of `ui` and the package's
leaves (importing it still runs `learnscope.data`'s `__init__`, which registers the data kinds).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from .atomic import atomic_text, directory_lock, fsync_dir, fsync_file
from .errors import DataError, describe_os_error
from .ui import notice, progress_bar
from .version import __version__

__all__ = [
    "DATASETS",
    "MARKER",
    "PART_SUFFIX",
    "Remote",
    "Source",
    "data_dir",
    "fetch",
    "fetch_hint",
    "fetched_path",
    "status",
]

ENV = "LEARNSCOPE_DATA"
MARKER = ".verified"  # JSON, written last: what `data list` and the loaders trust
PART_SUFFIX = ".part"  # an incomplete download; no loader reads it
LOCK = ".lock"  # only where directories cannot be locked (see _locked)

# Network behaviour. Module-level so tests can shorten the waits (they never need the internet).
TIMEOUT_S = 60.0  # a server silent this long is treated as gone (the attempt is retried)
ATTEMPTS = 3  # per URL, each resuming what the last one left
RETRY_WAIT_S = 2.0  # times the attempt number, between attempts
CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """One official file: its name (the same on every mirror) and its MD5 as torchvision records it."""

    name: str
    md5: str


@dataclass(frozen=True)
class Source:
    """Where a data set comes from and what it becomes on disk.

    `mirrors` are base URLs tried in order (each + the file name); `folder` is the folder an archive holds,
    unpacked for the loader (CIFAR's python batches), or None where the downloaded files are what the loader
    reads (MNIST's IDX .gz files)."""

    files: tuple[Remote, ...]
    mirrors: tuple[str, ...]
    folder: str | None = None


# The official files and their MD5 sums, as torchvision's CIFAR10/CIFAR100/MNIST/FashionMNIST classes record
# them (the t10k MNIST sums also match the files bundled in data/bundled/mnist). Tests replace entries of this
# dict (monkeypatch.setitem) with archives of their own; nothing else overrides a checksum.
DATASETS: dict[str, Source] = {
    "cifar10": Source(
        files=(Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        folder="cifar-10-batches-py",
    ),
    "cifar100": Source(
        files=(Remote("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        folder="cifar-100-python",
    ),
    "mnist": Source(
        files=(
            Remote("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            Remote("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            Remote("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            Remote("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        # yann.lecun.com often refuses or times out; torchvision's own mirror comes first.
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion_mnist": Source(
        files=(
            Remote("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            Remote("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            Remote("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            Remote("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


# --- where data lives ---------------------------------------------------------------------------------------


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: `explicit` (--dir), else $LEARNSCOPE_DATA, else the user's cache
    ($XDG_CACHE_HOME or ~/.cache) / learnscope/data. Loaders look only where `data_dir()` points."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"  # the XDG spec ignores relative
    return base / "learnscope" / "data"


def data_dir_origin() -> str:
    """Where `data_dir()` comes from, in words (for `data list`)."""
    if os.environ.get(ENV):
        return f"${ENV}"
    return "default: set LEARNSCOPE_DATA to change it"


def _source(name: str) -> Source:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r} to fetch (allowed: {', '.join(DATASETS)})")
    return DATASETS[name]


def _loader_path(name: str, root: Path) -> Path:
    """What a loader reads: CIFAR's batch folder, or the folder of the IDX files."""
    folder = _source(name).folder
    return root / name / folder if folder else root / name


def fetch_hint(name: str) -> str:
    """The clause a loader's error ends with where a data set is not fetched."""
    return f"run `learnscope data fetch {name}` (no verified copy in {data_dir()})"


# --- what is there ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """`state`: verified | not fetched | incomplete (an interrupted fetch, or files changed since)."""

    name: str
    state: str
    path: Path
    detail: str = ""


def _check_marker(name: str, root: Path) -> str | None:
    """None where the copy is verified (the marker is there, for the files this version checks, and every file
    it lists has the recorded size), else why not."""
    spec, folder = _source(name), root / name
    try:
        marker = json.loads((folder / MARKER).read_text())
    except FileNotFoundError:
        return "not fetched"
    except (OSError, ValueError) as e:
        return f"unreadable {MARKER} ({e})"
    if not isinstance(marker, dict) or marker.get("files") != {r.name: r.md5 for r in spec.files}:
        return f"{MARKER} lists other files than this version of learnscope checks"
    contents = marker.get("contents")
    if not isinstance(contents, dict) or not contents:
        return f"{MARKER} lists no files"
    for rel, size in contents.items():
        try:
            now = (folder / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
        if now != size:
            return f"{rel} has {now} bytes, {size} when verified"
    return None


def status(name: str, root: str | Path | None = None) -> Status:
    """The state of one data set in the data directory (a few stats: no file is hashed)."""
    root = data_dir(root)
    problem = _check_marker(name, root)
    if problem is None:
        return Status(name, "verified", _loader_path(name, root))
    folder = root / name
    if problem != "not fetched":
        return Status(name, "incomplete", folder, problem)
    left = sorted(p for p in folder.iterdir() if p.name != LOCK) if folder.is_dir() else []
    if not left:  # nothing, or only the folder of a fetch that failed before its first byte
        return Status(name, "not fetched", folder)
    held = sum(p.stat().st_size for p in left if p.name.endswith(PART_SUFFIX))
    shown = f"{held / 1e6:.1f} MB" if held >= 1e6 else f"{held / 1e3:.0f} kB"
    detail = f"interrupted, {shown} downloaded" if held else "interrupted"
    return Status(name, "incomplete", folder, detail)


def fetched_path(name: str, root: str | Path | None = None) -> Path | None:
    """The verified copy a loader reads (CIFAR's batch folder, MNIST's IDX folder), or None."""
    root = data_dir(root)
    return _loader_path(name, root) if _check_marker(name, root) is None else None


# --- fetching -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    name: str
    path: Path  # what the loader reads
    downloaded: bool  # False: it was already there, verified


def fetch(
    name: str, root: str | Path | None = None, mirror: str | None = None, quiet: bool = False
) -> Fetched:
    """Download, verify and unpack one data set into `root` (default `data_dir()`); a verified copy is left
    as it is. `mirror`: a base URL serving the official file names, used instead of the official locations."""
    spec = _source(name)
    root = data_dir(root)
    if mirror is not None and not re.match(r"(https?|file)://", mirror):
        raise DataError(f"--mirror {mirror!r}: expected a base URL (http://, https:// or file://)")
    if _check_marker(name, root) is None:  # before any write: a read-only directory with a copy is fine
        return Fetched(name, _loader_path(name, root), downloaded=False)
    folder = root / name
    _make_writable_folder(folder)
    with _locked(folder, name):
        if _check_marker(name, root) is None:  # another process fetched it while this one waited
            return Fetched(name, _loader_path(name, root), downloaded=False)
        (folder / MARKER).unlink(missing_ok=True)  # a stale marker must not outlive what it vouched for
        urls = (mirror,) if mirror else spec.mirrors
        sources = {}
        for remote in spec.files:
            sources[remote.name] = _download(remote, urls, folder, quiet)
        if spec.folder is not None:
            (archive,) = spec.files
            contents = _unpack(folder / archive.name, spec.folder, folder)
        else:
            contents = {r.name: (folder / r.name).stat().st_size for r in spec.files}
        marker = {
            "dataset": name,
            "files": {r.name: r.md5 for r in spec.files},
            "sources": sources,
            "contents": contents,
            "learnscope": __version__,
            "fetched": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_text(folder / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if spec.folder is not None:  # unpacked and vouched for: the 170 MB archive is no longer needed
            for remote in spec.files:
                (folder / remote.name).unlink(missing_ok=True)
    return Fetched(name, _loader_path(name, root), downloaded=True)


def _make_writable_folder(folder: Path) -> None:
    """Create the data set's folder and prove it writable, so a read-only or misplaced data directory is one
    line before any download rather than an error after one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataError(
            f"cannot write the data directory: {describe_os_error(e)} "
            f"(choose a writable one with --dir or ${ENV})"
        ) from e


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """The data set's folder locked while fetching (`atomic.directory_lock`): a second fetch waits for the
    first, then finds its copy verified."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(directory_lock(folder, LOCK))
        except BlockingIOError:
            notice(f"another process is fetching {name} into {folder}; waiting for it")
            held.enter_context(directory_lock(folder, LOCK, block=True))
        yield


class _Retry(Exception):
    """A failure worth another attempt at the same URL (a dropped connection, a timeout, a 5xx)."""


class _NextMirror(Exception):
    """A failure the same URL will repeat (404, 403): try the next mirror."""


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(remote: Remote, urls: tuple[str, ...], folder: Path, quiet: bool) -> str:
    """Fetch one file to `folder/name`, verified; returns the URL it came from. A file already there under its
    final name was verified when it was renamed, but is hashed again (a user may have replaced it)."""
    target, part = folder / remote.name, folder / (remote.name + PART_SUFFIX)
    if target.is_file():
        if _md5_of(target) == remote.md5:
            return "(already downloaded)"
        target.unlink()
    failure, url = "", ""
    for base in urls:
        url = base.rstrip("/") + "/" + remote.name
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(RETRY_WAIT_S * attempt)
            try:
                digest = _get(url, part, quiet)
            except _Retry as e:
                failure = str(e)
                continue
            except _NextMirror as e:
                failure = str(e)
                break
            if digest != remote.md5:
                part.unlink(missing_ok=True)
                raise DataError(
                    f"{remote.name} from {url}: checksum mismatch, MD5 {digest} but the official file has "
                    f"{remote.md5} (the download was deleted; check the source, then fetch again)"
                )
            fsync_file(part)
            os.replace(part, target)
            fsync_dir(folder)
            return url
    kept = part.stat().st_size if part.exists() else 0
    resume = f"{kept} bytes kept in {part.name}, " if kept else ""
    raise DataError(
        f"{remote.name}: download failed from {url}: {failure} ({resume}run the same command again"
        f"{' to resume' if kept else ''})"
    )


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _get(url: str, part: Path, quiet: bool) -> str:
    """One attempt: continue `part` from its size (Range), or start it again where the server sends the whole
    file; returns the MD5 of the complete file. Network failures are `_Retry`/`_NextMirror`; failures to write
    (a full disk) are OSError, as anywhere."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"learnscope/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is as long as the file, or longer: it cannot be continued
            part.unlink()
            raise _Retry("the server cannot continue the partial download (416); starting again") from e
        if e.code >= 500 or e.code in (408, 429):
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise _NextMirror(f"HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, FileNotFoundError):  # a file:// mirror without the file: as a 404
            raise _NextMirror(f"not found: {reason.filename}") from e
        raise _Retry(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from e

    with response:
        digest = hashlib.md5(usedforsecurity=False)
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != offset:
                part.unlink()  # resumed elsewhere than asked: what it sends cannot be appended
                raise _Retry(
                    f"the server resumed at the wrong place ({response.headers.get('Content-Range')})"
                )
            with open(part, "rb") as f:  # what is already there is part of the checksum
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            mode = "ab"
        else:  # 200: the whole file (this server ignores Range), so the .part starts again
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, mode) as out, progress_bar(_kb(total or 0), _label(part), quiet) as bar:
            bar.update(_kb(done))
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # the connection dropped mid-file
                    raise _Retry(f"connection lost after {done} bytes ({type(e).__name__})") from e
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                bar.update(_kb(done))
    if total is not None and done != total:
        raise _Retry(f"connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _kb(n: int) -> int:
    return n // 1000


def _label(part: Path) -> str:
    return part.name.removesuffix(PART_SUFFIX).split(".")[0] + " kB"


def _unpack(archive: Path, folder_name: str, parent: Path) -> dict[str, int]:
    """Extract the archive's `folder_name/` into a hidden temporary folder, then rename it into place; returns
    {relative path: size} of what was unpacked. Only regular files inside `folder_name/` are accepted (no
    links, no absolute or `..` paths), though the archive's MD5 already vouches for it."""
    final = parent / folder_name
    for stale in parent.glob(f".{folder_name}.*.tmp"):  # left by a killed fetch (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{folder_name}.{os.getpid()}.tmp"
    tmp.mkdir()
    contents: dict[str, int] = {}
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for info in tar:
                    parts = PurePosixPath(info.name.removeprefix("./")).parts
                    if info.isdir() and parts and parts[0] == folder_name and ".." not in parts:
                        continue
                    if not info.isfile() or len(parts) < 2 or parts[0] != folder_name or ".." in parts:
                        raise DataError(
                            f"{archive}: unexpected member {info.name!r} (only files in {folder_name}/ are "
                            "unpacked); nothing was unpacked"
                        )
                    out = tmp.joinpath(*parts[1:])
                    out.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(info)
                    assert source is not None  # a regular file always has one
                    with source, open(out, "wb") as dest:
                        shutil.copyfileobj(source, dest)
                    fsync_file(out)
                    contents[PurePosixPath(folder_name, *parts[1:]).as_posix()] = out.stat().st_size
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise DataError(f"{archive}: cannot unpack ({e}); delete it and fetch again") from e
        if not contents:
            raise DataError(f"{archive}: holds no files in {folder_name}/")
        fsync_dir(tmp)
        if final.exists():  # an unverified leftover (renamed, then killed before the marker): replaced
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return contents
