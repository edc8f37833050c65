"""Cross-process mutexes: what two buildenv processes sharing a repository must not do at once.

("Lock" in buildenv names the pin file, `environments/<name>.lock.json`; these are mutexes.)

A thread lock protects one process; CI runs several `buildenv` processes over one checkout,
cache and registry. These are `flock(2)` locks on small files under `.buildenv/locks/`: the
kernel releases them when the holder exits, however it exits (SIGKILL included), so a crash
never leaves a lock behind. Each `open` is its own lock, so threads of one process exclude
each other too. Lock files are never deleted (deleting one races with a waiter that has it
open). The holder writes who it is into the file (pid, command, since when): a process that
has to wait says so, as a progress task naming the holder (and the phase `wait` of the task it
waits in), and a wait has a limit: past it the command stops with BE760 naming the holder.
Re-entering a lock the same thread already holds is a no-op (a second `open` would deadlock
against the first).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from buildenv.core import progress
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
            os.pwrite(fd, _whoami().encode(), 0)  # for waiters' messages only
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
    if _try_lock(fd):
        return
    holder = _holder(path)
    task = progress.current()
    before = task.phase_name if task is not None else None
    if task is not None:
        task.phase("wait")
    try:
        with progress.task(f"waiting for {what}" + (f", held by {holder}" if holder else "")):
            _wait(fd, path, what, timeout)
    finally:
        if task is not None:
            task.phase(before)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait(fd: int, path: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        if _try_lock(fd):
            return
        if time.monotonic() >= deadline:
            holder = _holder(path)
            raise DiagnosticError([Diagnostic(
                "BE760", f"gave up after {timeout:g} s waiting for {what}"
                + (f" (held by {holder})" if holder else ""),
                hints=("another buildenv process is working on the same thing; wait for it "
                       "to finish, or stop it",
                       f"{MUTEX_TIMEOUT_ENV}=SECONDS changes how long to wait"))], 1)
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _whoami() -> str:
    """What a holder writes into its lock file: pid, command line and since when."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "buildenv"):
        program = "buildenv"
    elif program == "-c":
        program = "python -c"
    command = " ".join([program, *(shlex.quote(a) for a in sys.argv[1:])])
    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps({"pid": os.getpid(), "command": command[:300], "since": since}) + "\n"


def _holder(path: Path) -> str | None:
    """`process 4242 (buildenv build churn --env prod) since 2026-12-01T14:02:11Z`, from what
    the holder wrote; a bare pid (older buildenv), or None when nothing readable is there."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text.isdigit():
        return f"process {text}"
    try:
        info = json.loads(text)
        pid = int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    who = "this process" if pid == os.getpid() else f"process {pid}"
    command = f" ({info['command']})" if info.get("command") else ""
    since = f" since {info['since']}" if info.get("since") else ""
    return f"{who}{command}{since}"
