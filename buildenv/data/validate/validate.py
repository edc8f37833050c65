"""Data validation: each dataset against its declared columns, streamed and vectorised.

Record batches are read with bounded memory and checked with pyarrow compute.
String columns with a domain, pattern or length are read dictionary-encoded, so
those tests run once per dictionary entry (RE2 for patterns) and rows are
counted by a `take` over the indices; ranges (either end may be open) use a
per-batch min/max and count offending rows only when a bound is crossed; unique
columns stream into `uniqueness.DuplicateCounter` (exact, bounded memory).
Each constraint is judged against `max_violation_fraction` of the non-null
values: above it an error, up to it a warning. Restricted datasets yield counts
and fractions only, never a value. Results are cached by (dataset digest,
column-spec digest).

A partitioned dataset is checked one task per file (`validate_partitioned`: each file's columns
and types, and the same per-column counts), run by an executor (in this process or as Ray
tasks) and merged in file order, so the result is the same wherever the tasks ran; `unique`
columns then stream through one counter in this process. Partition values are checked from
the paths with the same kernels: one that does not convert, is null in a non-nullable column
or breaks the column's rules is BE063, naming the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.executor import Executor, LocalExecutor
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import type_accepts
from buildenv.data.gate.gate import Gate
from buildenv.data.gate.partitioned_read import PartitionedRead
from buildenv.data.lock.lockfile import Lock
from buildenv.data.lock.manifest import Manifest
from buildenv.data.lock.tables import declared_pin
from buildenv.data.validate.column_checks import (
    EXAMPLES,
    ColumnChecks,
    ColumnReport,
    check_batch,
    checks_for,
    dictionary_columns,
    spill_dir,
)
from buildenv.data.validate.partitioned import validate_partitioned
from buildenv.data.validate.uniqueness import DuplicateCounter
from buildenv.data.validate.violations import close, judge, suggest, undeclared
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Dataset

__all__ = ["ColumnChecks", "ColumnReport", "check_batch", "validate_dataset", "validate_env"]


def validate_dataset(res: Resolved, ds_name: str, project: Project,
                     digest: str | Manifest | None = None, purpose: str = "validate",
                     executor: Executor | None = None) -> tuple[list[Diagnostic], str | None]:
    """Every violation of `ds_name`'s column declarations, one diagnostic per (column, rule),
    and the digest of the bytes validated (None when they could not be read).

    The bytes are read through the gate: verified against `digest` when given (a lock pin;
    a manifest for a partitioned dataset), otherwise hashed while read so the result can be
    cached by what was actually checked. `executor` runs a partitioned dataset's file tasks."""
    env = res.env
    dataset = env.datasets[ds_name]
    restricted = env.restricted(ds_name)
    columns = list(dataset.columns)
    dict_cols = dictionary_columns(dataset.columns)
    gate = Gate(project, env, purpose, where=res)
    try:
        read = gate.open(ds_name, expect=digest)
    except GateError as exc:
        return [exc.diagnostic], None
    with read:
        if isinstance(read, PartitionedRead):
            return validate_partitioned(res, ds_name, dataset, read, dict_cols, restricted,
                                         executor or LocalExecutor())
        return _validate_read(res, ds_name, dataset, read, columns, dict_cols, restricted)


def _validate_read(res: Resolved, ds_name: str, dataset: Dataset, read: Any, columns: list[str],
                   dict_cols: list[str], restricted: bool) -> tuple[list[Diagnostic], str | None]:
    try:
        schema = read.schema
    except GateError as exc:
        return [exc.diagnostic], None
    problems: list[Diagnostic] = []
    checked: dict[str, ColumnChecks] = {}
    problems.extend(undeclared(res, ds_name, dataset, list(schema.names), dataset.uri))
    for name, col in dataset.columns.items():
        where = ("datasets", ds_name, "columns", name)
        if name not in schema.names:
            if not col.required:  # may be absent: it reads as nulls
                continue
            hint = close(name, schema.names) or _in_file_uri(dataset.uri, name)
            problems.append(res.diag("BE206", f"dataset '{ds_name}' has no column '{name}' "
                                     f"({dataset.uri})", *where, hints=(hint,) if hint else ()))
            continue
        actual = schema.field(name).type
        if not type_accepts(col.dtype, actual):
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared {col.dtype}, stored "
                                     f"as {actual}", *where, "dtype",
                                     hints=(f"declare `dtype: {suggest(actual)}` or cast the "
                                            "column when writing the data",)))
            continue
        checked[name] = checks_for(
            col, actual, examples=not restricted,
            duplicates=DuplicateCounter(examples=0 if restricted else EXAMPLES,
                                        spill_dir=spill_dir(read))
            if col.unique else None)
    reports = {name: ColumnReport() for name in checked}
    try:
        for batch in progress.batches(read.batches(list(checked), dictionary=dict_cols),
                                      f"validate {dataset.uri}", read.total_rows):
            for name, checks in checked.items():
                arr = batch.column(batch.schema.get_field_index(name))
                check_batch(arr, checks, reports[name])
    except GateError as exc:  # nothing decoded so far is reported: the bytes are not trusted
        problems.append(exc.diagnostic)
        return problems, None
    for name, report in reports.items():
        if checked[name].duplicates is not None:
            report.duplicates = checked[name].duplicates.finish()  # type: ignore[union-attr]
        problems.extend(judge(res, ds_name, name, checked[name].col, report, restricted))
    return problems, read.digest


