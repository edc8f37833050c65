"""Files in the user's cache that only this user could have written: what buildenv reads back
from there (start recipes, skops' table) must not be another user's planting.

Standard library only: the start recipe is checked before anything else is imported.
"""

from __future__ import annotations

import os
import stat

__all__ = ["trusted"]


def trusted(st: os.stat_result, directory: bool) -> bool:
    """Owned by this user and writable by nobody else (and the kind expected)."""
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022
