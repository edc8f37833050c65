"""Pinning a table version: its data files hashed like a partitioned dataset's, plus its identity.

The table library says which files make up the version the environment selects
(`buildenv.data.tables.resolve`); each file is then stat'ed and hashed (the stat cache spares
unchanged ones, so relocking after an append hashes only the appended files), and the lock
entry is a manifest of those files -- path under the table's base, size, digest, rows and
partition values -- with the table's version or snapshot, commit time and schema. From then
on the files are what is pinned: a vacuumed, rewritten or tampered file is found by the gate
like any other pinned file, and reading the version needs no table library.

`table_moved` is the lock check's question for a table that follows its latest commit or a
ref: where is it now, and what happened since the pinned version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from buildenv.core.diagnostics import did_you_mean
from buildenv.core.project import Project
from buildenv.data.lock.digests import ContentDigest, StatCache
from buildenv.data.lock.manifest import Listed, Manifest, digest_listed
from buildenv.data.storage import locate
from buildenv.data.tables import TableError, TableFile, TableVersion, resolve
from buildenv.data.tables.delta import describe_commits, latest_version
from buildenv.data.tables.delta_replay import replay
from buildenv.data.tables.iceberg import check_field_names, open_snapshot
from buildenv.env.spec import Dataset

__all__ = ["Previous", "column_problems", "declared_pin", "digest_table", "pinned_files_now",
           "table_moved"]

Previous = tuple[dict[str, Any], Manifest]  # a lock's table record and manifest of the dataset
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def digest_table(project: Project, ds: Dataset, algorithm: str, cache: StatCache | None,
                 executor: Any = None, previous: Previous | None = None
                 ) -> tuple[ContentDigest, Manifest, dict[str, Any]]:
    """(digest, manifest, table record) of the version `ds` selects now. `previous` (the
    table record and manifest of the lock being replaced) lets a Delta table be relocked from
    the commits since, without opening it (`delta_replay`). Raises TableError (BE072-BE077,
    BE053) naming the table, the version and the file."""
    version = _replayed(project, ds, previous) if previous is not None else None
    if version is None:
        version = resolve(project, ds)
    base = locate(version.base, project)
    listed, missing = [], []
    for entry in version.files:
        try:
            listed.append(Listed(entry.path, base, base.stat_child(entry.path)))
        except FileNotFoundError:
            missing.append(entry.path)
        except OSError as exc:
            raise TableError("BE073", f"{_name(ds, version)}: cannot read '{entry.path}': "
                             f"{exc.strerror or exc}") from None
    if missing:
        raise TableError("BE077", f"{_name(ds, version)}: {_some(missing)} listed by the "
                         "table but missing (vacuumed or cleaned up)",
                         "pin a version whose files exist, or restore them")
    altered = [e.path for e, item in zip(version.files, listed) if e.size != item.stat.size]
    if altered:
        raise TableError("BE077", f"{_name(ds, version)}: {_some(altered)} altered: the size "
                         "differs from the size the table records", "restore the files the "
                         "table wrote; buildenv never pins bytes the table does not describe")
    if ds.format == "iceberg":
        check_field_names(version, lambda path: base.child(path).open_random())
    try:
        manifest = digest_listed(listed, version.partitions, algorithm, cache, executor,
                                 values={f.path: f.values or {} for f in version.files}
                                 if version.partitions else None, base=version.base,
                                 rows={f.path: f.rows for f in version.files})
    except ValueError as exc:
        raise TableError("BE053", f"{_name(ds, version)}: {exc}") from None
    return (ContentDigest(manifest.digest, manifest.size, manifest.rows), manifest,
            {**version.record(), "pin": declared_pin(ds)})


def _replayed(project: Project, ds: Dataset, previous: Previous) -> TableVersion | None:
    """The version `ds` selects now, from the previous lock's version and the Delta commits
    since; None when that cannot be said without the table library."""
    record, manifest = previous
    try:
        when = dt.datetime.fromisoformat(str(record["committed"]))
        pinned = TableVersion(
            "delta", str(record["base"]), int(record["version"]),
            (when - _EPOCH) // dt.timedelta(milliseconds=1),
            tuple((str(k), str(v)) for k, v in dict(record["schema"]).items()),
            manifest.partitions,
            tuple(TableFile(f.path, _known(f.size), _known(f.rows), f.values)
                  for f in manifest.files))
    except (KeyError, TypeError, ValueError):
        return None
    return replay(project, ds, pinned)


def _known(count: int | None) -> int:
    """A table file's count (a table's manifest withholds none: ValueError otherwise)."""
    if count is None:
        raise ValueError("withheld")
    return count


def pinned_files_now(project: Project, manifest: Manifest, algorithm: str,
                     cache: StatCache | None, executor: Any = None
                     ) -> tuple[Manifest, list[str]]:
    """The pinned files of a table version as they are now (each stat'ed, hashed when the
    stat cache cannot vouch for it), and the paths that no longer exist. What the lock check
    verifies without asking the table: a pinned version is its files."""
    assert manifest.base is not None
    base = locate(manifest.base, project)
    listed, missing = [], []
    for entry in manifest.files:
        try:
            listed.append(Listed(entry.path, base, base.stat_child(entry.path)))
        except FileNotFoundError:
            missing.append(entry.path)
    now = digest_listed(listed, manifest.partitions, algorithm, cache, executor,
                        values={f.path: f.values or {} for f in manifest.files}
                        if any(f.values is not None for f in manifest.files) else None,
                        base=manifest.base)
    return now, missing


def declared_pin(ds: Dataset) -> dict[str, Any]:
    """What the declaration pins: recorded in the lock, so a changed pin makes it stale."""
    pin = ds.model_dump(mode="json", include={"version", "as_of", "ref", "snapshot"},
                        exclude_none=True)
    if ds.catalog is not None:
        pin["catalog"] = {"type": ds.catalog.type, "uri": ds.catalog.uri}
    return pin


def column_problems(ds: Dataset, table: dict[str, Any]) -> list[tuple[str, str]]:
    """BE076 for declared columns the pinned version's schema does not have (the table's
    schema changed under the environment's columns)."""
    schema = table.get("schema") or {}
    label = ("version " + str(table["version"]) if "version" in table
             else f"snapshot {table.get('snapshot')}")
    out = []
    for column in ds.columns:
        if column not in schema:
            hint = did_you_mean(column, list(schema))
            out.append(("BE076", f"{_kind(ds)} table '{ds.uri}' {label} has no column "
                        f"'{column}'" + (f" ({hint})" if hint else "")))
    return out


