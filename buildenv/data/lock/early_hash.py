"""sha256 passes over local files, started before the rest of buildenv is imported.

A `buildenv lock` of a few hundred megabytes is mostly hashing, and its floor is a bare process
that starts hashing as soon as the interpreter is up. This module lets the command start
hashing the files it will pin within its first milliseconds (`buildenv.cli.head_start`), while
its own modules are still importing: it needs nothing but the standard library's `hashlib`,
`os` and `threading`, not the rest of the lock (storage, progress, the stat cache).
`digests.digest_location` takes a pass's result (`take`) only when the file's stat then is the
one the pass hashed under, and hashes again when it is not, so a pass nobody needs, or one
over a file that changed, costs a hash and decides nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

__all__ = ["Pass", "begin", "pending", "take"]

CHUNK = 8 << 20  # as `digests.CHUNK`: memory speed, bounded memory


class Pass:
    """One file's pass: `thread` hashes it; once it ended, `result` is (stat as
    `storage.Stat` compares, "sha256:<hex>", bytes hashed, `time.time_ns()` before the first
    read) if the file's stat was the same before and after, else None."""

    __slots__ = ("result", "thread")

    def __init__(self, path: str) -> None:
        self.result: tuple[tuple[int, int, int, int, int], str, int, int] | None = None
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True,
                                       name="buildenv-early-hash")

    def _run(self, path: str) -> None:
        try:
            with open(path, "rb", buffering=0) as handle:
                before = _stat(os.fstat(handle.fileno()))
                started = time.time_ns()
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                hasher = hashlib.sha256()
                view = memoryview(bytearray(max(1, min(CHUNK, before[0] + 1))))
                size = 0
                while n := handle.readinto(view):
                    hasher.update(view[:n])
                    size += n
            if _stat(os.stat(path)) == before and size == before[0]:
                self.result = (before, f"sha256:{hasher.hexdigest()}", size, started)
        except (OSError, ValueError):
            pass  # the command hashes the file itself, and says what is wrong with it


def _stat(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The fields of `storage.Stat`, in its order (a named tuple equals this tuple)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


_PASSES: dict[str, Pass] = {}  # resolved absolute path -> its pass (sha256 only)
_LOCK = threading.Lock()


def begin(path: str) -> None:
    """Start a sha256 pass over the local file `path` (absolute and resolved: the key
    `storage.locate` gives it), unless one was started."""
    with _LOCK:
        if path in _PASSES:
            return
        started = Pass(path)
        started.thread.start()  # before it is handed out: a thread joined before its start raises
        _PASSES[path] = started


def pending(path: str) -> bool:
    """Whether a pass over `path` was started and not taken."""
    with _LOCK:
        return path in _PASSES


def take(path: str) -> Pass | None:
    """The pass over `path`, if one was started (handed out once)."""
    with _LOCK:
        return _PASSES.pop(path, None)
