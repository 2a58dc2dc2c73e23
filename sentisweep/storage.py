"""Atomic writes: temp file + rename, so a crash never leaves a half-written file that
reads as valid."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentisweep.layout import DRIVER_LOCK


def aside(target: Path, what: str) -> Path:
    """A fresh name beside `target` for what is written there first and renamed onto it. Not
    tempfile's: mkstemp and mkdtemp make 0600 files and 0700 folders whatever the umask, and the
    rename kept that, so results or an export written in a container as root, or by a cluster's
    pod as another user, could not be read by the user beside them."""
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.{what}"


def umask_safetensors(folder: str | Path) -> None:
    """Give a saved model's *.safetensors the mode any other file in `folder` gets. safetensors 0.8
    writes them through a temp file that is 0600 whatever the umask (safetensors/safetensors#782; its
    fix, #789, unreleased): a checkpoint or export written in a container could not be loaded by the
    user beside it, though its config.json could be read. The folder was made under the umask, so
    its mode less the execute bits is what the umask gives a file (0755 -> 0644); read, not set,
    because Python reads the umask only by setting it, for every thread at once."""
    mode = Path(folder).stat().st_mode & 0o666
    for file in Path(folder).glob("*.safetensors"):
        file.chmod(mode)


def driver_running(run: str | Path) -> bool:
    """Whether a driver runs the run in folder `run` now: it holds `<run>/.driver.lock` (a flock,
    probed here with a shared lock and let go at once). False in object storage (no locks there),
    where there is no lock file, and in a folder that takes no locks."""
    if is_remote(str(run)):
        return False
    try:
        with open(Path(run) / DRIVER_LOCK) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no such file; a folder that takes no locks (the driver says so when it runs)
        return False
    return False


@contextlib.contextmanager
def replaced_whole(target: Path, what: str) -> Iterator[Path]:
    """A fresh folder to fill, which then takes `target`'s place: a reader sees the old folder or
    the new one, each whole (between the two renames, for a moment, neither), and a failure while
    filling leaves the old one as it was. A link is followed: the folder it names is replaced."""
    target = target.resolve() if target.is_symlink() else target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = aside(target, what)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = aside(target, "old")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_parquet_atomic(table: pa.Table | pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(path, "tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dir_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def is_remote(location: str | Path) -> bool:
    return "://" in str(location)


def filesystem(location: str | Path):
    """(pyarrow filesystem, path in it, prefix) of a local path or a URI (s3://, gs://,
    file://); prefix + a path is a location again. Endpoint and credentials of s3:// come from
    the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ..., or a web identity)."""
    import pyarrow.fs as pafs

    text = str(location)
    if is_remote(text):
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/"), text.split("://", 1)[0] + "://"
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()), ""


def exists(location: str | Path) -> bool:
    """A file or folder at a local path or URI."""
    import pyarrow.fs as pafs

    fs, path, _ = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def local_copy(location: str | Path, cache_root: str | Path) -> Path:
    """A local folder holding the files at `location`: the folder itself if it is local; else
    downloaded once into cache_root/remote/<hash of the URI> (a checkpoint in object storage,
    for predict and export)."""
    import hashlib

    import pyarrow.fs as pafs

    if not is_remote(location):
        return Path(location)
    target = Path(cache_root) / "remote" / hashlib.sha256(str(location).encode()).hexdigest()[:16]
    if not (target / ".complete").is_file():
        fs, path, _ = filesystem(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = aside(target, "download")
        partial.mkdir()
        pafs.copy_files(path, str(partial), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        (partial / ".complete").write_text(str(location))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)  # whole or not at all, as the atomic writes above
    return target


class Store:
    """Where a sweep's results live: a local folder, or a URI pyarrow understands (s3://,
    gs://, file://). Trials always run in a local folder; with a URI, the sweep layer
    uploads each trial's folder when it ends. Object stores write an object whole, so a
    remote write is atomic too."""

    def __init__(self, location: str):
        self.remote = is_remote(location)
        if not self.remote and Path(location).expanduser().resolve().is_file():
            raise ValueError(f"{location!r} is a file, not a folder")
        self.fs, self.base, prefix = filesystem(location)
        self.scheme = prefix.removesuffix("://")

    def path(self, *parts: str) -> str:
        """The filesystem path (what pyarrow and Ray Tune's storage_filesystem take)."""
        return "/".join([self.base, *parts])

    def uri(self, *parts: str) -> str:
        """What to show a person (and what a later command takes as --storage)."""
        return f"{self.scheme}://{self.path(*parts)}" if self.remote else self.path(*parts)

    def exists(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_frame(self, *parts: str) -> pd.DataFrame:
        return pq.read_table(self.path(*parts), filesystem=self.fs).to_pandas()

    def write_frame(self, frame: pd.DataFrame, *parts: str) -> str:
        return self.write_table(pa.Table.from_pandas(frame, preserve_index=False), *parts)

    def write_table(self, table: pa.Table, *parts: str) -> str:
        """A Parquet file, whole (its schema's metadata kept)."""
        if not self.remote:
            return str(write_parquet_atomic(table, self.path(*parts)))
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as stream:
            pq.write_table(table, stream)
        return self.uri(*parts)

    def is_file(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.File

    def append_line(self, line: str, *parts: str) -> list[str]:
        """Add a line to a small text file (read, add, write whole: an object store has no
        append) and return all its lines."""
        lines = self.read_lines(*parts) + [line]
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as stream:
            stream.write(("\n".join(lines) + "\n").encode())
        return lines

    def read_lines(self, *parts: str) -> list[str]:
        if not self.exists(*parts):
            return []
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return stream.read().decode().splitlines()

    def read_json(self, *parts: str):
        """A small JSON file, parsed; None where there is none."""
        lines = self.read_lines(*parts)
        return json.loads("\n".join(lines)) if lines else None

    def put_file(self, local_file: str | Path, *parts: str) -> str:
        return self.write_bytes(Path(local_file).read_bytes(), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """A small file, whole (written aside and renamed where local; an object is whole)."""
        if not self.remote:
            target = Path(self.path(*parts))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = aside(target, "tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            return str(target)
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as stream:
            stream.write(data)
        return self.uri(*parts)

    def get_file(self, local_file: str | Path, *parts: str) -> None:
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            data = stream.read()
        tmp = aside(Path(local_file), "tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local_file)

    def upload(self, local_dir: str | Path, *parts: str) -> None:
        import pyarrow.fs as pafs

        self.fs.create_dir(self.path(*parts), recursive=True)
        pafs.copy_files(str(local_dir), self.path(*parts), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
