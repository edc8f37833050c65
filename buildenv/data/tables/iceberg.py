"""Apache Iceberg tables, read with PyIceberg: a catalog, a table, a snapshot and its files.

`open_snapshot` loads the table from its catalog (SQL on SQLite or PostgreSQL, or REST), picks
the snapshot the dataset pins (`snapshot`), or the head of `ref` (a branch or tag; `main` by
default), and lists its data files with their identity-partition values. It refuses what
cannot be read as plain Parquet file by file: snapshots with delete files, data files in
another format, and (`check_field_names`) data files that store a renamed column under its old
name (Iceberg maps columns by field id; buildenv reads them by name).

Every catalog call runs under the catalog's `timeout` (`with_deadline`): PyIceberg's REST
client has none, and a PostgreSQL server that accepts but never answers would block forever.
An expired snapshot is checked for explicitly: PyIceberg plans an expired snapshot id as an
empty list of files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from buildenv.core.diagnostics import did_you_mean
from buildenv.data.tables.version import TableError, TableFile, TableVersion, require_tables

if TYPE_CHECKING:
    from buildenv.core.project import Project
    from buildenv.env.spec import Catalog, Dataset

# Deferred imports (pyiceberg, pyarrow): PyIceberg is the tables extra's; pyarrow stays off the
# start-up path of `buildenv lock`, which imports this module.

__all__ = ["DATA_ROOT", "catalog_properties", "check_field_names", "open_snapshot",
           "with_deadline"]

DATA_ROOT = "buildenv.data-root"  # the catalog property iceberg_io.RepoFileIO resolves against

T = TypeVar("T")
MAIN = "main"


def with_deadline(fn: Callable[[], T], seconds: float, what: str) -> T:
    """`fn()` in a thread; TableError BE073 naming `what` when it takes longer than `seconds`
    (the thread is abandoned: a daemon blocked on a socket that never answers)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="buildenv-catalog", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TableError("BE073", f"{what} did not answer within {seconds:g} s",
                         "check that the catalog is up and reachable, or raise "
                         "`catalog.timeout`")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def catalog_properties(project: Project, catalog: Catalog) -> dict[str, str]:
    """PyIceberg properties: relative SQLite paths and table locations resolved against the
    repository, a PostgreSQL connect timeout, the S3 endpoint of AWS_ENDPOINT_URL, then the
    catalog's own `properties`."""
    uri = catalog.uri
    if catalog.type == "sql":
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{(project.data_base / uri[len('sqlite:///'):]).resolve()}"
        elif uri.startswith("postgresql") and "connect_timeout" not in uri:
            # libpq's own timeout (PyIceberg passes no connect arguments); it tries twice
            seconds = max(1, int(catalog.timeout / 2))
            uri += ("&" if "?" in uri else "?") + f"connect_timeout={seconds}"
    props = {"type": catalog.type, "uri": uri, DATA_ROOT: str(project.data_base),
             "py-io-impl": "buildenv.data.tables.iceberg_io.RepoFileIO"}
    if catalog.warehouse:
        props["warehouse"] = catalog.warehouse
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        props["s3.endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        props["s3.region"] = region
    props.update(catalog.properties)
    return props


def _catalog_label(catalog: Catalog) -> str:
    parsed = urlparse(catalog.uri)
    where = catalog.uri if not parsed.password else catalog.uri.replace(parsed.password, "***")
    return f"catalog '{catalog.name}' ({catalog.type}, {where})"


def _sqlite_missing(project: Project, catalog: Catalog) -> str | None:
    """The SQLite file a catalog names when it does not exist (PyIceberg would create it)."""
    if catalog.type != "sql" or not catalog.uri.startswith("sqlite:///"):
        return None
    rest = catalog.uri[len("sqlite:///"):].split("?", 1)[0]
    target = project.data_base / rest  # an absolute path (sqlite:////...) stays absolute
    return None if target.is_file() else str(target)


def _load_table(project: Project, ds: Dataset) -> Any:
    assert ds.catalog is not None
    catalog = ds.catalog
    label = _catalog_label(catalog)
    missing = _sqlite_missing(project, catalog)
    if missing is not None:
        raise TableError("BE053", f"{label}: the database '{missing}' does not exist")

    def load() -> Any:
        from pyiceberg.catalog import load_catalog  # pants: no-infer-dep (the tables extra)

        return load_catalog(catalog.name, **catalog_properties(project, catalog)
                            ).load_table(ds.uri)

    import pyiceberg.exceptions as iceberg_errors  # pants: no-infer-dep (the tables extra)

    try:
        return with_deadline(load, catalog.timeout, label)
    except (iceberg_errors.NoSuchTableError, iceberg_errors.NoSuchNamespaceError):
        raise TableError("BE053", f"Iceberg table '{ds.uri}' is not in {label}") from None
    except TableError:
        raise
    except Exception as exc:  # connection refused, bad credentials, SQL errors, ...
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError("BE073", f"{label} is unreachable: {text}") from None


def open_snapshot(project: Project, ds: Dataset, *, snapshot: int | None = None,
                  ref: str | None = None, since: int | None = None) -> TableVersion:
    """The files of `snapshot`, or of the head of `ref` (default `main`), of the Iceberg table
    `ds.uri`. With `since`, `changes` says what the snapshots after it did. TableError when
    the snapshot was expired (BE072), the ref does not exist (BE074), the snapshot has delete
    files or non-Parquet data (BE075), or the catalog is unreachable (BE073)."""
    require_tables(f"dataset '{ds.uri}' (format: iceberg)")
    assert ds.catalog is not None
    table = _load_table(project, ds)
    name = f"Iceberg table '{ds.uri}'"
    refs = table.metadata.refs
    if snapshot is not None:
        found = table.snapshot_by_id(snapshot)
        if found is None:
            raise TableError("BE072", f"{name} has no snapshot {snapshot} (it was expired, or "
                             "never existed)", "tag a snapshot you pin: tags are never "
                             "expired")
        ref_name = ref
    else:
        ref_name = ref or MAIN
        if ref_name not in refs:
            if ref is None and not refs:
                raise TableError("BE072", f"{name} has no snapshot yet (nothing was written)")
            known = ", ".join(sorted(refs)) or "none"
            raise TableError("BE074", f"{name} has no branch or tag '{ref_name}' (refs: "
                             f"{known})", did_you_mean(ref_name, list(refs)) or "")
        found = table.snapshot_by_id(refs[ref_name].snapshot_id)
        if found is None:
            raise TableError("BE072", f"{name}: ref '{ref_name}' points at a snapshot that "
                             "no longer exists")
    label = f"{name} snapshot {found.snapshot_id}"
    summary = found.summary.additional_properties if found.summary is not None else {}
    deletes = int(summary.get("total-delete-files", "0") or 0)
    if deletes:
        raise TableError("BE075", f"{label} has {deletes} delete file(s): its rows are not "
                         "the rows of its data files", "rewrite the data files (compaction) "
                         "or pin a snapshot without deletes")
    schemas = table.schemas()
    schema = schemas.get(found.schema_id) if found.schema_id is not None else None
    schema = schema or table.schema()
    base = table.location().rstrip("/")
    files = _files(table, found.snapshot_id, schema, base, label)
    arrow = schema.as_arrow()
    partitions = sorted({p for f in files for p in (f.values or {})})
    details: dict[str, Any] = {"catalog": ds.catalog.name, "schema_id": schema.schema_id,
                               "_field_ids": {f.name: f.field_id for f in schema.fields}}
    if ref_name is not None:
        details["ref"] = ref_name
    details["metadata"] = table.metadata_location
    changes = _changes(table, found.snapshot_id, since) if since is not None else ()
    return TableVersion("iceberg", base, found.snapshot_id, int(found.timestamp_ms),
                        tuple((f.name, str(f.type)) for f in arrow), tuple(partitions),
                        files, details, changes)


def _files(table: Any, snapshot_id: int, schema: Any, base: str, label: str
           ) -> tuple[TableFile, ...]:
    from pyiceberg.manifest import FileFormat  # pants: no-infer-dep (the tables extra)
    from pyiceberg.transforms import IdentityTransform  # pants: no-infer-dep (the tables extra)

    specs = table.specs()
    out = []
    for task in table.scan(snapshot_id=snapshot_id).plan_files():
        data = task.file
        path = str(data.file_path)
        if task.delete_files:
            raise TableError("BE075", f"{label}: '{path}' has delete files")
        if data.file_format != FileFormat.PARQUET:
            raise TableError("BE075", f"{label}: '{path}' is {data.file_format}, not Parquet")
        if not path.startswith(base + "/"):
            raise TableError("BE075", f"{label}: '{path}' lies outside the table's location "
                             f"'{base}'")
        values: dict[str, str | None] = {}
        spec = specs.get(data.spec_id)
        for i, field in enumerate(spec.fields if spec is not None else ()):
            if not isinstance(field.transform, IdentityTransform):
                continue
            column = schema.find_column_name(field.source_id)
            value = data.partition[i]
            if column is not None and (value is None or isinstance(value, (str, int, bool))):
                values[column] = (None if value is None else
                                  ("true" if value else "false") if isinstance(value, bool)
                                  else str(value))
        out.append(TableFile(path[len(base) + 1:], int(data.file_size_in_bytes),
                             int(data.record_count), values or None))
    return tuple(sorted(out, key=lambda f: f.path))


def _changes(table: Any, newest: int, since: int) -> tuple[str, ...]:
    """'append 3 files', ... for the snapshots after `since` up to `newest`, oldest first."""
    out = []
    current = table.snapshot_by_id(newest)
    while current is not None and current.snapshot_id != since:
        summary = current.summary
        props = summary.additional_properties if summary is not None else {}
        operation = summary.operation.value if summary is not None else "?"
        added = int(props.get("added-data-files", "0") or 0)
        removed = int(props.get("deleted-data-files", "0") or 0)
        text = operation + (f" {added} file{'s' if added != 1 else ''}" if added else "")
        if removed:
            text += f"{',' if added else ''} removed {removed}"
        out.append(text)
        parent = current.parent_snapshot_id
        current = table.snapshot_by_id(parent) if parent is not None else None
    return tuple(reversed(out))


def check_field_names(version: TableVersion, opened: Callable[[str], Any]) -> None:
    """BE075 when a data file stores a column under another name than the version's schema
    gives its field id (a renamed column): buildenv reads columns by name. `opened(path)`
    returns a random-access file of a data file."""
    import pyarrow.parquet as pq

    ids = {int(v): k for k, v in version.details.get("_field_ids", {}).items()}
    for entry in version.files:
        with opened(entry.path) as handle:
            schema = pq.read_schema(handle)
        for stored in schema:
            raw = (stored.metadata or {}).get(b"PARQUET:field_id")
            if raw is None:
                continue
            name = ids.get(int(raw))
            if name is not None and name != stored.name:
                raise TableError("BE075", f"Iceberg table snapshot {version.version}: "
                                 f"'{entry.path}' stores column '{name}' as '{stored.name}' "
                                 "(renamed since the file was written)", "rewrite the table's "
                                 "data files, or rename the column back")
