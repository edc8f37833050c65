"""The processes a process started, found through /proc, and stopped all together.

A process that detaches (a new session, a double fork) leaves its process group, so killing
the group misses it. A child subreaper adopts its orphaned descendants instead of init, so
while it lives every process it started, detached or not, is in its tree; `kill_tree` stops
the whole tree (SIGSTOP, until no new process appears), then kills it. Linux only; elsewhere
these do nothing.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
from typing import Any

__all__ = ["become_subreaper", "descendants", "die_with_parent", "kill_tree", "wait_exit"]

_PR_SET_CHILD_SUBREAPER, _PR_SET_PDEATHSIG = 36, 1
# prctl is looked up once, when this module is imported, in the parent: a child between fork and
# exec (a `preexec_fn`) must not dlopen, since another thread of the parent may have held the
# loader's lock at the fork (importing numpy, say) and the child would wait for it forever.
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def die_with_parent() -> None:
    """In a child between fork and exec (`preexec_fn`): SIGKILL it when the thread that started
    it ends (Linux; elsewhere nothing)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux); whether that worked."""
    try:
        done: int = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return done == 0
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
            out[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, include_root: bool = True) -> int:
    """Stop `pid`'s descendants (and `pid` itself when `include_root`) until none is new,
    then kill them all. Returns how many processes were killed."""
    stopped: set[int] = set()
    while True:
        tree = set(descendants(pid)) | ({pid} if include_root else set())
        fresh = tree - stopped
        if not fresh:
            break
        for proc in fresh:
            _signal(proc, signal.SIGSTOP)
        stopped |= fresh
    for proc in stopped:
        _signal(proc, signal.SIGKILL)
    return len(stopped)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """`proc.wait(timeout)` that returns as soon as the process exits: Popen polls with
    sleeps of up to 50 ms, a pidfd (Linux 5.3+) wakes this at once. TimeoutExpired as Popen's."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(max(0, int(min(timeout, 1e9) * 1000)))
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()
