"""Which files of a derived dataset each of its transform's processes builds, when several do.

A full build of many files runs the transform in more than one sandboxed process at once
(`compile.derive`), on the free cores this build may use. The first is the process started
early (ready sooner); another starts an interpreter later. So no process gets a share fixed in
advance: each asks the build for the next file before each one (the `claim` service of its
broker, `data.gate.handover.ask`), and the build hands the files out in order, each once. A
process ends when none is left; after any process failed, none gets more, so the failure
reported is the one a single process would meet first (every earlier file was handed out
before, and each process builds its files in order, stopping at its first failure).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

__all__ = ["MIN_FILES", "Claims", "processes_for"]

MIN_FILES = 24
"""Stale files per process at least: under this a second interpreter's start (about 0.4 s of
a core: pandas, pyarrow, the sandbox) costs more than it saves (bench/README.md, session 11)."""


def processes_for(files: int, cap: int | None, load: float | None = None) -> int:
    """How many processes build `files` stale files: one per `MIN_FILES`, at most `cap` (the
    dataset's `source.processes`) and the cores this process may run on, less one per whole
    unit of the one-minute load average (`load`, default the machine's now) beyond one (the
    build's own last minute: a lock run again right after another): on a machine whose cores
    others keep busy a second process mostly competes with the first and costs its start
    (bench/README.md, session 11)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average: assume idle, like most users' machines
            load = 0.0
    free = cores + 1 - math.floor(load)
    return max(1, min(files // MIN_FILES, cores, free, cap if cap is not None else cores))


class Claims:
    """The files (`0..count-1`) handed out, to which process each, and whether to stop."""

    def __init__(self, count: int):
        self.count = count
        self.owner: dict[int, int] = {}
        """File index -> the process (its position in the build's list) it was handed to."""
        self._next = 0
        self._stopped = False
        self._lock = threading.Lock()

    def service(self, process: int) -> Any:
        """The `claim` service of process number `process`'s broker."""
        def claim(request: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "index": self.take(process)}
        return claim

    def take(self, process: int) -> int | None:
        """The next file for `process`; None when none is left or a process failed."""
        with self._lock:
            if self._stopped or self._next >= self.count:
                return None
            index, self._next = self._next, self._next + 1
            self.owner[index] = process
            return index

    def stop(self) -> None:
        """A process failed: hand out nothing more."""
        with self._lock:
            self._stopped = True