# --- whole environments, cached ---------------------------------------------------------------

def _spec_digest(dataset: Dataset, restricted: bool) -> str:
    data = dataset.model_dump(mode="json")
    data.pop("description", None)
    data.pop("uri", None)
    for key, default in _LATER_KEYS.items():  # only when set: other cache keys stay as they were
        if data.get(key) == default:
            data.pop(key)
    empty_domain = False
    for col in data["columns"].values():
        col.pop("description", None)
        col.pop("serving", None)
        col.pop("monitor", None)  # drift only
        for name, unset in _LATER_COLUMN_KEYS.items():
            if col.get(name) == unset:
                col.pop(name)
        empty_domain = empty_domain or col.get("domain") == []
    # every other column key (range, domain, pattern, length, unique, max_violation_fraction,
    # ...) is in the digest; v2: messages carry fractions, severities are cached
    spec = {"columns": data["columns"], "format": data["format"], "restricted": restricted,
            "v": 2}
    if data.get("partitions"):  # only when set: cache keys of other datasets stay as they were
        spec["partitions"] = data["partitions"]
    if "undeclared_columns" in data:
        spec["undeclared_columns"] = data["undeclared_columns"]
    if empty_domain:  # v3: an empty domain allows no value (it used to check nothing)
        spec["v"] = 3
    return digest_json(spec)


#: Keys added after the cache format: left out at their default, so that cache entries of
#: datasets that do not use them stay valid.
_LATER_KEYS = {"undeclared_columns": "ignore"}
_LATER_COLUMN_KEYS: dict[str, bool | None] = {"required": True, "min_count": None,
                                              "allow_nan": True}


def validate_env(res: Resolved, project: Project, digests: dict[str, str] | None = None,
                 datasets: list[str] | None = None, purpose: str = "validate",
                 manifests: dict[str, Manifest] | None = None,
                 executor: Executor | None = None, lock: Lock | None = None
                 ) -> list[Diagnostic]:
    """Validate each dataset. With `digests` (the lock's pins, and `manifests` for
    partitioned datasets and tables) the reads are verified against them and a result already
    cached for (digest, column declarations) is reused; results are cached under the digest
    of the bytes actually validated. `executor` runs the per-file tasks of partitioned
    datasets. `lock` (unpinned validation): data that no longer matches the lock's pin is
    reported (BE051) -- valid bytes that are not the locked ones are not what builds use."""
    problems: list[Diagnostic] = []
    for ds_name in datasets or sorted(res.env.datasets):
        dataset = res.env.datasets[ds_name]
        spec = _spec_digest(dataset, res.env.restricted(ds_name))
        pin = (digests or {}).get(ds_name)
        if pin is None and lock is not None:
            pin = _fixed_version(dataset, lock.datasets.get(ds_name))
        pinned: str | Manifest | None = pin
        if pin is not None:
            cached = _cache_get(project, pin, spec)
            if cached is not None:
                problems.extend(_relocate(res, ds_name, cached))
                continue
            if dataset.partitioned or dataset.is_table:
                manifest = (manifests or (lock.manifests() if lock else {})).get(ds_name)
                pinned = manifest if manifest is not None and manifest.digest == pin else None
        found, digest = validate_dataset(res, ds_name, project, pinned, purpose, executor)
        problems.extend(found)
        locked = (lock.datasets.get(ds_name) if lock is not None and pinned is None
                  and (digests or {}).get(ds_name) is None else None)
        if (locked is not None and digest is not None and locked.uri == dataset.uri
                and locked.format == dataset.format and digest != locked.digest):
            problems.append(res.diag(
                "BE051", f"dataset '{ds_name}' no longer matches its lock: the lock pins "
                f"{locked.digest}, '{dataset.uri}' holds {digest}", "datasets", ds_name, "uri",
                hints=(f"builds refuse it until it is relocked: review `buildenv drift "
                       f"{res.name} --dataset {ds_name} --against {dataset.uri}`, then run "
                       f"`buildenv lock {res.name}`",)))
        # a failed spill is not a property of the data: not cached
        if digest is not None and not any(p.code == "BE210" for p in found):
            _cache_put(project, digest, spec, [_portable(p, res, ds_name) for p in found])
    return problems


def _fixed_version(dataset: Dataset, locked: Any) -> str | None:
    """A table pinned to a fixed version (`version`, `as_of`, `snapshot`) whose lock pins it
    as declared: validating it means reading the locked files (from the object store when a
    kept version was vacuumed), verified. A table following its latest commit or a ref is
    validated as it is now."""
    if not dataset.is_table or locked is None or locked.table is None:
        return None
    pin = declared_pin(dataset)
    if locked.table.get("pin") != pin or not ({"version", "as_of", "snapshot"} & set(pin)):
        return None
    return str(locked.digest)


def _cache_file(project: Project, digest: str, spec: str) -> Path:
    hexkey = digest_json({"data": digest, "spec": spec}).split(":", 1)[1]
    return project.state_dir / "cache" / "validate" / hexkey[:2] / f"{hexkey}.json"


def _cache_get(project: Project, digest: str, spec: str) -> list[dict[str, Any]] | None:
    try:
        entries: list[dict[str, Any]] = json.loads(_cache_file(project, digest, spec).read_text())
    except (OSError, ValueError):
        return None
    return entries


def _cache_put(project: Project, digest: str, spec: str, entries: list[dict[str, Any]]) -> None:
    try:
        atomic_write_text(_cache_file(project, digest, spec), json.dumps(entries))
    except OSError:
        pass  # a cache that cannot be written is only slower


def _portable(d: Diagnostic, res: Resolved, ds_name: str) -> dict[str, Any]:
    """Cache entries hold the column path, not file positions: other envs share the entry."""
    data = d.to_json()
    data["where"] = _where_of(d, ds_name)
    for key in ("path", "line", "col"):
        data.pop(key)
    return data


def _where_of(d: Diagnostic, ds_name: str) -> list[str]:
    # messages start with "<dataset>.<column>:" (or name the dataset for BE206)
    head = d.message.split(":", 1)[0]
    if head.startswith(f"{ds_name}."):
        return ["datasets", ds_name, "columns", head[len(ds_name) + 1:]]
    if d.code == "BE213":
        return ["datasets", ds_name, "undeclared_columns"]
    if d.code == "BE206":
        column = d.message.split("column '", 1)[1].split("'", 1)[0]
        return ["datasets", ds_name, "columns", column]
    return ["datasets", ds_name, "uri"]


_RULE_KEY = {"BE201": "dtype", "BE202": "nullable", "BE203": "max_null_fraction",
             "BE204": "domain", "BE205": "range", "BE207": "pattern", "BE208": "length",
             "BE209": "unique", "BE210": "unique", "BE214": "min_count", "BE215": "allow_nan"}


def _relocate(res: Resolved, ds_name: str, cached: list[dict[str, Any]]) -> list[Diagnostic]:
    out = []
    for item in cached:
        path = list(item["where"])
        if item["code"] in _RULE_KEY:
            path.append(_RULE_KEY[item["code"]])
        out.append(res.diag(item["code"], item["message"], *path, hints=tuple(item["hints"]),
                            severity=Severity(item.get("severity", "error"))))
    return out


def _in_file_uri(uri: str, name: str) -> str | None:
    """The hint for a column given by a `name=<value>` directory of a one-file uri
    (`data/events/date=2026-09-01/part-0.parquet`): a file's own path gives no column;
    partitions are found below a directory's uri."""
    parts = uri.split("/")
    at = next((i for i, part in enumerate(parts[:-1])
               if "=" in part and part.partition("=")[0] == name), None)
    if at is None:
        return None
    above = f" ('{'/'.join(parts[:at])}/')" if at else ""
    return (f"'{parts[at]}' is a directory of the dataset's uri, which names one file: a "
            f"file's own path gives no column; to find '{name}' in the paths, point the uri at "
            f"the directory above it{above}, or drop '{name}' from the columns")
