"""An append-only JSON-lines file that several processes write: the audit log, the budget ledger.

Writers hold an exclusive lock (`core.locks`, released by the kernel however the holder exits)
for their read-check-append, cut a torn last line first (a crash inside a write leaves half a
line, which was never a record), and append each record with one `write` and an `fsync`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from buildenv.core.mutex import mutex, mutex_timeout

__all__ = ["AppendLog"]

_TAIL = 1 << 16  # how much of the end is read to find the last line


class AppendLog:
    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what  # for the lock's wait message

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive, across processes and threads; waits (BE760 past the lock timeout)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with mutex(self.path.with_name(f".{self.path.name}.lock"), self.what,
                       mutex_timeout(600.0)):
            yield

    def cut_torn_tail(self) -> None:
        """Under `locked`: drop an incomplete last line left by a crash inside a write."""
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(max(0, size - _TAIL))
            tail = handle.read()
            if not tail.endswith(b"\n"):
                handle.truncate(size - (len(tail) - (tail.rfind(b"\n") + 1)))

    def last_lines(self) -> list[bytes]:
        """The complete lines at the end of the file (up to 64 KiB of them)."""
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL))
            tail = handle.read()
        lines = tail.split(b"\n")[:-1]  # after the last newline: nothing, or a torn line
        return lines if size <= _TAIL else lines[1:]  # the first may be cut by the seek

    def append(self, line: str) -> None:
        """Under `locked`: one record, one write, on disk before returning."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
