"""Content digests of datasets: one streaming pass, and a stat cache so unchanged files cost a stat.

sha256 is the default because it matches `sha256sum` and object-store
checksums; blake3 is offered for very large data (it is multi-threaded).
The pass that hashes the bytes also yields the row count: Parquet's from its
footer (`parquet_footer`), CSV's by counting the records of the very chunks being
hashed (`csv_rows`), on another core (`_CsvPass`); a large local CSV's in a child process
(`row_process`) while a CPU is free for it, so the hash shares no GIL with the count.

The stat cache trusts an entry only when size, mtime, ctime, inode and device
all match *and* the file had not been modified within a second of being
hashed (git's "racy" rule): a write landing in the same timestamp tick as the
hash would otherwise go unseen. Remote objects are keyed by size and mtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.data.lock import early_hash, row_process
from buildenv.data.lock.csv_rows import RowCounter
from buildenv.data.lock.parquet_footer import footer_rows
from buildenv.data.storage import Location, Stat

__all__ = ["ALGORITHMS", "FILE", "ContentDigest", "StatCache", "compute_digest", "digest_location",
           "parquet_rows", "prefetch"]

FILE = "file"  # the `fmt` of files that are hashed but hold no rows (label exports, mappings)
CHUNK = 8 << 20  # 8 MiB: large enough for hashlib to run at memory speed, small enough to bound RAM
RACY_NS = 1_000_000_000
T = TypeVar("T")


def _sha256() -> hashlib._Hash:
    return hashlib.sha256()


class Hasher(Protocol):
    """What a digest needs of a hash object: hashlib's and blake3's both fit."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def _blake3() -> Hasher:
    # Deferred on purpose: only `--algorithm blake3` pays for loading the extension.
    import blake3

    return blake3.blake3(max_threads=blake3.blake3.AUTO)


ALGORITHMS: dict[str, Callable[[], Hasher]] = {"sha256": _sha256, "blake3": _blake3}


@dataclass(frozen=True)
class ContentDigest:
    digest: str  # "sha256:<hex>"
    size: int
    rows: int


class StatCache:
    """Persistent map: location key -> (stat, digest). A corrupt file is a silent miss.

    Each entry is one flat list, `[size, mtime_ns, ctime_ns, inode, device, hashed_at_ns,
    digest, digest size, rows]` (version 2): a relock parses and writes the whole cache, and
    nested objects cost twice the time (bench/bench_scale.py). Version 1 files (an object per
    entry) are read as well."""

    VERSION = 2

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == self.VERSION:
                    self._entries = data.get("entries", {})
                elif data.get("version") == 1:
                    self._entries = {key: _flat(entry)
                                     for key, entry in data.get("entries", {}).items()}
                    self._dirty = bool(self._entries)  # rewritten in this form
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                self._entries = {}

    @classmethod
    def shared(cls, path: Path) -> StatCache:
        """A read-only view of the cache at `path`, parsed once per process for as long as the
        file is unchanged: a read of a partitioned dataset or a table opens each of its files
        through a gate of its own, and parsing the whole cache for each file cost more than
        reading a small file. A rewritten cache (a new inode) is parsed again. Callers only
        `get` from it; a lock writes through a `StatCache` of its own."""
        try:
            info = os.stat(path)
            identity: tuple[int, ...] = (info.st_ino, info.st_size, info.st_mtime_ns,
                                         info.st_ctime_ns)
        except OSError:
            return cls(None)
        with _SHARED_LOCK:
            known = _SHARED.get(str(path))
            if known is not None and known[0] == identity:
                return known[1]
        cache = cls(path)
        with _SHARED_LOCK:
            _SHARED[str(path)] = (identity, cache)
        return cache

    def get(self, key: str, stat: Stat, algorithm: str, fmt: str) -> ContentDigest | None:
        entry = self._entries.get(f"{algorithm}:{fmt}:{key}")
        if type(entry) is not list or len(entry) != 9 or entry[0] != stat.size or \
                entry[1] != stat.mtime_ns or entry[2] != stat.ctime_ns or \
                entry[3] != stat.inode or entry[4] != stat.device:
            return None
        # Remote objects have second-resolution mtimes and no inode: a wider window.
        window = RACY_NS if stat.inode else 3 * RACY_NS
        if stat.mtime_ns >= entry[5] - window:
            return None  # modified too close to hashing to trust the timestamp
        return ContentDigest(entry[6], entry[7], entry[8])

    def put(self, key: str, stat: Stat, algorithm: str, fmt: str, value: ContentDigest,
            hashed_at_ns: int) -> None:
        with self._lock:
            self._entries[f"{algorithm}:{fmt}:{key}"] = [
                stat.size, stat.mtime_ns, stat.ctime_ns, stat.inode, stat.device, hashed_at_ns,
                value.digest, value.size, value.rows]
            self._dirty = True

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            # not fsynced: a cache lost to a crash costs a rehash, never a wrong digest (an
            # unreadable file is a miss); under load an fsync took longer than the relock's
            # own work (bench/bench_tables.py)
            # in the order the entries were read and added (sorting the keys cost as much
            # as writing them)
            atomic_write_text(self.path, json.dumps({"version": self.VERSION,
                                                     "entries": self._entries}),
                              durable=False)
            self._dirty = False
        except OSError:
            pass  # a cache that cannot be written is only slower