def table_moved(project: Project, ds: Dataset, pinned: dict[str, Any]) -> tuple[str, str] | None:
    """For a table that follows its latest commit (Delta) or a ref (Iceberg): (new label,
    what happened) when it is no longer at the pinned version, else None. A Delta table is
    asked by listing its log (no library); Iceberg needs its catalog. Raises TableError."""
    if ds.format == "delta":
        if ds.version is not None or ds.as_of is not None:
            return None  # pinned: the files are what is checked
        latest = latest_version(project, ds.uri)
        if latest is None:
            raise TableError("BE053", f"Delta table '{ds.uri}' not found (no _delta_log)")
        old = int(pinned["version"])
        if latest == old:
            return None
        steps = describe_commits(project, ds.uri, old, latest)
        count = latest - old
        what = (f"{count} commit{'s' if count != 1 else ''}" if count > 0
                else "the table was recreated")
        return (f"version {latest}, the lock pins {old}",
                what + (" — " + ", ".join(steps) if steps else ""))
    if ds.snapshot is not None:
        return None
    old = int(pinned["snapshot"])
    now = open_snapshot(project, ds, ref=ds.ref, since=old)
    if now.version == old:
        return None
    ref = ds.ref or "main"
    count = len(now.changes)
    return (f"ref '{ref}' is at snapshot {now.version}, the lock pins {old}",
            f"{count} snapshot{'s' if count != 1 else ''}"
            + (" — " + ", ".join(now.changes) if now.changes else ""))


def _kind(ds: Dataset) -> str:
    return "Delta" if ds.format == "delta" else "Iceberg"


def _name(ds: Dataset, version: TableVersion) -> str:
    return f"{_kind(ds)} table '{ds.uri}' {version.label}"


def _some(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{p}'" for p in paths[:limit])
    more = len(paths) - limit
    return shown + (f" and {more} more" if more > 0 else "")
