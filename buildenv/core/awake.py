"""Waiting for threads from the main thread without going deaf to signals.

Python runs a signal's handler only in the main thread, and only when that thread runs; the
kernel may hand Ctrl-C or SIGTERM to any other thread (Ray's, a training's, a hashing pool's).
A main thread blocked in `Future.result()` without a timeout then sat on the interrupt until
the work it waited for ended: a `build --all` on Ray ran every pair to its end before it
stopped. `results` waits in slices instead, and between slices it can also do what only the
main thread may (`tick`: start Ray for a thread that asked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any, TypeVar

__all__ = ["WAKE", "results"]

T = TypeVar("T")

WAKE = 0.25  # seconds between the main thread's wake-ups


def results(futures: Sequence[Future[T]], wake: float = WAKE,
            tick: Callable[[], Any] | None = None) -> list[T]:
    """The futures' results in order, waiting in slices of `wake` seconds (calling `tick`
    before each); the first failure is raised as soon as it happens."""
    pending = set(futures)
    while pending:
        if tick is not None:
            tick()
        done, pending = wait(pending, timeout=wake, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # raises what the thread raised
    return [future.result() for future in futures]
