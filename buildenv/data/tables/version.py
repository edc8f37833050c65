"""What a table library answers about one version of a table (`TableVersion`: its files,
schema and identity), and `TableError`, a diagnostic about a table."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TableError", "TableFile", "TableVersion", "iso_time", "require_tables"]


class TableError(Exception):
    """A problem with a table dataset, as a diagnostic: code, message, hints."""

    def __init__(self, code: str, message: str, *hints: str):
        super().__init__(message)
        self.code, self.message, self.hints = code, message, tuple(h for h in hints if h)


@dataclass(frozen=True)
class TableFile:
    """One data file of a table version."""

    path: str  # relative to the version's base (posix), as the file is named in storage
    size: int
    rows: int
    values: dict[str, str | None] | None  # identity partition values, as text (None: null)


@dataclass(frozen=True)
class TableVersion:
    """The data files and identity of one version of a table."""

    format: str  # delta | iceberg
    base: str  # the location file paths are relative to (the table's root / location)
    version: int  # Delta: the version; Iceberg: the snapshot id
    timestamp_ms: int  # when the version was committed
    schema: tuple[tuple[str, str], ...]  # (column, Arrow type) of the version
    partitions: tuple[str, ...]  # columns whose values come with each file
    files: tuple[TableFile, ...]
    details: dict[str, Any] = field(default_factory=dict)  # ref, metadata location, ...
    changes: tuple[str, ...] = ()  # what happened since a version asked about (not recorded)

    @property
    def label(self) -> str:
        """'version 7' / 'snapshot 4017...': how messages name it."""
        return f"{'version' if self.format == 'delta' else 'snapshot'} {self.version}"

    def record(self) -> dict[str, Any]:
        """What the lock keeps of the version besides its files (`table` of the entry)."""
        key = "version" if self.format == "delta" else "snapshot"
        return {key: self.version, "committed": iso_time(self.timestamp_ms), "base": self.base,
                "schema": {name: kind for name, kind in self.schema},
                **{k: v for k, v in self.details.items() if not k.startswith("_")}}


def iso_time(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (what the lock records)."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def require_tables(what: str) -> None:
    """TableError BE071 naming the extra when the table libraries are not installed."""
    module = _missing_table_library()
    if module is not None:
        raise TableError("BE071", f"{what} needs the `tables` extra ({module} is not "
                         "installed)", "pip install 'buildenv[tables]'")


@functools.cache
def _missing_table_library() -> str | None:
    """The first table library not installed, looked up once per process (each look-up
    searches the import path: a quarter of a relock's own CPU when done per dataset)."""
    for module in ("deltalake", "pyiceberg", "dvc_data"):
        if module not in sys.modules and importlib.util.find_spec(module) is None:
            return module
    return None
