"""Content digests of datasets: one streaming pass, and a stat cache so unchanged files cost a stat.

sha256 is the default because it matches `sha256sum` and object-store
checksums; blake3 is offered for very large data (it is multi-threaded).
The pass that hashes the bytes also yields the row count: Parquet's from its
footer, CSV's from a streaming parse fed by the very bytes being hashed.

The stat cache trusts an entry only when size, mtime, ctime, inode and device
all match *and* the file had not been modified within a second of being
hashed (git's "racy" rule): a write landing in the same timestamp tick as the
hash would otherwise go unseen. Remote objects are keyed by size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.data.storage import Location, Stat

__all__ = ["ALGORITHMS", "FILE", "ContentDigest", "StatCache", "digest_location"]

FILE = "file"  # the `fmt` of files that are hashed but hold no rows (label exports, mappings)
CHUNK = 8 << 20  # 8 MiB: large enough for hashlib to run at memory speed, small enough to bound RAM
RACY_NS = 1_000_000_000


def _sha256() -> hashlib._Hash:
    return hashlib.sha256()


def _blake3():
    import blake3

    return blake3.blake3(max_threads=blake3.blake3.AUTO)


ALGORITHMS: dict[str, Callable] = {"sha256": _sha256, "blake3": _blake3}


@dataclass(frozen=True)
class ContentDigest:
    digest: str  # "sha256:<hex>"
    size: int
    rows: int


class StatCache:
    """Persistent map: location key -> (stat, digest). A corrupt file is a silent miss."""

    VERSION = 1

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == self.VERSION:
                    self._entries = data.get("entries", {})
            except (OSError, ValueError):
                self._entries = {}

    def get(self, key: str, stat: Stat, algorithm: str, fmt: str) -> ContentDigest | None:
        entry = self._entries.get(f"{algorithm}:{fmt}:{key}")
        if not entry or entry.get("stat") != asdict(stat):
            return None
        # Remote objects have second-resolution mtimes and no inode: a wider window.
        window = RACY_NS if stat.inode else 3 * RACY_NS
        if stat.mtime_ns >= entry.get("hashed_at_ns", 0) - window:
            return None  # modified too close to hashing to trust the timestamp
        return ContentDigest(entry["digest"], entry["size"], entry["rows"])

    def put(self, key: str, stat: Stat, algorithm: str, fmt: str, value: ContentDigest,
            hashed_at_ns: int) -> None:
        with self._lock:
            self._entries[f"{algorithm}:{fmt}:{key}"] = {
                "stat": asdict(stat), "hashed_at_ns": hashed_at_ns, **asdict(value)}
            self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            atomic_write_text(self.path, json.dumps({"version": self.VERSION,
                                                     "entries": self._entries}, sort_keys=True))
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written is only slower


def digest_location(location: Location, fmt: str, algorithm: str = "sha256",
                    cache: StatCache | None = None) -> ContentDigest:
    """Digest, size and row count of one dataset; raises OSError/ValueError on bad input."""
    stat = location.stat()
    if cache is not None:
        hit = cache.get(location.key, stat, algorithm, fmt)
        if hit is not None:
            return hit
    started = time.time_ns()
    if fmt == "csv":
        value = _digest_csv(location, algorithm)
    elif fmt == FILE:  # a non-tabular file (a label export, a mapping): bytes only
        value = _digest_bytes(location, algorithm)
    elif location.local is not None:
        # The footer read (and, in a fresh process, pyarrow's import: ~0.25 s) runs in a
        # thread while this one hashes; hashlib releases the GIL, so the cost is hidden.
        rows = _Background(_parquet_rows, location)
        try:
            value = _digest_bytes(location, algorithm)
        finally:
            rows.thread.join()
        value = ContentDigest(value.digest, value.size, rows.result())
    else:
        value = _digest_bytes(location, algorithm)
        value = ContentDigest(value.digest, value.size, _parquet_rows(location))
    after = location.stat()
    if after != stat:
        raise ValueError(f"{location.uri} changed while it was being hashed; try again")
    if cache is not None:
        cache.put(location.key, stat, algorithm, fmt, value, started)
    return value


class _Background:
    """Run `fn(*args)` in a thread; `result()` returns its value or raises its exception."""

    def __init__(self, fn: Callable, *args) -> None:
        self._value = None
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

        self.thread = threading.Thread(target=work, name="buildenv-rows", daemon=True)
        self.thread.start()

    def result(self):
        self.thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _digest_bytes(location: Location, algorithm: str) -> ContentDigest:
    hasher = ALGORITHMS[algorithm]()
    size = 0
    label = f"hash {location.uri}"
    if location.local is not None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        with progress.task(label, unit="bytes") as bar, \
                open(location.local, "rb", buffering=0) as handle:
            bar.total = os.fstat(handle.fileno()).st_size
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while n := handle.readinto(view):
                hasher.update(view[:n])
                size += n
                bar.advance(n)
    else:
        with progress.task(label, unit="bytes") as bar, location.open() as stream:
            while True:
                chunk = stream.read_buffer(CHUNK)
                if chunk.size == 0:
                    break
                hasher.update(memoryview(chunk))
                size += chunk.size
                bar.advance(chunk.size)
    return ContentDigest(f"{algorithm}:{hasher.hexdigest()}", size, 0)


def _parquet_rows(location: Location) -> int:
    from buildenv.data.formats import FORMATS

    return FORMATS["parquet"].count_rows(_Random(location))


class _Random:
    """A location as the formats' `Bytes`: opened for random access each time."""

    def __init__(self, location: Location):
        self.location = location

    def open(self):
        return self.location.open_random()


class _HashingReader:
    """A file object that hashes every byte it hands to the CSV parser."""

    def __init__(self, stream, hasher, bar: progress.Task | None = None):
        self._stream = stream
        self._hasher = hasher
        self._bar = bar
        self.size = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        # pyarrow streams read everything with no argument; a negative size is an error
        data = self._stream.read() if n is None or n < 0 else self._stream.read(n)
        self._hasher.update(data)
        self.size += len(data)
        if self._bar is not None:
            self._bar.advance(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _digest_csv(location: Location, algorithm: str) -> ContentDigest:
    """Hash and count rows in one pass: the CSV reader parses the very bytes being hashed."""
    from buildenv.data.formats import FORMATS

    hasher = ALGORITHMS[algorithm]()
    total = os.path.getsize(location.local) if location.local is not None else None
    with progress.task(f"hash {location.uri}", total, "bytes") as bar, location.open() as stream:
        reader = _HashingReader(stream, hasher, bar)
        rows = FORMATS["csv"].count_stream_rows(reader)  # type: ignore[attr-defined]
        reader.read()  # the parser may stop before EOF on a trailing newline
    return ContentDigest(f"{algorithm}:{hasher.hexdigest()}", reader.size, rows)
