"""Storing a derived dataset's outputs while its transform goes on with the next files.

The runner (`training.derive_run`) names each output on a pipe (a FIFO in the job's output
directory) as soon as it has written it. A thread of the build takes each one named: it reads
the file's bytes once (outputs up to `SMALL_OUTPUT`; the runner's process keeps running on the
other core), hashes them and counts their rows from those bytes, and writes its own copy of
exactly those bytes into its scratch (`DerivedStore.stage`). The transform is user code that
may still change its file afterwards (through a shared mapping, without a new change time):
the object stored is the copy, so its digest is always its bytes'. Copies are moved into the
store (`DerivedStore.commit`: two renames each) only once the runner has exited with a result
that is `ok`, as outputs always were: a failing job stores nothing. An output not named, or
not taken (larger, not a regular file, a footer the parser does not read, any error), is
stored as before, from the runner's file after its exit. A report only says "look now": what
the transform could forge through it, it can already write into its outputs.
"""

from __future__ import annotations

import os
import select
import shutil
import stat
import threading
from pathlib import Path

from buildenv.core.tempdirs import owned_temp_dir
from buildenv.data.lock.derived import SMALL_OUTPUT, DerivedStore, Staged

__all__ = ["Reports"]

_NAME = "outputs.fifo"
BATCH = 0.05
"""Seconds the thread waits after a report for the next ones (ended at once by `stop`)."""
DRAIN = 1 << 20
"""Bytes of reports read from the pipe in one pass, at most."""


class Reports:
    """The build's end of one job's reports: `start` before the request is handed over,
    `stop` once the runner has exited (the copies taken, by output index), `close` always."""

    def __init__(self, fifo: Path, out_dir: int, stage_dir: Path, keys: list[str],
                 store: DerivedStore):
        self.fifo, self._dir, self._stage_dir, self._keys = fifo, out_dir, stage_dir, keys
        self._store = store
        self.staged: dict[int, Staged] = {}
        self._tried: set[int] = set()
        # the build holds a writer too: the read end never sees an end of file (a FIFO whose
        # last writer left would wake `poll` for ever); `stop` ends the thread
        self._read = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._write = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="derive-reports", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, out_dir: Path, keys: list[str], store: DerivedStore) -> Reports | None:
        """Reports of the outputs `<i>.parquet` in `out_dir` (the runner's), object `keys[i]`
        each; None where no FIFO can be made (every output is then stored after the runner's
        exit)."""
        if not hasattr(os, "mkfifo"):
            return None
        fifo = out_dir / _NAME
        stage_dir = None
        try:
            os.mkfifo(fifo, 0o600)
            # the directory is opened once: what the runner renames or links in its place
            # later is not followed
            fd = os.open(out_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            stage_dir = owned_temp_dir(store.scratch, "derive-stage")
            return cls(fifo, fd, stage_dir, keys, store)
        except BaseException:
            os.close(fd)
            if stage_dir is not None:
                shutil.rmtree(stage_dir, ignore_errors=True)
            raise

    def stop(self) -> dict[int, Staged]:
        """Take what the runner reported before it exited; the copies, by output index."""
        if self._thread.is_alive():
            os.write(self._stop_w, b".")
            self._thread.join()
        return self.staged

    def close(self) -> None:
        """Stop, close the pipes and remove the copies not committed."""
        self.stop()
        for fd in (self._read, self._write, self._stop_r, self._stop_w, self._dir):
            os.close(fd)
        shutil.rmtree(self._stage_dir, ignore_errors=True)

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        stop = select.poll()
        stop.register(self._stop_r, select.POLLIN)
        pending = b""
        while True:
            stopping = self._stop_r in dict(poller.poll())
            # a few reports at a time: each wake-up of this thread, beside the runner's
            # process, costs more than the copy it makes
            stopping = stopping or bool(stop.poll(int(BATCH * 1000)))
            pending = self._take_lines(pending + self._drain())
            if stopping:
                return

    def _drain(self) -> bytes:
        """What the pipe holds, up to `DRAIN` bytes a pass: a transform that floods the pipe
        (it may write to it: it runs in the writer's process) costs the build bounded memory;
        reports left unread are outputs stored after the runner's exit."""
        chunks: list[bytes] = []
        for _ in range(DRAIN >> 16):
            try:
                chunk = os.read(self._read, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _take_lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        for line in lines:
            try:
                index, withheld = (int(x) for x in line.split())
            except ValueError:
                continue
            if 0 <= index < len(self._keys) and index not in self._tried and withheld >= 0:
                self._tried.add(index)  # once: a report repeated costs nothing
                try:
                    taken = self._take(index, withheld)
                except Exception:  # the output is stored as before, after the runner's exit
                    taken = None
                if taken is not None:
                    self.staged[index] = taken
        return rest[-4096:]  # a line no longer than that is one the runner wrote

    def _take(self, index: int, withheld: int) -> Staged | None:
        """Read output `index` once and stage a copy of those bytes."""
        name = f"{index}.parquet"
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=self._dir)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > SMALL_OUTPUT:
                return None
            chunks, size = [], 0
            while size <= st.st_size:  # up to one byte more: a file that grew is not taken
                chunk = os.read(fd, st.st_size + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) != st.st_size:
            return None
        return self._store.stage(self._keys[index], data, self._stage_dir / name, withheld)
