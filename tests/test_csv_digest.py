"""The CSV pass of the lock (`digests._digest_csv`): one read of the bytes feeds a hashing
thread and the record count; the digest is hashlib's, the rows are the counter's, for any
chunking; the hash runs ahead of a slow count; failures of any of the three threads reach
the caller and leave no thread behind; the GIL switch interval is restored."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from buildenv.data.lock import digests
from buildenv.data.lock.csv_rows import count_rows
from buildenv.data.storage import Location, locate


class _Root:
    def __init__(self, path: Path):
        self.data_base = path


def quoted_csv(rows: int, seed: int = 5) -> bytes:
    rng = np.random.default_rng(seed)
    words = ["late", "gate,", "crew\n", 'said ""ok""', "", "a,b"]
    lines = ["id,note,x"]
    for i in range(rows):
        text = " ".join(words[j] for j in rng.integers(0, len(words), rng.integers(0, 4)))
        lines.append(f'{i},"{text}",{rng.random():.3f}')
    return ("\r\n" if seed % 2 else "\n").join(lines).encode()


def digest(tmp_path: Path, data: bytes) -> digests.ContentDigest:
    (tmp_path / "t.csv").write_bytes(data)
    return digests.compute_digest(locate("t.csv", _Root(tmp_path)), "csv", "sha256")  # type: ignore[arg-type]


def no_pass_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name == "buildenv-hash"]


@pytest.mark.parametrize("chunk, ahead, piece", [(4096, 1, 1 << 19), (4096 * 3 + 5, 2, 1000),
                                                 (65_536, 6, 4096), (8 << 20, 6, 1 << 19)])
@pytest.mark.parametrize("rows", [0, 1, 700, 9000])
def test_digest_and_rows_equal_hashlib_and_the_counter(tmp_path, monkeypatch, chunk, ahead, piece,
                                                       rows):
    """Any chunk size, read-ahead and piece size (a chunk is read and hashed a piece at a
    time): hashlib's digest, the counter's rows."""
    monkeypatch.setattr(digests, "CHUNK", chunk)
    monkeypatch.setattr(digests, "_CSV_AHEAD", ahead)
    monkeypatch.setattr(digests, "_HASH_PIECE", piece)
    data = quoted_csv(rows, seed=rows)
    value = digest(tmp_path, data)
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (value.size, value.rows) == (len(data), count_rows(data))
    assert no_pass_threads()


def test_a_file_of_exactly_whole_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "CHUNK", 4096)
    data = quoted_csv(2000)
    data = data[: len(data) // 4096 * 4096]
    assert len(data) % 4096 == 0
    value = digest(tmp_path, data)
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert value.rows == count_rows(data)


def test_an_empty_file(tmp_path):
    value = digest(tmp_path, b"")
    assert (value.digest, value.size, value.rows) == (
        "sha256:" + hashlib.sha256(b"").hexdigest(), 0, 0)


def test_the_hash_runs_ahead_of_a_slow_count(tmp_path, monkeypatch):
    """While the first count waits (as it does for numpy's import), the reader and the hash
    go on through the buffers the pass may hold."""
    monkeypatch.setattr(digests, "CHUNK", 4096)
    monkeypatch.setattr(digests, "_CSV_AHEAD", 4)
    hashed = threading.Semaphore(0)

    class Counting:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()

        def update(self, data) -> None:
            self.inner.update(data)
            hashed.release()

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setitem(digests.ALGORITHMS, "sha256", Counting)
    original = digests.RowCounter.feed
    ahead: list[bool] = []

    def slow_feed(self, chunk, *bounds) -> None:
        if not ahead:  # the first chunk: wait until the hash has done four
            ahead.append(all(hashed.acquire(timeout=10) for _ in range(4)))
        original(self, chunk, *bounds)

    monkeypatch.setattr(digests.RowCounter, "feed", slow_feed)
    data = quoted_csv(3000)
    value = digest(tmp_path, data)
    assert ahead == [True]
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert value.rows == count_rows(data)


def test_each_piece_is_counted_right_after_it_is_hashed(tmp_path, monkeypatch):
    """The count is handed each piece as soon as it is hashed (it reads the piece from the
    shared cache), not the whole buffer once it is full: the hash of a buffer's second piece
    waits for the count of its first."""
    monkeypatch.setattr(digests, "CHUNK", 1 << 16)
    monkeypatch.setattr(digests, "_HASH_PIECE", 4096)
    counted = threading.Event()
    waited: list[bool] = []

    class Waiting:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()

        def update(self, data) -> None:
            if self.inner.digest() != hashlib.sha256().digest() and not waited:
                waited.append(counted.wait(timeout=5))  # the second piece of the first buffer
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setitem(digests.ALGORITHMS, "sha256", Waiting)
    original = digests.RowCounter.feed
    ranges: list[tuple[int, int]] = []

    def seen_feed(self, chunk, start=0, stop=None) -> None:
        ranges.append((start, len(chunk) if stop is None else stop))
        counted.set()
        original(self, chunk, start, stop)

    monkeypatch.setattr(digests.RowCounter, "feed", seen_feed)
    data = quoted_csv(3000)
    value = digest(tmp_path, data)
    assert waited == [True]
    assert ranges[0] == (0, 4096) and all(stop - start <= 4096 for start, stop in ranges)
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert value.rows == count_rows(data)


def test_a_failing_count_stops_the_reader_and_the_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "CHUNK", 4096)
    monkeypatch.setattr(digests, "_CSV_AHEAD", 2)
    calls = []

    def failing_feed(self, chunk, *bounds) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(digests.RowCounter, "feed", failing_feed)
    with pytest.raises(KeyboardInterrupt):
        digest(tmp_path, quoted_csv(3000))
    assert no_pass_threads()


def test_a_failing_read_or_hash_is_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "CHUNK", 4096)

    class Broken:
        def update(self, data) -> None:
            raise MemoryError("no room")

        def hexdigest(self) -> str:
            return ""

    monkeypatch.setitem(digests.ALGORITHMS, "sha256", Broken)
    with pytest.raises(MemoryError, match="no room"):
        digest(tmp_path, quoted_csv(3000))
    assert no_pass_threads()
    monkeypatch.undo()
    monkeypatch.setattr(digests, "CHUNK", 4096)
    real_open = open

    class FailingFile:
        """A file whose third read fails, as a disk or a network mount can."""

        def __init__(self, *args, **kwargs) -> None:
            self.inner, self.reads = real_open(*args, **kwargs), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.inner.close()

        def fileno(self) -> int:
            return self.inner.fileno()

        def readinto(self, buffer) -> int:
            self.reads += 1
            if self.reads == 3:
                raise OSError(5, "Input/output error")
            return self.inner.readinto(buffer)

    monkeypatch.setattr(digests, "open", FailingFile, raising=False)
    with pytest.raises(OSError, match="Input/output"):
        digest(tmp_path, quoted_csv(3000))
    assert no_pass_threads()


def test_the_switch_interval_is_restored_by_the_last_pass_out(tmp_path):
    before = sys.getswitchinterval()
    inside: list[float] = []
    with digests._fast_switching():
        inside.append(sys.getswitchinterval())
        with digests._fast_switching():
            inside.append(sys.getswitchinterval())
        inside.append(sys.getswitchinterval())
        digest(tmp_path, quoted_csv(100))  # a pass inside: still short after it
        inside.append(sys.getswitchinterval())
    assert inside == pytest.approx([digests._SWITCH_INTERVAL] * 4)
    assert sys.getswitchinterval() == before


def test_a_streamed_csv_as_from_an_object_store(tmp_path, monkeypatch):
    """A location without a local path (an object store) is read through its filesystem's
    stream: the same digest and rows."""
    monkeypatch.setattr(digests, "CHUNK", 4096)
    data = quoted_csv(3000)
    path = tmp_path / "s.csv"
    path.write_bytes(data)
    streamed = Location(f"file://{path}", f"file://{path}", str(path), None)
    value = digests.compute_digest(streamed, "csv", "sha256")
    assert value.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (value.size, value.rows) == (len(data), count_rows(data))
    assert no_pass_threads()
