"""Work in a thread beside the main one, its outcome (value or exception) taken back in order.

After the full fit the machine's cores are free: the runner evaluates the trained model while
it converts and saves it, and checks parity while it computes permutation importance (NumPy,
scikit-learn's predictors and onnxruntime release the GIL for most of it). Each side writes only
its own state; the runner merges what both found in the serial order, so results, diagnostics
and artifacts are the same bytes as when the steps ran one after the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Beside"]

T = TypeVar("T")


class Beside(Generic[T]):
    """`work()` started in a daemon thread; `result()` joins it and returns its value or
    re-raises its exception (BaseException included) on the calling thread."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"buildenv-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:  # taken back by result(), on the caller's thread
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        value: T = self._value
        return value
