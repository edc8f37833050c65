"""Which keys go with which source of a dataset: Delta and Iceberg tables, `.dvc` pins, files.

A Delta table is pinned by `version` or `as_of` (or follows its latest commit); an Iceberg table
by `snapshot` or `ref`, in a `catalog`; a `dvc:` pin names the `.dvc` file whose bytes the
dataset is. Keys of one source on another are refused (BE070) at their YAML line, so a typo
in `format` never silently drops a pin. Checked on the merged document, like the other
cross-references (`references.py`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.env.spec import TABLE_FORMATS
from buildenv.env.uris import uri_problem

__all__ = ["ICEBERG_IDENTIFIER", "source_problems"]

ICEBERG_IDENTIFIER = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+$")
_DELTA_ONLY = ("version", "as_of")
_ICEBERG_ONLY = ("catalog", "ref", "snapshot")


def source_problems(datasets: dict[str, Any], diag: Callable[..., Diagnostic],
                    mapping: Callable[[Any], dict[str, Any]], project: Project) -> list[Diagnostic]:
    """BE070 for keys that do not belong to the dataset's format, a missing catalog, two pins
    at once, or a `dvc:` pin on a table; uri problems of table datasets (BE015/BE018)."""
    problems: list[Diagnostic] = []
    for name, raw in datasets.items():
        ds = mapping(raw)
        fmt = ds.get("format", "parquet")
        if not isinstance(fmt, str):
            continue

        def refuse(key: str, why: str, hint: str | None = None, name: str = name) -> None:
            problems.append(diag("BE070", f"dataset '{name}': {why}", "datasets", name, key,
                                 hint=hint))

        _foreign_keys(ds, fmt, refuse)
        if fmt == "delta":
            problems.extend(_delta_problems(name, ds, refuse, diag, project))
        elif fmt == "iceberg":
            _iceberg_problems(name, ds, refuse, diag, problems)
        elif ds.get("dvc") is not None:
            _dvc_problems(ds, refuse)
    return problems


def _foreign_keys(ds: dict[str, Any], fmt: str, refuse: Callable[..., None]) -> None:
    """Pins of another format's tables; partitions or a DVC pin on a table."""
    foreign = [k for k in (*_DELTA_ONLY, *_ICEBERG_ONLY) if ds.get(k) is not None
               and not (fmt == "delta" and k in _DELTA_ONLY)
               and not (fmt == "iceberg" and k in _ICEBERG_ONLY)]
    for key in foreign:
        owner = "delta" if key in _DELTA_ONLY else "iceberg"
        refuse(key, f"`{key}` pins a version of a `format: {owner}` table; this dataset is "
               f"`format: {fmt}`", hint=f"set `format: {owner}`, or remove `{key}`")
    if fmt in TABLE_FORMATS:
        if ds.get("partitions") is not None:
            refuse("partitions", "a table is partitioned by its own partition spec, not by "
                   "`partitions`", hint="remove `partitions`")
        if ds.get("dvc") is not None:
            refuse("dvc", "a table keeps its own history; `dvc` pins files",
                   hint="remove `dvc`")


def _delta_problems(name: str, ds: dict[str, Any], refuse: Callable[..., None],
                    diag: Callable[..., Diagnostic], project: Project) -> list[Diagnostic]:
    if ds.get("version") is not None and ds.get("as_of") is not None:
        refuse("as_of", "`version` and `as_of` are two pins: keep one")
    as_of = ds.get("as_of")
    if isinstance(as_of, str) and _timestamp(as_of) is None:
        refuse("as_of", f"`as_of` '{as_of}' is not an ISO 8601 time",
               hint="write e.g. 2026-09-30T12:00:00Z")
    uri = ds.get("uri")
    if not isinstance(uri, str):
        return []
    problem = uri_problem(uri.rstrip("/") + "/", project)  # a table is a directory
    if problem is None:
        return []
    code, message, hint = problem
    return [diag(code, f"dataset '{name}': {message}", "datasets", name, "uri", hint=hint)]


def _iceberg_problems(name: str, ds: dict[str, Any], refuse: Callable[..., None],
                      diag: Callable[..., Diagnostic], problems: list[Diagnostic]) -> None:
    if ds.get("catalog") is None:
        problems.append(diag("BE070", f"dataset '{name}': an Iceberg table needs the `catalog` "
                             "it is registered in", "datasets", name,
                             hint="add `catalog: {type: sql, uri: sqlite:///...}`"))
    if ds.get("ref") is not None and ds.get("snapshot") is not None:
        refuse("snapshot", "`ref` and `snapshot` are two pins: keep one")
    uri = ds.get("uri")
    if isinstance(uri, str) and not ICEBERG_IDENTIFIER.match(uri):
        refuse("uri", f"'{uri}' is not an Iceberg table identifier",
               hint="write `namespace.table`, as the catalog names it")


def _dvc_problems(ds: dict[str, Any], refuse: Callable[..., None]) -> None:
    pin, uri = ds.get("dvc"), ds.get("uri")
    if isinstance(pin, str) and not pin.endswith(".dvc"):
        refuse("dvc", f"'{pin}' is not a `.dvc` file",
               hint="name the `.dvc` file that `dvc add` wrote for the data")
    if isinstance(uri, str) and uri.endswith("/"):
        refuse("dvc", "a `dvc` pin names one file; a directory pin is not supported",
               hint="pin each file with its own `.dvc` file, or drop `dvc`")


def _timestamp(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
