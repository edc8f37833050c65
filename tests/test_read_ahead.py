"""Files of a table version (and of a partitioned directory) decoded in parallel through the
gate: the same rows in the same order as one by one, each file still verified before anything
of a later file is handed out, bounded queues, and no thread left behind."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import drop_store, invoke_cli
from partitioned_repo import age
from tables_repo import make_delta_repo

from buildenv.core.project import Project
from buildenv.data.gate import read_ahead
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock
from buildenv.env.resolve import Multiverse

pytest.importorskip("deltalake")

COLUMNS = ["id", "plan", "x", "y"]


def _gate(root: Path) -> Gate:
    project = Project.discover(root)
    res = Multiverse(project).resolve("tab")
    lock = read_lock(project, "tab")
    return Gate(project, res.env, "build", pins=lock.pins(), manifests=lock.manifests(),
                where=res)


def _batches(root: Path, threads: int, monkeypatch) -> list[pa.RecordBatch]:
    """Every batch of the pinned version, as handed out (no sorting), with `threads`."""
    monkeypatch.setenv("BUILDENV_READ_THREADS", str(threads))
    with _gate(root).open("events") as read:
        return list(read.batches(COLUMNS, batch_rows=7))


def _drain(items, into: list) -> None:
    """Collect what a stream hands out until it ends or raises."""
    for item in items:
        into.append(item)


def _gate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("buildenv-gate-read")]


@pytest.fixture
def table(tmp_path) -> Path:
    """A Delta table of 7 versions, partitioned: 3 + 6 * 3 = 21 files."""
    root = make_delta_repo(tmp_path, commits=7)
    age(root)
    assert invoke_cli(["lock", "tab"], root)[0] == 0
    drop_store(root)  # a changed file must exist nowhere else (the store would serve it)
    return root


def test_parallel_decoding_gives_the_same_batches_in_the_same_order(table, monkeypatch):
    one = _batches(table, 1, monkeypatch)
    assert sum(b.num_rows for b in one) == 240 and len(one) > 21
    for threads in (2, 3, 8):
        many = _batches(table, threads, monkeypatch)
        assert [b.num_rows for b in many] == [b.num_rows for b in one]
        assert all(a.equals(b) for a, b in zip(many, one))
        assert not _gate_threads()  # the pool is gone once the read is
    with _gate(table).open("events") as read:  # `table()` goes the same way
        assert read.table(COLUMNS).equals(pa.Table.from_batches(one))


def test_an_altered_file_is_refused_in_file_order_before_any_later_file(table, monkeypatch):
    manifest = read_lock(Project.discover(table), "tab").manifests()["events"]
    files = [f.path for f in manifest.files]
    victim, donor = files[4], files[7]  # same schema, other rows: it decodes, and differs
    base = table / "data" / "events"
    shutil.copyfile(base / donor, base / victim)
    # the altered file's own batches (now the donor's rows) may be handed out before its end,
    # where it is refused: the bound is the files before it plus what it now holds
    rows_before = sum(f.rows for f in manifest.files[:4]) + manifest.files[7].rows
    for threads in (1, 3):
        monkeypatch.setenv("BUILDENV_READ_THREADS", str(threads))
        handed: list[pa.RecordBatch] = []
        with _gate(table).open("events") as read, pytest.raises(GateError) as caught:
            _drain(read.batches(COLUMNS), handed)
        assert caught.value.diagnostic.code == "BE055", caught.value.diagnostic
        assert victim in caught.value.diagnostic.message
        # nothing of a file after the altered one was handed out
        assert sum(b.num_rows for b in handed) <= rows_before
        assert not _gate_threads()


def test_a_consumer_that_stops_early_leaves_no_thread_and_no_file_open(table, monkeypatch):
    monkeypatch.setenv("BUILDENV_READ_THREADS", "4")
    with _gate(table).open("events") as read:
        stream = read.batches(COLUMNS, batch_rows=5)
        next(stream)
        stream.close()
    assert not _gate_threads()


def test_items_come_in_order_and_at_most_a_window_waits():
    produced: list[int] = []
    lock = threading.Lock()

    def produce(index: int):
        for part in range(10):
            with lock:
                produced.append(index)
            time.sleep(0.001 * ((index * 7) % 3))  # files finish out of order
            yield (index, part)

    got = []
    stream = read_ahead.in_order(12, produce, 3)
    for item in stream:
        got.append(item)
        if item == (0, 0):
            time.sleep(0.3)  # a slow consumer: the workers must wait, not run ahead
            with lock:
                ahead = len(produced)
            # files 0-2 in flight, each with at most a queue plus one item in hand
            assert ahead <= 3 * (read_ahead.QUEUE_ITEMS + 2)
    assert got == [(i, p) for i in range(12) for p in range(10)]


def test_an_error_is_raised_where_its_file_ends():
    def produce(index: int):
        yield index
        if index == 2:
            raise ValueError("file 2")
        yield index

    got: list[int] = []
    with pytest.raises(ValueError, match="file 2"):
        _drain(read_ahead.in_order(6, produce, 3), got)
    assert got == [0, 0, 1, 1, 2]
    assert not _gate_threads()


def test_the_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BUILDENV_READ_THREADS", "3")
    assert read_ahead.read_threads() == 3
    for bad in ("0", "", "two", "-1"):
        monkeypatch.setenv("BUILDENV_READ_THREADS", bad)
        assert 1 <= read_ahead.read_threads() <= 2
