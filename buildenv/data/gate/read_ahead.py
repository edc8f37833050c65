"""The files of a partitioned read decoded ahead in a bounded thread pool, handed out in order.

A table version or a directory of Parquet files is many independent files; decoding them one
by one leaves a core idle while pyarrow (which releases the GIL while it decodes) could be
decoding the next. `in_order` runs the per-file generators of up to `workers` files at once.
Each file's items go into a queue of their own holding at most `QUEUE_ITEMS`, so at most
`workers` files are open and `workers * QUEUE_ITEMS` decoded batches wait in memory, whatever
the files' sizes (the gate's streaming contract). Items come out in file order, exactly as a
sequential loop would give them; an exception of file i (a digest the lock refuses, a
decoding error) is raised where file i's items end, so nothing of a later file is handed out
before it. Closing the generator early (a consumer that stops, an error) cancels the workers
and waits for them: no thread outlives the read, no file stays open.

The worker count is `BUILDENV_READ_THREADS` (default 2, at most the machine's cores; 1 decodes
in the caller's thread, as before): measured in bench/README.md's "Tables" section.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["QUEUE_ITEMS", "in_order", "read_threads"]

T = TypeVar("T")

QUEUE_ITEMS = 4  # decoded batches a file may have waiting: enough to keep a worker busy
DEFAULT_THREADS = 2
_END = object()  # a file's last item was queued


class _Cancelled(Exception):
    """The consumer stopped: a worker abandons its file."""


def read_threads() -> int:
    """Files decoded at once: `BUILDENV_READ_THREADS` if it is a positive integer, else 2, at
    most the machine's cores (a third thread on two cores only adds switching)."""
    given = os.environ.get("BUILDENV_READ_THREADS", "")
    if given.strip().isdigit() and int(given) > 0:
        return int(given)
    return max(1, min(DEFAULT_THREADS, os.cpu_count() or 1))


def in_order(count: int, produce: Callable[[int], Iterator[T]], workers: int) -> Iterator[T]:
    """The items of `produce(0)`, then of `produce(1)`, ... `produce(count - 1)`: with
    `workers` > 1, up to that many files produced at once in threads, in bounded queues."""
    if workers <= 1 or count <= 1:
        for index in range(count):
            yield from produce(index)
        return
    ahead = _Ahead(produce)
    slots: dict[int, queue.Queue[object]] = {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="buildenv-gate-read")
    submitted = 0
    try:
        for index in range(count):
            while submitted < min(count, index + workers):
                slots[submitted] = queue.Queue(QUEUE_ITEMS)
                pool.submit(ahead.work, submitted, slots[submitted])
                submitted += 1
            slot = slots.pop(index)
            while (item := slot.get()) is not _END:
                if isinstance(item, _Raised):
                    raise item.exc
                yield item  # type: ignore[misc]
    finally:
        ahead.cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)


class _Ahead:
    """What the workers of one `in_order` share: the producer and the cancellation."""

    def __init__(self, produce: Callable[[int], Iterator[object]]):
        self.produce = produce
        self.cancel = threading.Event()

    def put(self, slot: queue.Queue[object], item: object) -> None:
        """Queue `item`, waiting while the queue is full; _Cancelled once the consumer left."""
        while True:
            try:
                slot.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.cancel.is_set():
                    raise _Cancelled() from None

    def work(self, index: int, slot: queue.Queue[object]) -> None:
        """Produce file `index` into `slot`: its items, then _END or the exception."""
        if self.cancel.is_set():
            return
        items = self.produce(index)
        try:
            for item in items:
                self.put(slot, item)
            self.put(slot, _END)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, raised in file order
            try:
                self.put(slot, _Raised(exc))
            except _Cancelled:
                pass
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator abandoned mid-file releases its file here


class _Raised:
    """An exception of one file's producer, carried to the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc
