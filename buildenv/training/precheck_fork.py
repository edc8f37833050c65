"""The pre-check in a forked process, beside the full fit.

The pre-check (`precheck.py`) costs a sample fit, the sample model's checks and, for the `onnx`
stack, its conversion: a second or more before the full fit could start. It cannot run in a
thread beside the fit: both would draw from the process's global random generators (Python's,
NumPy's), and the full fit would no longer train as without the pre-check. A child forked right
after the training's module is imported has copies of them: the sample run in the child, the
full fit in the training process, each on a core of its own: only when the fit's `threads`
leave a core free (a fit on every core would share its cores with the child, and an OpenMP
fit slows down more than the child's work when one of its threads waits for a core). The
full fit starts from the same seeds as after a serial pre-check, so the artifact is the same
bytes (and the sample run draws what it would have drawn in the training process: `random`,
which reseeds itself in a forked child, gets its state back); it reads its tables itself (the
child's reads are not handed back). The child's verdict (`precheck.run`'s, or the failure the
runner would report) comes back through a pipe, with the installed distributions' table the
child read on its core (`installed.adopt`) and the repository files its code read (`CodeReads`: the
sample run may read one the full fit has not opened yet when a failure ends it), and a refusal interrupts the fit as
`beside.Judge` does for any deferred verdict.

Forking is safe only while the training process runs no other thread: an OpenMP runtime
(libgomp) hangs in a child forked after its pool's threads started, and a lock held by another
thread stays held in the child. So `start` forks only when the process's only threads are its
main one and jemalloc's background threads (pyarrow's allocator, which prepares itself for a
fork), and never once torch is imported (its export runs serially: `torch_module`); not for
environments with restricted datasets either (each read of one is audited: the child's read
would be a second record). Otherwise it returns None and the runner runs the pre-check itself,
before the fit. Sandboxed, the child asks the build for dataset files through the parent
(`handover.relay`): only the process the build started may use the build's channel.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from buildenv.data.gate import handover
from buildenv.training import installed
from buildenv.training.code_reads import CodeReads
from buildenv.training.confinement import Guard
from buildenv.training.precheck import SAMPLE_ROWS

__all__ = ["ForkedPrecheck", "start"]

_ALLOCATOR_THREADS = frozenset({"jemalloc_bg_thd"})
_DISTRIBUTIONS = "installed distributions"  # the child's `installed` table, beside its verdict
_READS = "code reads"  # the repository files the child's code read (`CodeReads`), likewise


def start(env: Any, threads: int, work: Callable[[], dict]) -> ForkedPrecheck | None:
    """`work()` (the pre-check; a JSON-able dict) in a forked child, or None when forking is
    not safe here or the fit's `threads` leave no core for it (the caller runs it itself)."""
    if not hasattr(os, "fork") or threads >= _cores() or "torch" in sys.modules or any(
            env.restricted(name) for name in env.datasets):
        return None
    guard = Guard.active
    try:
        if guard is not None:
            with guard.unnoted():
                return _fork(work)
        return _fork(work)
    except OSError:  # no /proc, no socket pair in this sandbox, no fork: run it serially
        return None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _alone() -> bool:
    """Whether this process runs no thread but its main one (and the allocator's)."""
    if threading.active_count() != 1:
        return False
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as comm:
            names.append(comm.read().strip())
    return sum(name not in _ALLOCATOR_THREADS for name in names) == 1


def _fork(work: Callable[[], dict]) -> ForkedPrecheck | None:
    if not _alone():
        return None
    channel = handover.pair() if handover.active() else None
    read_end, write_end = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would print the buffer again
        stream.flush()
    state = random.getstate()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        random.setstate(state)  # `random` reseeds itself in a forked child: the sample run
        _child(work, read_end, write_end, channel)  # draws what it would have drawn here
    os.close(write_end)
    relay = None
    if channel is not None:
        channel[1].close()
        relay = threading.Thread(target=handover.relay, args=(channel[0],), daemon=True,
                                 name="buildenv-precheck-relay")
        relay.start()
    return ForkedPrecheck(pid, read_end, relay)


def _child(work: Callable[[], dict], read_end: int, write_end: int,
           channel: tuple[Any, Any] | None) -> None:
    code = 0
    try:
        os.close(read_end)
        if channel is not None:
            channel[0].close()
            handover.use(channel[1])
        found = work()
        try:  # read here, on this process's core, not beside the parent's fit (`installed`)
            found = {**found, _DISTRIBUTIONS: dict(installed.distributions_by_package())}
        except Exception:
            pass
        found = {**found, _READS: CodeReads.noted()}  # the build keys the training by them
        data = json.dumps(found, default=str).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view):]
    except BaseException:  # no verdict: the parent records the pre-check as skipped
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)  # the parent's exit handlers and threads are not the child's


class ForkedPrecheck:
    """A running forked pre-check: `verdict()` waits for it; `stop()` ends it unheard."""

    def __init__(self, pid: int, verdict_fd: int, relay: threading.Thread | None) -> None:
        self._pid: int | None = pid
        self._fd = verdict_fd
        self._relay = relay
        self._reaping = threading.Lock()  # verdict() (the judge's thread) and stop() may race

    def verdict(self) -> dict:
        """What the child found: `precheck.run`'s verdict, or `{"failed": result}` for a
        failure the runner reports as it would have before the fit (BE303, a refused read,
        a sandbox refusal); `skipped` when the child ended without one."""
        chunks = []
        with os.fdopen(self._fd, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                chunks.append(chunk)
        status = self._wait()
        if self._relay is not None:
            self._relay.join()
        if chunks:
            found: dict = json.loads(b"".join(chunks))
            installed.adopt(found.pop(_DISTRIBUTIONS, None))
            CodeReads.note(found.pop(_READS, None) or [])
            return found
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else \
            f"exit code {os.waitstatus_to_exitcode(status)}"
        return {"summary": {"status": "skipped", "rows": SAMPLE_ROWS,
                            "reason": f"the pre-check's process ended with {how}"}}

    def stop(self) -> None:
        """Kill the child unless it has ended (the full run failed first)."""
        with self._reaping:
            if self._pid is not None:
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._wait()

    def _wait(self) -> int:
        with self._reaping:
            pid, self._pid = self._pid, None
            if pid is None:
                return 0
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:  # reaped by someone else (the sandbox's reaper)
                return 0
