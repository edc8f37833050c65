"""Cross-process mutexes: what two buildenv processes sharing a repository must not do at once.

("Lock" in buildenv names the pin file, `environments/<name>.lock.json`; these are mutexes.)

A thread lock protects one process; CI runs several `buildenv` processes over one checkout,
cache and registry. These are `flock(2)` locks on small files under `.buildenv/locks/`: the
kernel releases them when the holder exits, however it exits (SIGKILL included), so a crash
never leaves a lock behind. Each `open` is its own lock, so threads of one process exclude
each other too. Lock files are never deleted (deleting one races with a waiter that has it
open). A wait has a limit: past it the command stops with BE760 naming the holder's pid.
Re-entering a lock the same thread already holds is a no-op (a second `open` would deadlock
against the first).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["MUTEX_TIMEOUT_ENV", "dir_mutex", "mutex", "mutex_path", "mutex_timeout"]

MUTEX_TIMEOUT_ENV = "BUILDENV_LOCK_TIMEOUT"
_HELD = threading.local()


def mutex_timeout(default: float) -> float:
    """`BUILDENV_LOCK_TIMEOUT` (seconds) when set and valid, else `default`."""
    raw = os.environ.get(MUTEX_TIMEOUT_ENV)
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value >= 0 else default


def mutex_path(state_dir: Path, kind: str, key: str) -> Path:
    """The lock file of one resource: `<state>/locks/<kind>-<digest of key>.lock`."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return state_dir / "locks" / f"{kind}-{digest}.lock"


@contextmanager
def mutex(path: Path, what: str, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed); BE760 after `timeout` seconds."""
    held: set[str] = _HELD.__dict__.setdefault("paths", set())
    key = os.path.abspath(path)
    if key in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, what, timeout)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the BE760 message only
        except OSError:
            pass
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def dir_mutex(directory: Path) -> Iterator[None]:
    """Serialise renames inside `directory` by locking the directory itself (no lock file).

    Best effort: where directories cannot be flock'ed (some network filesystems), no lock.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            holder = _holder(path)
            raise DiagnosticError([Diagnostic(
                "BE760", f"gave up after {timeout:g} s waiting for {what}"
                + (f" (held by process {holder})" if holder else ""),
                hints=("another buildenv process is working on the same thing; wait for it "
                       "to finish, or stop it",
                       f"{MUTEX_TIMEOUT_ENV}=SECONDS changes how long to wait"))], 1)
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _holder(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if text.isdigit() else None
