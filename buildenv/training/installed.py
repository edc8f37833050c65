"""The installed distributions of the training process, read once.

`importlib.metadata.packages_distributions()` parses the metadata of every installed
distribution: about 0.7 s in a virtualenv of the `models` extra on an idle machine (2 s under
load), and a build asked twice over the same installation (the model's library versions, then
what loading the model imports). The training process installs nothing while it runs, so
one reading serves both. When the pre-check runs in a forked process (`precheck_fork`), that
process reads the table on its own core and hands it back with its verdict (`adopt`): the
fit in this process then shares the interpreter with nobody reading metadata.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import metadata

__all__ = ["adopt", "distributions_by_package", "forget"]

_ADOPTED: list[Mapping[str, list[str]]] = []  # the table a forked copy of this process read


def distributions_by_package() -> Mapping[str, list[str]]:
    """Top-level import name -> the distributions providing it (`packages_distributions`)."""
    return _ADOPTED[0] if _ADOPTED else _read()


@functools.cache
def _read() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def forget() -> None:
    """Read the table again at the next use (an installation changed under this process)."""
    _ADOPTED.clear()
    _read.cache_clear()


def adopt(table: object) -> bool:
    """Take the table a forked copy of this process read (same paths, same installation) as
    this process's; False (and nothing taken) for anything but a table of names."""
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(d, str) for d in v)
            for k, v in table.items()):
        return False
    _ADOPTED[:] = [table]
    return True
