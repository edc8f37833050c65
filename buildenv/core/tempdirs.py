"""Temporary directories and files that name their owner, so that a sweep removes only what
a dead process left behind.

A temp dir or file is called `.<label>.tmp-<pid>-<start>-<random>`: the owner's pid and its
start time (clock ticks since boot, from /proc; 0 where unknown), which together survive pid
reuse. A sweep removes one only when that process is gone; one in flight in another process,
or one whose name does not follow the pattern, is never touched.

Builds keep theirs under `.buildenv/tmp/` (on the repository's filesystem, so the final
rename is atomic) rather than beside the artifact in `dist/`. There they also keep a record of
the directories they are about to create (`dist/<training>/`): a SIGKILL skips the cleanup
that removes them on failure, and the sweep that removes the dead owner's record removes
those directories too while they are still empty.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["owned_temp_dir", "owned_temp_file", "owner_alive", "process_start", "record_made",
           "remove_empty", "scratch_dir", "sweep"]

_NAME = re.compile(r"^\..+\.tmp-(\d+)-(\d+)-[A-Za-z0-9_]+$")


def scratch_dir(state_dir: Path) -> Path:
    """Where a repository's temp dirs live: `.buildenv/tmp/`."""
    return state_dir / "tmp"


def process_start(pid: int) -> int:
    """Start time of `pid` in clock ticks since boot (Linux), 0 when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return 0


@functools.cache
def _own_start() -> tuple[int, int]:
    return os.getpid(), process_start(os.getpid())


def _me() -> tuple[int, int]:
    pid, start = _own_start()
    if pid != os.getpid():  # after fork
        _own_start.cache_clear()
        pid, start = _own_start()
    return pid, start


def owner_alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start:
        now = process_start(pid)
        if now and now != start:
            return False  # the pid was reused by another process
    return True


def owned_temp_dir(parent: Path, label: str) -> Path:
    """A new empty directory in `parent` whose name says which process owns it."""
    parent.mkdir(parents=True, exist_ok=True)
    pid, start = _me()
    return Path(tempfile.mkdtemp(prefix=f".{label}.tmp-{pid}-{start}-", dir=parent))


def owned_temp_file(parent: Path, label: str) -> tuple[int, str]:
    """A new empty file in `parent` (open descriptor, path) whose name says which process
    owns it: what a killed writer leaves is removed by the next sweep of `parent`."""
    pid, start = _me()
    return tempfile.mkstemp(prefix=f".{label}.tmp-{pid}-{start}-", dir=parent)


_MADE = "made-dirs"  # the label of a record of directories about to be created


def record_made(parent: Path, directories: list[Path]) -> Path:
    """Write, before creating `directories` (deepest first), an owned record of them in
    `parent`; the caller removes it once it has either kept them or removed them again. If
    the caller is killed first, a later sweep of `parent` removes them while they are empty."""
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, path = owned_temp_file(parent, _MADE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump([os.fspath(d.absolute()) for d in directories], handle)
    return Path(path)


def remove_empty(directories: list[Path]) -> None:
    """Remove `directories` (deepest first) while they are empty: one another process has
    meanwhile put something in is kept, and so are the ones above it."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _undo_made(record: Path) -> None:
    """The directories a dead owner recorded as made, removed while empty."""
    try:
        listed = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # killed while writing it: nothing was created yet
    if isinstance(listed, list):
        remove_empty([Path(p) for p in listed if isinstance(p, str)])


def sweep(parent: Path, label: str | None = None) -> list[Path]:
    """Remove the temp dirs and files in `parent` whose owner process is gone (and the
    directories a dead owner's `record_made` names, while empty); return them. With `label`, only that label's (`.<label>.tmp-...`) and only this user's: what a
    write beside its target sweeps, in a directory other users and programs may share. One that
    cannot be removed (another user's, a read-only mount) is left, never an error."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    prefix = None if label is None else f".{label}.tmp-"
    uid = os.geteuid()
    for entry in entries:
        if prefix is not None and not entry.name.startswith(prefix):
            continue
        match = _NAME.match(entry.name)
        if match is None or owner_alive(int(match.group(1)), int(match.group(2))):
            continue
        path = Path(entry.path)
        try:
            if label is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                if entry.name.startswith(f".{_MADE}.tmp-"):
                    _undo_made(path)
                path.unlink(missing_ok=True)
        except OSError:
            continue
        removed.append(path)
    return removed
