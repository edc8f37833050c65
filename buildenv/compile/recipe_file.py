"""The last build's recipe for its transforms' process (`compile.start_recipe`): where it
lives, whether it may be trusted, and whether it guesses a transform stale.

Split from `start_recipe` so that `buildenv lock` can ask, before the quick lock's imports,
whether to start the process at all (`cli.early.start_from_recipe`): this module imports only
what the command has already imported (`os`, `stat`, `hashlib`, `pathlib`), and `json` only
when a recipe exists. A repository without a recipe costs one stat; one whose recipe guesses
nothing stale (an unchanged lock) a few.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
from pathlib import Path
from typing import Any

from buildenv import __version__
from buildenv.core.own_files import read_own, trusted

# Deferred import (json): only a repository with a recipe parses one, and every `buildenv lock`
# pays this module's imports before the quick lock answers.

__all__ = ["changed_since", "load", "recipe_path", "stale", "trusted", "wants_start", "whole"]


def wants_start(root: Path, names: list[str]) -> bool:
    """Whether the recipe of the repository at `root` guesses a derived dataset of the
    environments `names` (all: empty) stale (`stale`); False when there is no trusted recipe,
    it knows none of them, or an entry is malformed (the command decides then)."""
    recipe = load(root)
    if recipe is None:
        return False
    try:
        return any(stale(e) for e in recipe["entries"] if isinstance(e, dict)
                   and (not names or e.get("environment") in names))
    except (KeyError, TypeError, ValueError):
        return False


def recipe_path(root: Path) -> Path:
    """Where the recipe of the repository at `root` lives (outside it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256("\0".join((os.path.realpath(root), __version__, sys.executable,
                                    sys.version)).encode()).hexdigest()[:32]
    return Path(base) / "buildenv" / "start-recipes" / f"{key}.json"


def load(root: Path) -> dict[str, Any] | None:
    """The recipe of `root`'s repository (`{"entries": [...]}`), or None when there is none,
    it is not trusted (owner, permissions, a symlink) or it does not parse."""
    data = read_own(recipe_path(root))
    if data is None:
        return None
    import json  # deferred: see the module's imports

    try:
        recipe = json.loads(data)
    except ValueError:
        return None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("entries"), list):
        return None
    return recipe


def changed_since(paths: list[str], since: int) -> bool:
    """Whether any of `paths` (a folder: anything in it) changed (its inode's change time,
    which no tool sets back) at or after `since` (ns), or is missing."""
    for path in paths:
        try:
            st = os.stat(path)
            if st.st_ctime_ns >= since:
                return True
            if stat.S_ISDIR(st.st_mode) and _newer_inside(path, since):
                return True
        except OSError:
            return True
    return False


def _newer_inside(folder: str, since: int) -> bool:
    for entry in os.scandir(folder):
        st = entry.stat(follow_symlinks=False)
        if st.st_ctime_ns >= since or (entry.is_dir(follow_symlinks=False)
                                       and _newer_inside(entry.path, since)):
            return True
    return False


def stale(entry: dict[str, Any]) -> bool:
    """`early_runner`'s guess, from the recipe's paths: the output is missing, there is no
    lock, or the module or an input changed since the lock (or the stat cache) was written."""
    since = _since(entry)
    if since is None:
        return True
    return entry.get("remote", False) or changed_since(list(entry["watch"]), since)


def whole(entry: dict[str, Any]) -> bool:
    """Whether the recipe guesses every file of the dataset stale, not only some: its output is
    missing, there is no lock, or the transform's module (the first path watched) changed
    since the lock (or the stat cache) was written -- the code is in every output's key. An
    input that changed may be one file of many: not a whole rebuild."""
    since = _since(entry)
    return since is None or changed_since(list(entry["watch"])[:1], since)


def _since(entry: dict[str, Any]) -> int | None:
    """When the lock (or the stat cache, which a relock that changed nothing rewrites) was
    written last; None when the output or the lock is missing (everything is stale)."""
    output = entry.get("output")
    if output is not None and not os.path.exists(output):
        return None
    try:
        since = os.stat(entry["lock"]).st_mtime_ns
    except OSError:
        return None
    with contextlib.suppress(OSError):
        since = max(since, os.stat(entry["stat_cache"]).st_mtime_ns)
    return since
