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

import atexit
import hashlib
import os
import signal
import threading
import time

__all__ = ["Pass", "begin", "pending", "take"]

CHUNK = 8 << 20  # as `digests.CHUNK`: memory speed, bounded memory


class Pass:
    """One file's pass: once `thread` ended, `result` is (stat as `storage.Stat` compares,
    "sha256:<hex>", bytes hashed, `time.time_ns()` before the first read) if the file's stat was
    the same before and after, else None.

    While the process has no other thread (the command's first milliseconds), the pass runs in
    a forked child, which shares no GIL with the command's imports: in a thread the hash waited
    for the GIL after every read and every chunk, ~15% longer than a bare process's
    (bench/README.md, session 9). `thread` then only waits for the child's one-line answer on a
    pipe and reaps it. The child leaves with `os._exit` (no exit handler, no flush of the
    parent's buffers) and stops between chunks once the parent is gone; the command reaps it at
    exit (an exit handler), killing it first if it never asked for its answer. Otherwise (a thread
    exists: forking could copy a lock it holds) `thread` hashes the file itself."""

    __slots__ = ("_answered", "_parent", "result", "thread")

    def __init__(self) -> None:
        self.result: tuple[tuple[int, int, int, int, int], str, int, int] | None = None
        self._parent: int | None = None
        self._answered = threading.Event()  # `result` is final
        self.thread: threading.Thread | None = None

    def start(self, path: str) -> None:
        """Start hashing `path`: in a forked child while no other thread exists, else in
        `thread`."""
        if hasattr(os, "fork") and threading.active_count() == 1:
            self.thread = self._fork(path)
        else:
            self.thread = threading.Thread(target=self._here, args=(path,), daemon=True,
                                           name="buildenv-early-hash")
        self.thread.start()

    def _fork(self, path: str) -> threading.Thread:
        parent = os.getpid()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: hash, answer, leave
            try:
                os.close(read)
                self._parent = parent
                self._run(path)
                if self.result is not None:
                    stat, digest, size, started = self.result
                    os.write(write, (" ".join(map(str, (*stat, digest, size, started)))
                                     + "\n").encode())
            finally:
                os._exit(0)
        os.close(write)
        atexit.register(self._leave, pid)
        return threading.Thread(target=self._answer, args=(read, pid), daemon=True,
                                name="buildenv-early-answer")

    def _answer(self, read: int, pid: int) -> None:
        """The forked child's answer line (`result`: final as soon as it is read, before the
        child has finished leaving), then the child reaped."""
        try:
            data = b""
            while not data.endswith(b"\n") and (chunk := os.read(read, 4096)):
                data += chunk
            fields = data.decode().split()
            if len(fields) == 8:
                numbers = [int(f) for f in fields[:5]]
                self.result = ((numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]),
                               fields[5], int(fields[6]), int(fields[7]))
        finally:
            self._answered.set()
            os.close(read)
            _reap(pid)

    def _leave(self, pid: int) -> None:
        """At exit: the child reaped (its CPU time counted as the command's), killed first
        if it is still hashing a file the command did not wait for (a lock that failed)."""
        if not self._answered.is_set():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap(pid)

    def _here(self, path: str) -> None:
        try:
            self._run(path)
        finally:
            self._answered.set()

    def wait(self) -> None:
        """Until `result` is final (`thread` started)."""
        self._answered.wait()

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
                    if self._parent is not None and os.getppid() != self._parent:
                        return  # a forked pass whose command is gone
            if _stat(os.stat(path)) == before and size == before[0]:
                self.result = (before, f"sha256:{hasher.hexdigest()}", size, started)
        except (OSError, ValueError):
            pass  # the command hashes the file itself, and says what is wrong with it


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped by the other of the answer's thread and the exit handler


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
        started = Pass()
        started.start(path)  # before it is handed out: a thread joined before its start raises
        _PASSES[path] = started


def pending(path: str) -> bool:
    """Whether a pass over `path` was started and not taken."""
    with _LOCK:
        return path in _PASSES


def take(path: str) -> Pass | None:
    """The pass over `path`, if one was started (handed out once)."""
    with _LOCK:
        return _PASSES.pop(path, None)
