"""PyIceberg's Arrow file IO, with locations relative to the repository.

Iceberg records absolute locations. A table kept inside a repository (the example multiverse,
a test fixture) is written with repository-relative ones instead, so that any checkout reads it;
this file IO resolves such locations against the data root buildenv passes in the catalog
property `buildenv.data-root` (absolute locations and URIs are used as they are).
"""

from __future__ import annotations

import os
from typing import Any

from pyiceberg.io.pyarrow import PyArrowFileIO  # pants: no-infer-dep (the tables extra)

from buildenv.data.tables.iceberg import DATA_ROOT

__all__ = ["RepoFileIO"]


class RepoFileIO(PyArrowFileIO):
    """PyArrowFileIO; a relative location is relative to `buildenv.data-root`."""

    @staticmethod
    def parse_location(location: str, properties: Any = None) -> tuple[str, str, str]:
        properties = properties or {}
        root = properties.get(DATA_ROOT)
        if root and "://" not in location and not os.path.isabs(location):
            location = os.path.join(root, location)
        return PyArrowFileIO.parse_location(location, properties)
