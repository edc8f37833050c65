"""Counting a large local CSV's records in a process of its own, beside the hash.

In one process the count (`csv_rows`, numpy) and the hash (hashlib, which releases the GIL)
run on two cores but share one GIL: the hashing thread takes it back after every piece it
reads or hashes and waits behind the count's Python, and the two threads' traffic through
one buffer cost the hash ~12% more CPU than a bare hash loop (bench/README.md, "Session 8
(h63)"). A child process that opens the same file and counts it by itself leaves the parent
hashing exactly as a bare `hashlib.sha256` loop does. The child costs about 0.1 s of the
other core (an interpreter and numpy) and reads the file a second time (from the page cache),
so it is used from `PROCESS_MIN` bytes on, and while a CPU is free for it (under load the child
only adds work); otherwise the in-process pass counts.

The child is this module's `_main`, run by the parent's interpreter with an inherited
descriptor of the very file the parent hashes (opened separately: its own offset); it prints
`rows bytes`. A child that fails, says something else or is still counting long after it
should be done (30 s + 20 MiB/s: then ended) is not trusted: the caller counts in its own
process instead.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from buildenv.data.lock.csv_rows import RowCounter

__all__ = ["PROCESS_MIN", "RowCountProcess", "child_path", "count_file", "worth_a_process"]

# bytes: below ~320 MiB, the child's start-up and count end after the in-process pass would
PROCESS_MIN = 384 << 20
_GRACE_S, _SLOWEST = 30.0, 20 << 20  # how long a child may take: 30 s + 20 MiB/s
_PIECE = 1 << 19  # bytes read and counted at a time: the piece stays in the L2 cache
# The child: this module's `_main`, imported through the parent's own module path, in its order
# (so the child finds the same `buildenv` and numpy: a checkout run from its directory, a
# PYTHONPATH, a zipapp's directories); the interpreter's default path follows it.
_CHILD = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1])\n"
          "from buildenv.data.lock.row_process import _main; sys.exit(_main(sys.argv[2:]))")
# A relative entry of the module path ('' or a source root, as a test runner or PYTHONPATH=.
# gives) meant the working directory of the time buildenv was imported; the command may have
# changed directory since (to the repository), so the child gets them made absolute against it.
try:
    _IMPORTED_IN: str | None = os.getcwd()
except OSError:  # the directory was removed: relative entries are passed on as they are
    _IMPORTED_IN = None


def worth_a_process(size: int) -> bool:
    """Whether a file of `size` bytes is counted in a child: it is large enough, and a second
    CPU is there to run the child beside the hash and not already busy (the 1-minute load
    average below the CPU count). Where the CPUs are taken, the child's start-up and second
    read are only more work to share them with, and the in-process pass costs less."""
    if size < PROCESS_MIN or not sys.executable:
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not known here: judge by the CPUs alone
        load = 0.0
    return (cpus or 1) >= 2 and load < (cpus or 1)


def child_path() -> list[str]:
    """The parent's module path, in its order, with relative entries made absolute against the
    directory buildenv was imported in (the child starts in the parent's current one)."""
    if _IMPORTED_IN is None:
        return list(sys.path)
    return [entry if os.path.isabs(entry) else os.path.join(_IMPORTED_IN, entry)
            for entry in sys.path]


def count_file(handle: io.RawIOBase | io.BufferedReader) -> tuple[int, int]:
    """The rows of what is left of the open file `handle`, and its bytes."""
    counter = RowCounter()
    buffer = bytearray(_PIECE)
    view = memoryview(buffer)
    size = 0
    while n := handle.readinto(view):
        counter.feed(buffer, 0, n)
        size += n
    return counter.rows(), size


class RowCountProcess:
    """A child process counting the records of the local file `path`, started at once;
    `result()` waits for it. `same_file(fd)` says whether the parent's open file is the one
    the child got (a file replaced between the two opens is not)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            info = os.fstat(fd)
            self._identity = (info.st_dev, info.st_ino)
            self._process: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-P", "-c", _CHILD, json.dumps(child_path()), str(fd), str(os.getpid())], pass_fds=(fd,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        finally:
            os.close(fd)

    def same_file(self, fd: int) -> bool:
        info = os.fstat(fd)
        return (info.st_dev, info.st_ino) == self._identity

    def result(self, size: int) -> tuple[int, int] | None:
        """(rows, bytes) as the child counted them; None if it failed, or is still counting a
        file of `size` bytes long after it should be done (it is then ended: never a hang)."""
        try:
            out, _ = self._process.communicate(timeout=_GRACE_S + size / _SLOWEST)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        if self._process.returncode != 0:
            return None
        fields = out.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            return None
        return int(fields[0]), int(fields[1])

    def stop(self) -> None:
        """End the child if it still runs (the hash failed, or was interrupted) and reap it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def _leave_with_parent(parent: int) -> None:
    """The child ends when the command (process `parent`) does, however it ends (a usage
    error, Ctrl-C, SIGKILL): a thread looks for its parent five times a second (it may have
    been started from a thread that ends before the command, so no death signal tied to that
    thread is used). A parent gone before the child got here is seen at once."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _main(argv: list[str]) -> int:
    """The child: count the file open at descriptor `argv[0]` for process `argv[1]`, print
    `rows bytes`."""
    if len(argv) > 1:
        _leave_with_parent(int(argv[1]))
    with open(int(argv[0]), "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        rows, size = count_file(handle)
    sys.stdout.write(f"{rows} {size}\n")
    return 0

