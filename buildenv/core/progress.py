"""Progress of long work: library code announces it, the command line decides how to show it.

Library code opens a task and advances it once per chunk or batch (never per row):

    with progress.task(f"hash {uri}", total=size, unit="bytes") as bar:
        for chunk in chunks:
            bar.advance(len(chunk))

`progress.phase("train")` names the step that the current task (the innermost `with` in this
thread) is in. Phases are timed whether or not anything is shown, so a build can report where
its time went. Nothing is printed unless the CLI installs a renderer with `installed()`
(`cli.progress_view`: `Live` for terminals, `Lines` for CI logs and pipes, both on stderr).
`advance` is one addition: renderers look at the tasks on their own clock, a few times a second,
so a hook in a hot loop costs nothing measurable, renderer or not. Work shorter than `after`
seconds (default 1) is never shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any

__all__ = ["Reporter", "Task", "batches", "current", "installed", "phase", "seconds_text", "task"]



class Reporter:
    """Receives task events; the default (no reporter installed) is to show nothing."""

    def started(self, task: Task) -> None:
        pass

    def phase_changed(self, task: Task, old: str | None, spent: float | None) -> None:
        pass

    def finished(self, task: Task) -> None:
        pass

    def close(self) -> None:
        pass


class Task:
    """One piece of work: a label, optional amount done of `total` `unit`s, timed phases."""

    __slots__ = ("label", "total", "unit", "keep", "completed", "parent", "depth", "started",
                 "ended", "status", "phase_name", "phase_started", "timings", "view",
                 "_reporter", "_token")

    def __init__(self, label: str, total: float | None, unit: str, keep: bool,
                 reporter: Reporter | None, parent: Task | None) -> None:
        self.label, self.total, self.unit, self.keep = label, total, unit, keep
        self.completed: float = 0
        self.parent = parent
        self.depth: int = parent.depth + 1 if parent is not None else 0
        self.started = time.monotonic()
        self.ended: float | None = None
        self.status = "done"
        self.phase_name: str | None = None
        self.phase_started = self.started
        self.timings: dict[str, float] = {}  # phase -> seconds, in the order phases ran
        self.view: Any = None  # the renderer's own state for this task
        self._reporter = reporter
        self._token: Any = None

    def advance(self, n: float = 1) -> None:
        self.completed += n

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def phase(self, name: str | None) -> None:
        """End the current phase (its time is added to `timings`) and start `name`."""
        now = time.monotonic()
        old, spent = self.phase_name, None
        if old is not None:
            spent = now - self.phase_started
            self.timings[old] = self.timings.get(old, 0.0) + spent
        self.phase_name, self.phase_started = name, now
        if self._reporter is not None and self.ended is None:
            self._reporter.phase_changed(self, old, spent)

    def done(self, status: str | None = None) -> None:
        if self.ended is not None:
            return
        if self.phase_name is not None:
            self.phase(None)
        if status is not None:
            self.status = status
        self.ended = time.monotonic()
        if self._reporter is not None:
            self._reporter.finished(self)

    def __enter__(self) -> Task:
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _current.reset(self._token)
        if exc_type is None:
            self.done()
        else:
            self.done("failed" if issubclass(exc_type, Exception) else "stopped")


_reporter: Reporter | None = None
_current: ContextVar[Task | None] = ContextVar("buildenv_progress_task", default=None)


def task(label: str, total: float | None = None, unit: str = "", keep: bool = False) -> Task:
    """A new task, a child of the current one. `keep`: a live view keeps it once done (a build
    pair in the `build --all` matrix); other finished tasks disappear from it."""
    item = Task(label, total, unit, keep, _reporter, _current.get())
    if _reporter is not None:
        _reporter.started(item)
    return item


def current() -> Task | None:
    return _current.get()


def phase(name: str | None) -> None:
    """Name the step of the current task (no-op outside any task)."""
    item = _current.get()
    if item is not None:
        item.phase(name)


def batches(items: Iterable[Any], label: str, total: int | None = None,
            unit: str = "rows") -> Iterator[Any]:
    """Yield record batches unchanged, counting their rows in a task that ends with them."""
    bar = task(label, total, unit)
    status = "done"
    try:
        for batch in items:
            yield batch
            bar.completed += batch.num_rows
    except GeneratorExit:
        status = "stopped"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        bar.done(status)


@contextmanager
def installed(reporter: Reporter | None) -> Iterator[Reporter | None]:
    """Route task events to `reporter` inside the block (None: show nothing); closes it."""
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        _reporter = previous
        if reporter is not None:
            reporter.close()


def seconds_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"
