"""Tables with their own history (Delta Lake, Apache Iceberg): one version of one, as files.

A table version is what the lock pins of a `format: delta` or `format: iceberg` dataset: the
table's version (Delta) or snapshot (Iceberg), its schema, and the data files that make up the
version, each with its size and partition values. `locking` hashes those files like the files
of a partitioned dataset, so the gate reads a pinned version file by file, verified against
the lock, with no table library at all; the libraries are needed only to find out which files
a version has (`delta`, `iceberg`), which is what `lock`, `lock --check` and `retrain` do.

`TableVersion` is that answer; `resolve` asks the right library; `TableError` is a diagnostic
about the table (code, message naming table, version and file, hints) that callers place at
the dataset's YAML line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buildenv.core.project import Project
    from buildenv.env.spec import Dataset

__all__ = ["TableError", "TableFile", "TableVersion", "iso_time", "require_tables", "resolve"]


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
    import importlib.util

    for module in ("deltalake", "pyiceberg", "dvc_data"):
        if importlib.util.find_spec(module) is None:
            raise TableError("BE071", f"{what} needs the `tables` extra ({module} is not "
                             "installed)", "pip install 'buildenv[tables]'")


def resolve(project: Project, ds: Dataset, *, pinned: dict[str, Any] | None = None
            ) -> TableVersion:
    """The version of `ds` that its declaration selects now (a Delta `version`/`as_of` or the
    latest commit; an Iceberg `snapshot`, `ref` or `main`). With `pinned` (a lock's `table`
    record), exactly that version. Raises TableError."""
    if ds.format == "delta":
        from buildenv.data.tables import delta

        version = pinned["version"] if pinned is not None else ds.version
        return delta.open_version(project, ds, version, None if pinned else ds.as_of)
    from buildenv.data.tables import iceberg

    if pinned is not None:
        return iceberg.open_snapshot(project, ds, snapshot=pinned["snapshot"],
                                     ref=pinned.get("ref"))
    return iceberg.open_snapshot(project, ds, snapshot=ds.snapshot, ref=ds.ref)
