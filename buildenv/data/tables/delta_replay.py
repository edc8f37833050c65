"""Relocking a Delta table from the log: the pinned version's files plus the commits since.

A relock after an append asks which files the new version has. The lock already holds the
answer for the version it pins (each file's path, size, rows and partition values); an append
adds a commit file or two to `_delta_log/`. `replay` reads those few commit files and applies
their `add` and `remove` actions to the pinned files, where opening the table with delta-rs
replays the whole log (its latest checkpoint plus the commits since): a third of a relock.

It answers only when every commit is something it fully understands, and None otherwise, for
the caller to open the table with delta-rs (`delta.open_version`), whose answer it must equal:

- the pinned version's own commit is still in the log, committed when the lock says (a table
  deleted and written again starts its versions anew);
- every commit after it up to the version asked for is in the log (none cleaned up);
- each holds only `add`, `remove`, `commitInfo` and `txn` actions: a `metaData` (schema,
  partitioning, column mapping), `protocol` (deletion vectors, ...) or any other action falls
  back, as does a deletion vector on a file, an `add` without its row count in `stats`, a path
  that is not a plain relative path (escaped, absolute), a partition value that is not a
  plain string of a string column, a `remove` of a file the pinned version does not have, and
  a file added and removed in one commit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from buildenv.data.tables.delta import latest_version, read_commit, table_location
from buildenv.data.tables.version import TableFile, TableVersion, iso_time

if TYPE_CHECKING:
    from buildenv.core.project import Project
    from buildenv.env.spec import Dataset

__all__ = ["replay"]

_PLAIN_ACTIONS = {"add", "remove", "commitInfo", "txn"}
_STRING_TYPES = {"string", "large_string", "string_view"}


class _Fallback(Exception):
    """Something in the log this replay does not fully understand."""


def replay(project: Project, ds: Dataset, pinned: TableVersion) -> TableVersion | None:
    """The version of `ds` its declaration selects now (`version:` or the latest commit),
    from `pinned` (the version the lock holds, with its files) and the commit files since;
    None when the log holds anything but plain appends and removals (see the module's
    docstring), or when the declaration pins a time (`as_of`)."""
    if ds.format != "delta" or ds.as_of is not None or pinned.format != "delta":
        return None
    location = table_location(project, ds.uri)
    base = ds.uri.rstrip("/")
    if pinned.base != base:
        return None
    target = ds.version if ds.version is not None else latest_version(project, ds.uri)
    if target is None or target < pinned.version:
        return None
    try:
        first = _actions(read_commit(location, pinned.version))
        if iso_time(_commit_time(first)) != iso_time(pinned.timestamp_ms):
            return None  # not the commit the lock pinned: the table was written anew
        files = {f.path: f for f in pinned.files}
        committed = pinned.timestamp_ms
        string_partitions = _string_partitions(pinned)
        for number in range(pinned.version + 1, target + 1):
            actions = _actions(read_commit(location, number))
            _apply(actions, files, pinned.partitions, string_partitions)
            committed = _commit_time(actions)
    except _Fallback:
        return None
    return TableVersion("delta", base, target, committed, pinned.schema, pinned.partitions,
                        tuple(sorted(files.values(), key=lambda f: f.path)))


def _actions(text: bytes | None) -> list[dict[str, Any]]:
    """The actions of one commit file, one JSON object a line."""
    if text is None:
        raise _Fallback("commit not in the log")
    try:
        out = [json.loads(line) for line in text.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError):
        raise _Fallback("unreadable commit") from None
    if not all(isinstance(a, dict) and len(a) == 1 for a in out):
        raise _Fallback("not one action a line")
    return out


def _commit_time(actions: list[dict[str, Any]]) -> int:
    for action in actions:
        info = action.get("commitInfo")
        if isinstance(info, dict):
            stamp = info.get("timestamp")
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                return stamp
    raise _Fallback("no commit time")


def _string_partitions(pinned: TableVersion) -> bool:
    """Whether every partition column is a string column (its log values are its text)."""
    schema = dict(pinned.schema)
    return all(schema.get(p) in _STRING_TYPES for p in pinned.partitions)


def _apply(actions: list[dict[str, Any]], files: dict[str, TableFile],
           partitions: tuple[str, ...], string_partitions: bool) -> None:
    """Apply one commit's add and remove actions to `files` (path -> file), in place."""
    added: dict[str, TableFile] = {}
    removed: set[str] = set()
    for action in actions:
        (kind, body), = action.items()
        if kind not in _PLAIN_ACTIONS:
            raise _Fallback(f"a {kind} action")
        if kind in ("commitInfo", "txn"):
            continue
        if not isinstance(body, dict) or body.get("deletionVector") is not None:
            raise _Fallback("a deletion vector")
        path = _plain_path(body.get("path"))
        if path in added or path in removed:
            raise _Fallback("a file named twice in one commit")
        if kind == "remove":
            removed.add(path)
        else:
            added[path] = _added_file(path, body, partitions, string_partitions)
    for path in removed:
        if path not in files:
            raise _Fallback("a remove of a file the version does not have")
        del files[path]
    files.update(added)


def _plain_path(path: Any) -> str:
    """A relative path inside the table as stored (no escape, no scheme, not absolute, no
    `..` or empty segment), else fall back."""
    if not isinstance(path, str) or not path or "%" in path or ":" in path or \
            path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise _Fallback("not a plain relative path")
    return path


def _added_file(path: str, body: dict[str, Any], partitions: tuple[str, ...],
                string_partitions: bool) -> TableFile:
    size = body.get("size")
    try:
        rows = json.loads(body["stats"])["numRecords"]
    except (KeyError, TypeError, ValueError):
        raise _Fallback("no row count") from None
    if not (isinstance(size, int) and isinstance(rows, int)) or isinstance(rows, bool) or \
            rows <= 0:
        raise _Fallback("no size or row count")
    values: dict[str, str | None] | None = None
    if partitions:
        found = body.get("partitionValues")
        if not string_partitions or not isinstance(found, dict) or set(found) != set(partitions):
            raise _Fallback("partition values not plain strings")
        values = {}
        for name in partitions:
            value = found[name]
            if value is not None and (not isinstance(value, str) or not value):
                raise _Fallback("partition value not a plain string")
            values[name] = value
    return TableFile(path, size, rows, values)
