"""The installed distributions of the training process, read once.

`importlib.metadata.packages_distributions()` parses the metadata of every installed
distribution: about 0.7 s in a virtualenv of the `models` extra on an idle machine (2 s under
load), and a build asked twice over the same installation (the model's library versions, then
what loading the model imports). The training process installs nothing while it runs, so
one reading serves both.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import metadata

__all__ = ["distributions_by_package"]


@functools.cache
def distributions_by_package() -> Mapping[str, list[str]]:
    """Top-level import name -> the distributions providing it (`packages_distributions`)."""
    return metadata.packages_distributions()