def _flat(entry: dict[str, Any]) -> list[Any]:
    """A version 1 entry (`{"stat": {...}, "hashed_at_ns", "digest", "size", "rows"}`) as a
    version 2 list."""
    stat = entry["stat"]
    return [stat["size"], stat["mtime_ns"], stat.get("ctime_ns", 0), stat.get("inode", 0),
            stat.get("device", 0), entry.get("hashed_at_ns", 0), entry["digest"],
            entry["size"], entry["rows"]]


# StatCache.shared: cache path -> (the file's identity when parsed, the parsed cache)
_SHARED: dict[str, tuple[tuple[int, ...], StatCache]] = {}
_SHARED_LOCK = threading.Lock()


def digest_location(location: Location, fmt: str, algorithm: str = "sha256",
                    cache: StatCache | None = None) -> ContentDigest:
    """Digest, size and row count of one dataset; raises OSError/ValueError on bad input."""
    stat = location.stat()
    if cache is not None:
        hit = cache.get(location.key, stat, algorithm, fmt)
        if hit is not None:
            return hit
    early = _take_prefetched(location, fmt, algorithm, stat)
    if early is not None:
        value, started = early
    else:
        started = time.time_ns()
        value = compute_digest(location, fmt, algorithm)
        if location.stat() != stat:
            raise ValueError(f"{location.uri} changed while it was being hashed; try again")
    if cache is not None:
        cache.put(location.key, stat, algorithm, fmt, value, started)
    return value


def compute_digest(location: Location, fmt: str, algorithm: str) -> ContentDigest:
    if fmt == "csv":
        return _digest_csv(location, algorithm)
    if fmt == FILE:  # a non-tabular file (a label export, a mapping): bytes only
        return _digest_bytes(location, algorithm)
    if location.local is not None:
        # The footer read runs in a thread while this one hashes; hashlib releases the GIL,
        # so its cost is hidden.
        rows = _Background(parquet_rows, location)
        try:
            value = _digest_bytes(location, algorithm)
        finally:
            rows.thread.join()
        return ContentDigest(value.digest, value.size, rows.result())
    value = _digest_bytes(location, algorithm)
    return ContentDigest(value.digest, value.size, parquet_rows(location))


# --- digests started before they are asked for ------------------------------------------------
#
# `buildenv lock` knows which files it will hash long before its imports, the environment's
# resolution and validation are done (a third of a second of Python). `prefetch` starts the
# hash of a file in a thread right away (`buildenv.cli.early`); `digest_location` then takes
# the result if the file's stat is still the one it was hashed under, and hashes anew if not.

# (location key, algorithm, format) -> the thread and, once it is done, (stat, digest, when)
_PREFETCHED: dict[tuple[str, str, str],
                  tuple[threading.Thread, list[tuple[Stat, ContentDigest, int]]]] = {}


def prefetch(location: Location, fmt: str, algorithm: str = "sha256",
             cache: StatCache | None = None) -> None:
    """Start digesting `location` in a background thread (errors are left to the caller that
    asks for the digest later: it hashes again and reports them)."""
    key = (location.key, algorithm, fmt)
    if key in _PREFETCHED or (_early_pass(location, fmt, algorithm)
                              and early_hash.pending(location.key)):
        return  # hashed already, or by the head start (taken by `digest_location`)
    box: list[tuple[Stat, ContentDigest, int]] = []

    def work() -> None:
        try:
            stat = location.stat()
            if cache is not None and cache.get(location.key, stat, algorithm, fmt) is not None:
                return  # the stat cache answers: nothing to hash
            started = time.time_ns()
            value = compute_digest(location, fmt, algorithm)
            if location.stat() == stat:
                box.append((stat, value, started))
        except Exception:
            pass

    thread = threading.Thread(target=work, name="buildenv-prefetch", daemon=True)
    thread.start()  # before it is handed out: a thread joined before its start raises
    _PREFETCHED[key] = (thread, box)


