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

from typing import TYPE_CHECKING, Any

from buildenv.data.tables import delta, iceberg
from buildenv.data.tables.version import (
    TableError,
    TableFile,
    TableVersion,
    iso_time,
    require_tables,
)

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project
    from buildenv.env.spec import Dataset

__all__ = ["TableError", "TableFile", "TableVersion", "iso_time", "require_tables", "resolve"]


def resolve(project: Project, ds: Dataset, *, pinned: dict[str, Any] | None = None
            ) -> TableVersion:
    """The version of `ds` that its declaration selects now (a Delta `version`/`as_of` or the
    latest commit; an Iceberg `snapshot`, `ref` or `main`). With `pinned` (a lock's `table`
    record), exactly that version. Raises TableError."""
    if ds.format == "delta":
        version = pinned["version"] if pinned is not None else ds.version
        return delta.open_version(project, ds, version, None if pinned else ds.as_of)
    if pinned is not None:
        return iceberg.open_snapshot(project, ds, snapshot=pinned["snapshot"],
                                     ref=pinned.get("ref"))
    return iceberg.open_snapshot(project, ds, snapshot=ds.snapshot, ref=ds.ref)
