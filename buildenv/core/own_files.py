"""Files in the user's cache that only this user could have written: what buildenv reads back
from there (start recipes, skops' table) must not be another user's planting.

Standard library only: the start recipe is checked before anything else is imported.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["read_own", "trusted"]


def trusted(st: os.stat_result, directory: bool) -> bool:
    """Owned by this user and writable by nobody else (and the kind expected)."""
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read_own(path: Path) -> bytes | None:
    """The bytes of `path` when it and its directory are `trusted` and it is no symlink; None
    when it is missing, unreadable or could be another user's."""
    try:
        if not trusted(os.stat(path.parent), True):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return f.read() if trusted(os.fstat(f.fileno()), False) else None
    except OSError:
        return None