def _take_prefetched(location: Location, fmt: str, algorithm: str, stat: Stat
                     ) -> tuple[ContentDigest, int] | None:
    entry = _PREFETCHED.pop((location.key, algorithm, fmt), None)
    if entry is None:
        return _take_early_pass(location, fmt, algorithm, stat)
    thread, box = entry
    with progress.task(f"hash {location.uri}", stat.size, "bytes") as bar:
        thread.join()  # what is left of the hash is what this command waits for
        bar.advance(stat.size)
    if box and box[0][0] == stat:
        return box[0][1], box[0][2]
    return None


def _early_pass(location: Location, fmt: str, algorithm: str) -> bool:
    """Whether an `early_hash` pass (sha256 of the bytes alone) can give `location`'s digest:
    a local file whose rows, if any, come from a Parquet footer (a CSV's are counted from the
    bytes as they are hashed)."""
    return algorithm == "sha256" and fmt != "csv" and location.local is not None


def _take_early_pass(location: Location, fmt: str, algorithm: str, stat: Stat
                     ) -> tuple[ContentDigest, int] | None:
    """The digest of an `early_hash` pass over `location`, hashed under `stat`: the rows read
    from the footer while the pass ends (in this thread), and the file's stat the same
    after that read as before; else None (nothing started, or the file changed)."""
    if not _early_pass(location, fmt, algorithm):
        return None
    started = early_hash.take(location.key)
    if started is None:
        return None
    with progress.task(f"hash {location.uri}", stat.size, "bytes") as bar:
        rows = 0 if fmt == FILE else parquet_rows(location)
        started.wait()  # what is left of the hash is what this command waits for
        bar.advance(stat.size)
    done = started.result
    if done is None or done[0] != stat or location.stat() != stat:
        return None
    return ContentDigest(done[1], done[2], rows), done[3]


class _Background(Generic[T]):
    """Run `fn(*args)` in a thread; `result()` returns its value or raises its exception."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self._value: list[T] = []  # fn's value, once it returned
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self._value.append(fn(*args))
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

        self.thread = threading.Thread(target=work, name="buildenv-rows", daemon=True)
        self.thread.start()

    def result(self) -> T:
        self.thread.join()
        if self._error is not None:
            raise self._error
        return self._value[0]


_BUFFERS: list[bytearray] = []  # read buffers no thread is using, for the next file hashed
_BUFFERS_LOCK = threading.Lock()


@contextmanager
def _read_buffer(size: int) -> Iterator[memoryview]:
    """A read buffer of `size` bytes (at most CHUNK), handed back for the next file hashed by
    any thread: a fresh buffer is zero-filled first, which for the many small files of a table
    or a partitioned dataset cost 3% on top of hashing their bytes (bench/bench_tables.py),
    and a relock's new file is hashed in a thread of its own (`manifest._EarlyHashes`)."""
    with _BUFFERS_LOCK:
        buffer = _BUFFERS.pop() if _BUFFERS else None
    if buffer is None or len(buffer) < size:
        buffer = bytearray(size)
    try:
        yield memoryview(buffer)[:size]
    finally:
        with _BUFFERS_LOCK:
            if len(_BUFFERS) < 2:  # bounded: at most 16 MiB kept between files
                _BUFFERS.append(buffer)


def _hash_into(handle: Any, view: memoryview, hasher: Hasher, bar: Any) -> int:
    """Hash what is left of the open file `handle` through `view`; the bytes read."""
    size = 0
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    while n := handle.readinto(view):
        hasher.update(view[:n])
        size += n
        bar.advance(n)
    return size


