"""Delta Lake tables, read with delta-rs (`deltalake`; no Spark, no JVM).

`open_version` answers which data files make up a version (the add actions of its log
snapshot), with typed partition values and the version's schema. It refuses what cannot be
read as plain Parquet file by file: deletion vectors (rows deleted without rewriting the file)
and column mapping (physical column names differ from the logical ones); delta-rs' own
`to_pyarrow_table` returns nulls for the latter, so buildenv never reads through it.

`latest_version` lists `_delta_log/` (one listing, no library): the lock check of a table that
follows its latest commit costs that. `describe_commits` says what happened between two
versions ("WRITE append 3 files, DELETE 1 file") from the log's commit info, for `lock --check`.

Storage: local paths and `s3://` (credentials and endpoint from the usual AWS variables; an
`http://` endpoint such as MinIO or moto is allowed), with a timeout so an unreachable store is
a diagnostic (BE073), not a hang. delta-rs' runtime does not survive `fork`: process pools that
touch it must spawn.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from buildenv.data.storage import Location, locate
from buildenv.data.tables.version import (
    TableError,
    TableFile,
    TableVersion,
    iso_time,
    require_tables,
)

if TYPE_CHECKING:
    from buildenv.core.project import Project
    from buildenv.env.spec import Dataset

# Deferred imports (deltalake, pyarrow): delta-rs is the tables extra's; pyarrow stays off the
# start-up path of `buildenv lock`, which imports this module.

__all__ = ["describe_commits", "latest_version", "open_version", "read_commit", "table_location"]

TIMEOUT = "30s"
_COMMIT = re.compile(r"^(\d{20})\.json$")


def table_location(project: Project, uri: str) -> Location:
    return locate(uri.rstrip("/"), project)


def _table_uri(location: Location) -> str:
    return str(location.local) if location.local is not None else location.uri.rstrip("/")


def storage_options(location: Location) -> dict[str, str]:
    """delta-rs options for an object store: the endpoint of AWS_ENDPOINT_URL(_S3) (plain
    http allowed, as MinIO and moto serve it) and timeouts instead of minutes of retries."""
    if location.local is not None:
        return {}
    options = {"timeout": TIMEOUT, "connect_timeout": "10s", "max_retries": "2",
               "retry_timeout": TIMEOUT}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def _open(location: Location, uri: str, version: int | None = None) -> Any:
    """The table at its latest version (or at `version`: the log is then replayed up to it
    only, where opening the latest and going back replays it twice; None when that version
    cannot be loaded, for the caller to say why); TableError when it is not a table or
    unreachable."""
    require_tables(f"dataset '{uri}' (format: delta)")
    from deltalake import DeltaTable  # pants: no-infer-dep (the tables extra)
    from deltalake.exceptions import (  # pants: no-infer-dep (the tables extra)
        DeltaError,
        TableNotFoundError,
    )

    try:
        return DeltaTable(_table_uri(location), version=version,
                          storage_options=storage_options(location))
    except TableNotFoundError as exc:
        if location.local is not None and not location.local.exists():
            raise TableError("BE053", f"Delta table '{uri}' not found") from None
        raise TableError("BE053", f"'{uri}' is not a Delta table ({_first_line(exc)})",
                         "a Delta table is a directory with a `_delta_log/`") from None
    except OSError as exc:
        raise TableError("BE073", f"Delta table '{uri}' is unreachable: {_first_line(exc)}",
                         "check the endpoint and credentials (AWS_* variables)") from None
    except DeltaError:
        if version is None:
            raise
        return None  # no such version (any more): the latest says which exist


def open_version(project: Project, ds: Dataset, version: int | None,
                 as_of: str | None = None) -> TableVersion:
    """The files of version `version` (or the latest committed at or before `as_of`, or the
    latest) of the Delta table at `ds.uri`. TableError when it does not exist (any more)
    (BE072), cannot be read file by file (BE075) or is unreachable (BE073)."""
    location = table_location(project, ds.uri)
    history: list[dict[str, Any]] = []
    table = _open(location, ds.uri, version) if version is not None and as_of is None else None
    if table is None:
        table = _at_version(location, ds.uri, version, as_of, history)
    number = table.version()
    label = f"Delta table '{ds.uri}' version {number}"
    _refuse_unreadable(table, label)
    import pyarrow as pa

    schema = pa.schema(table.schema().to_arrow())
    partitions = tuple(table.metadata().partition_columns)
    actions = _arrow(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    records = (actions.column("num_records").to_pylist() if "num_records" in
               actions.column_names else [None] * len(paths))
    values = {p: actions.column(f"partition.{p}").to_pylist() for p in partitions}
    files = tuple(sorted(
        (TableFile(unquote(path), int(size), int(rows or 0),
                   {p: _text(values[p][i]) for p in partitions} if partitions else None)
         for i, (path, size, rows) in enumerate(zip(paths, sizes, records))),
        key=lambda f: f.path))
    committed = _commit_time(location, number)
    if committed is None:  # the commit file was cleaned up: the log's history may still say
        committed = next((int(h["timestamp"]) for h in (history or table.history())
                          if h.get("version") == number), 0)
    return TableVersion("delta", ds.uri.rstrip("/"), number, committed,
                        tuple((f.name, str(f.type)) for f in schema), partitions, files)


def _at_version(location: Location, uri: str, version: int | None, as_of: str | None,
                history: list[dict[str, Any]]) -> Any:
    """The table opened at its latest version, then moved to `version` or to the latest
    committed at or before `as_of` (the log's `history` is added to `history`); BE072 naming
    the version when it does not exist or its commits were cleaned up."""
    table = _open(location, uri)
    from deltalake.exceptions import DeltaError  # pants: no-infer-dep (the tables extra)

    latest = table.version()
    try:
        if as_of is not None:
            history.extend(table.history())
            version = _version_as_of(uri, history, as_of)
        if version is not None and version != latest:
            if version > latest:
                raise TableError("BE072", f"Delta table '{uri}' has no version {version} "
                                 f"(its latest is {latest})")
            table.load_as_version(version)
    except DeltaError as exc:
        raise TableError("BE072", f"Delta table '{uri}': version {version} is no longer in "
                         f"its log ({_first_line(exc)})", "the log was cleaned up after the "
                         "version was pinned: pin a version that exists") from None
    except OSError as exc:
        raise TableError("BE073", f"Delta table '{uri}' is unreachable: "
                         f"{_first_line(exc)}") from None
    return table


def read_commit(location: Location, version: int) -> bytes | None:
    """The bytes of commit file `version` of the table at `location` (a plain read for a local
    table: pyarrow's filesystem costs more than the read); None when it is not in the log."""
    name = f"_delta_log/{version:020d}.json"
    try:
        if location.local is not None:
            with open(os.path.join(location.key, *name.split("/")), "rb") as handle:
                return handle.read()
        with location.child(name).open() as stream:
            return bytes(stream.read())
    except OSError:
        return None


def _commit_time(location: Location, version: int) -> int | None:
    """When `version` was committed, from its commit file's `commitInfo` (one small read,
    where delta-rs' history reads the whole log); None when the log does not say."""
    data = read_commit(location, version)
    try:
        text = data.decode("utf-8") if data is not None else ""
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        if '"commitInfo"' in line:
            try:
                stamp = json.loads(line)["commitInfo"].get("timestamp")
            except (ValueError, KeyError, AttributeError):
                return None
            return int(stamp) if isinstance(stamp, (int, float)) else None
    return None


def _refuse_unreadable(table: Any, label: str) -> None:
    """BE075 for a version whose rows are not its Parquet files' rows as stored."""
    mode = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise TableError("BE075", f"{label} uses column mapping (mode '{mode}'): its Parquet "
                         "files name columns differently from the table",
                         "buildenv reads a pinned version file by file as plain Parquet: "
                         "pin a table without column mapping")
    features = table.protocol().reader_features or []
    if "deletionVectors" in features:
        vectors = _arrow(table.deletion_vectors().read_all())
        if vectors.num_rows:
            first = str(vectors.column("filepath")[0].as_py()).rsplit("/", 1)[-1]
            raise TableError("BE075", f"{label} has deletion vectors ({vectors.num_rows} "
                             f"file(s), e.g. '{first}'): rows are deleted without rewriting "
                             "the files", "rewrite the files (OPTIMIZE / REORG TABLE ... "
                             "APPLY (PURGE)) or pin a version before the delete")


def _arrow(data: Any) -> Any:
    """delta-rs' Arrow table (arro3) as a pyarrow Table, through the Arrow C stream:
    `pa.table()` would first ask pandas whether it is a DataFrame, importing pandas (a third
    of a second of `buildenv lock`)."""
    import pyarrow as pa

    return pa.RecordBatchReader.from_stream(data).read_all()


def _version_as_of(uri: str, history: list[dict[str, Any]], as_of: str) -> int:
    """The latest version committed at or before `as_of`; BE072 when the table's first
    remaining commit is later (delta-rs would silently answer version 0)."""
    when = dt.datetime.fromisoformat(as_of)
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    ms = int(when.timestamp() * 1000)
    eligible = [int(h["version"]) for h in history
                if "version" in h and int(h.get("timestamp", 0)) <= ms]
    if not eligible:
        first = min((int(h.get("timestamp", 0)) for h in history), default=0)
        raise TableError("BE072", f"Delta table '{uri}' has no version committed at or before "
                         f"{as_of} (its first remaining commit is at {iso_time(first)})")
    return max(eligible)


def latest_version(project: Project, uri: str) -> int | None:
    """The newest commit in `_delta_log/` (None when there is no log): no library needed."""
    log = table_location(project, uri).child("_delta_log")
    try:
        names = (os.listdir(log.key) if log.local is not None  # no stat per commit
                 else [rel for rel, _ in log.walk() if "/" not in rel])
    except (FileNotFoundError, NotADirectoryError):
        return None
    versions = [int(m.group(1)) for name in names if (m := _COMMIT.match(name))]
    return max(versions) if versions else None


def describe_commits(project: Project, uri: str, after: int, upto: int) -> list[str]:
    """'WRITE append 3 files', 'DELETE 1 file', ... for the commits after `after` up to
    `upto`, oldest first (empty when the library is missing or the log cannot say)."""
    try:
        table = _open(table_location(project, uri), uri)
        history = table.history(limit=max(1, table.version() - after))
    except Exception:
        return []
    out = []
    for entry in sorted(history, key=lambda h: int(h.get("version", -1))):
        number = int(entry.get("version", -1))
        if not after < number <= upto:
            continue
        operation = str(entry.get("operation", "?"))
        mode = (entry.get("operationParameters") or {}).get("mode")
        metrics = entry.get("operationMetrics") or {}
        added = _metric(metrics, "num_added_files", "numAddedFiles", "numFiles")
        removed = _metric(metrics, "num_removed_files", "numRemovedFiles")
        text = operation + (f" {str(mode).lower()}" if mode else "")
        if added:
            text += f" {added} file{'s' if added != 1 else ''}"
        if removed:
            text += f"{',' if added else ''} removed {removed}"
        out.append(text)
    return out


def _metric(metrics: dict[str, Any], *names: str) -> int:
    """delta-rs writes ints under snake_case names; Spark writes strings under camelCase."""
    for name in names:
        if name in metrics:
            try:
                return int(metrics[name])
            except (TypeError, ValueError):
                return 0
    return 0


def _text(value: Any) -> str | None:
    """A typed partition value as the text the gate types again from the declaration."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