def _digest_bytes(location: Location, algorithm: str) -> ContentDigest:
    hasher = ALGORITHMS[algorithm]()
    size = 0
    label = f"hash {location.uri}"
    if location.local is not None:
        with progress.task(label, unit="bytes") as bar, \
                open(location.local, "rb", buffering=0) as handle:
            bar.total = os.fstat(handle.fileno()).st_size
            with _read_buffer(max(1, min(CHUNK, bar.total + 1))) as view:
                size = _hash_into(handle, view, hasher, bar)
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


def parquet_rows(location: Location) -> int:
    """The footer's row count: parsed directly (no pyarrow import), else by pyarrow, which
    also says what is wrong with a file that is not Parquet."""
    if location.local is not None:
        with open(location.local, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            rows = footer_rows(lambda offset, n: os.pread(handle.fileno(), n, offset), size)
    else:
        with location.open_random() as handle:
            size = handle.size()

            def read_at(offset: int, n: int) -> bytes:
                handle.seek(offset)
                return handle.read(n)

            rows = footer_rows(read_at, size)
    if rows is not None:
        return rows
    # Deferred on purpose: pyarrow costs a fresh `buildenv lock` a quarter of a second, and is
    # needed only for a footer the parser above could not read (pyarrow says what is wrong).
    import pyarrow.parquet as pq

    with location.open_random() as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def _digest_csv(location: Location, algorithm: str) -> ContentDigest:
    """Hash and count records in one read of the bytes. A thread reads each chunk of a local
    file into a reused buffer and hashes it right away, as a bare hash loop does (the bytes are
    still in the cache; the hash releases the GIL); this thread counts the records of the same
    buffers (`csv_rows`) behind it, on the other core (`_CsvPass`)."""
    if location.local is None:
        return _digest_csv_stream(location, algorithm)
    if row_process.worth_a_process(os.stat(location.local).st_size):
        try:
            counting = row_process.RowCountProcess(location.local)
        except OSError:  # no child to be had: the pass below counts (and raises the file's
            counting = None  # own errors)
        if counting is not None:
            return _digest_csv_beside(location, algorithm, counting)
    hasher = ALGORITHMS[algorithm]()
    counter = RowCounter()
    size = 0
    with open(location.local, "rb", buffering=0) as handle, _fast_switching(), \
            progress.task(f"hash {location.uri}", os.fstat(handle.fileno()).st_size,
                          "bytes") as bar:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        chunks = _CsvPass(handle, hasher, max(1, min(CHUNK, int(bar.total or 0) + 1)))
        try:
            while (item := chunks.hashed.get()) is not None:
                buffer, start, stop = item
                if start == stop:  # the buffer is done with: the hash may read into it again
                    chunks.counted.put(buffer)
                    continue
                counter.feed(buffer, start, stop)
                size += stop - start
                bar.advance(stop - start)
        finally:
            chunks.stop()
        if chunks.failure:
            raise chunks.failure[0]
    return ContentDigest(f"{algorithm}:{hasher.hexdigest()}", size, counter.rows())


def _digest_csv_beside(location: Location, algorithm: str,
                       counting: row_process.RowCountProcess) -> ContentDigest:
    """A large local CSV: a child process counts its records (`row_process`) while this
    thread hashes it as a bare hash loop does, alone in its process. If the child fails, the records are counted
    here, in a second read."""
    assert location.local is not None
    hasher = ALGORITHMS[algorithm]()
    try:
        with open(location.local, "rb", buffering=0) as handle:
            if not counting.same_file(handle.fileno()):
                raise ValueError(f"{location.uri} changed while it was being hashed; try again")
            label = f"hash {location.uri}"
            # read and hashed a piece at a time: the piece is hashed from this core's cache
            # (8 MiB chunks go through memory: ~20% more CPU)
            with progress.task(label, os.fstat(handle.fileno()).st_size, "bytes") as bar, \
                    _read_buffer(max(1, min(_HASH_PIECE, int(bar.total or 0) + 1))) as view:
                size = _hash_into(handle, view, hasher, bar)
            counted = counting.result(size)
            if counted is None:  # the child failed: count here
                handle.seek(0)
                counted = row_process.count_file(handle)
    finally:
        counting.stop()
    rows, counted_size = counted
    if counted_size != size:
        raise ValueError(f"{location.uri} changed while it was being hashed; try again")
    return ContentDigest(f"{algorithm}:{hasher.hexdigest()}", size, rows)


_CSV_AHEAD = 6  # buffers of CHUNK bytes the hash may run ahead of the count with (48 MiB)


class _CsvPass:
    """The reading and hashing thread of one CSV pass: it reads each chunk into a buffer a
    piece at a time, hashes the piece and puts its range, in order, in `hashed`, so the count
    reads each piece soon after the hash did (from the shared cache, not from memory); an
    empty range after a buffer's last piece hands the buffer over, and the counting thread
    gives it back through `counted`. While the count lags (its first chunk imports numpy, tens
    of milliseconds), the hash goes on into new buffers, up to `_CSV_AHEAD`. `None` in
    `hashed` ends the file; a failure is kept for the counting thread to raise."""

    def __init__(self, handle: io.FileIO, hasher: Hasher, chunk: int) -> None:
        self.hashed: queue.SimpleQueue[tuple[bytearray, int, int] | None] = \
            queue.SimpleQueue()
        self.counted: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self.failure: list[BaseException] = []
        self._handle, self._hasher, self._chunk = handle, hasher, chunk
        self._thread = threading.Thread(target=self._run, name="buildenv-hash", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (the count is done, or failed) and wait for it."""
        self.counted.put(None)
        self._thread.join()

    def _run(self) -> None:
        made = 0
        try:
            while True:
                if made < _CSV_AHEAD and self.counted.empty():
                    buffer: bytearray | None = bytearray(self._chunk)
                    made += 1
                else:
                    buffer = self.counted.get()
                if buffer is None:
                    return  # the counting thread stopped early
                n = self._fill(buffer)
                self.hashed.put((buffer, n, n))  # the count may give the buffer back
                if n < len(buffer):
                    return  # the end of the file
        except BaseException as exc:  # re-raised by the counting thread
            self.failure.append(exc)
        finally:
            self.hashed.put(None)

    def _fill(self, buffer: bytearray) -> int:
        """Read `buffer` full (short only at the end of the file), hashing each piece as soon
        as it is read (the piece is still in this core's cache, where the count's pass over
        another chunk would have pushed a whole chunk out of the shared one) and handing its
        range to the count right away."""
        view = memoryview(buffer)
        n = 0
        while n < len(view):
            got = self._handle.readinto(view[n:n + _HASH_PIECE])
            if not got:
                break
            self._hasher.update(view[n:n + got])
            self.hashed.put((buffer, n, n + got))
            n += got
        return n


_HASH_PIECE = 1 << 19  # bytes read and hashed at a time: a quarter of a core's L2 cache


_SWITCHING = threading.Lock()
_switching: list[float] = []  # the interval before the first of the running digests


@contextmanager
def _fast_switching() -> Iterator[None]:
    """A short GIL switch interval while a CSV is hashed and counted: the hash thread needs the
    GIL for a moment after each chunk, and with the default 5 ms it waited up to that long
    behind the counter's Python, about as long as hashing a chunk takes. Nested and concurrent
    digests share it; the last one out restores the interval."""
    with _SWITCHING:
        if not _switching:
            _switching.append(sys.getswitchinterval())
            sys.setswitchinterval(min(_switching[0], _SWITCH_INTERVAL))
        _switching.append(0.0)
    try:
        yield
    finally:
        with _SWITCHING:
            _switching.pop()
            if len(_switching) == 1:
                sys.setswitchinterval(_switching.pop())


_SWITCH_INTERVAL = 0.0001


def _digest_csv_stream(location: Location, algorithm: str) -> ContentDigest:
    """An object store's CSV: each chunk is hashed in a thread (the hash releases the GIL)
    while this thread counts its records."""
    hasher = ALGORITHMS[algorithm]()
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=3)  # bounded: three in memory
    failure: list[BaseException] = []

    def hash_chunks() -> None:
        while (chunk := chunks.get()) is not None:
            try:
                hasher.update(chunk)
            except BaseException as exc:  # re-raised below
                failure.append(exc)

    worker = threading.Thread(target=hash_chunks, name="buildenv-hash", daemon=True)
    worker.start()
    counter = RowCounter()
    size = 0
    try:
        with progress.task(f"hash {location.uri}", None, "bytes") as bar, \
                location.open() as stream:
            while chunk := stream.read(CHUNK):
                chunks.put(chunk)
                counter.feed(chunk)
                size += len(chunk)
                bar.advance(len(chunk))
    finally:
        chunks.put(None)
        worker.join()
    if failure:
        raise failure[0]
    return ContentDigest(f"{algorithm}:{hasher.hexdigest()}", size, counter.rows())
