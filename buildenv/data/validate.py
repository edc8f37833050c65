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

A partitioned dataset is checked one task per file (`_validate_file`: that file's columns
and types, and the same per-column counts), run by an executor (in this process or as Ray
tasks) and merged in file order, so the result is the same wherever the tasks ran; `unique`
columns then stream through one counter in this process. Partition values are checked from
the paths with the same kernels: one that does not convert, is null in a non-nullable column
or breaks the column's rules is BE063, naming the files.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.executor import Executor, LocalExecutor
from buildenv.data.formats import ARROW_TYPES, arrow_type, type_accepts
from buildenv.data.gate import FileTask, Gate, GateError, PartitionedRead, partition_scalar
from buildenv.data.manifest import Manifest
from buildenv.data.uniqueness import DuplicateCounter, Duplicates
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset, _parse_temporal

__all__ = ["ColumnChecks", "ColumnReport", "check_batch", "validate_dataset", "validate_env"]

EXAMPLES = 3


@dataclass
class ColumnReport:
    """Aggregates for one column; enough to judge every rule and to print counts."""

    rows: int = 0
    nulls: int = 0
    out_of_domain: int = 0
    out_of_domain_values: dict[Any, int] = field(default_factory=dict)
    below: int = 0
    above: int = 0
    examples: list[str] = field(default_factory=list)
    mismatched: int = 0  # rows not matching `pattern`
    pattern_examples: list[str] = field(default_factory=list)
    too_short: int = 0
    too_long: int = 0
    length_examples: list[str] = field(default_factory=list)
    duplicates: Duplicates | None = None  # unique columns, after the last batch

    @property
    def non_null(self) -> int:
        return self.rows - self.nulls


@dataclass
class ColumnChecks:
    """What to test in each batch of one column, prepared once from its declaration."""

    col: Column
    domain: pa.Array | None = None
    bounds: tuple[pa.Scalar | None, pa.Scalar | None] | None = None
    duplicates: DuplicateCounter | None = None
    examples: bool = True  # False for restricted datasets: no value is ever kept
    _dictionary: Any = None  # the last dictionary seen, kept alive so its buffers stay its own
    _flags: dict[str, pa.Array] = field(default_factory=dict)

    def flags(self, arr: pa.Array, name: str, compute) -> pa.Array:
        """`compute` over the batch's values: for a dictionary-encoded batch, its dictionary,
        computed once per distinct dictionary (a row group's batches share equal ones)."""
        if not pa.types.is_dictionary(arr.type):
            return compute(arr)
        values = arr.dictionary
        if values is not self._dictionary and not _same_array(values, self._dictionary):
            self._dictionary, self._flags = values, {}
        if name not in self._flags:
            self._flags[name] = compute(values)
        return self._flags[name]


def _same_array(a: pa.Array, b: pa.Array | None) -> bool:
    """Same buffers, or equal contents: a row group's batches get equal dictionaries, and
    comparing them costs far less than a regex over them."""
    if b is None or len(a) != len(b) or a.type != b.type:
        return False
    if a.offset == b.offset and all(
            (x.address if x is not None else None) == (y.address if y is not None else None)
            for x, y in zip(a.buffers(), b.buffers())):
        return True
    return a.equals(b)


def check_batch(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    """Every declared rule of one column on one batch, accumulated into `report`."""
    report.rows += len(arr)
    report.nulls += arr.null_count
    col = checks.col
    if checks.domain is not None:
        _domain_counts(arr, checks, report)
    if checks.bounds is not None:
        _range_counts(arr, checks.bounds[0], checks.bounds[1], report, checks.examples)
    if col.pattern is not None:
        _pattern_counts(arr, checks, report)
    if col.length is not None:
        _length_counts(arr, checks, report)
    if checks.duplicates is not None:
        checks.duplicates.add(arr)


def _rows_flagged(arr: pa.Array, flags: pa.Array) -> pa.Array:
    """Per-row flags from flags over the batch's values (its dictionary, when encoded); nulls
    stay null and are never counted."""
    return pc.take(flags, arr.indices) if pa.types.is_dictionary(arr.type) else flags


def _count(row_flags: pa.Array) -> int:
    return pc.sum(row_flags).as_py() or 0


def _flagged_values(arr: pa.Array, row_flags: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return pc.take(arr.dictionary, pc.filter(arr.indices, row_flags))
    return pc.filter(arr, row_flags)


def _add_examples(into: list[str], values: pa.Array) -> None:
    """Up to EXAMPLES distinct values, in the order first seen."""
    if len(into) >= EXAMPLES:
        return
    for value in pc.unique(values)[: EXAMPLES].to_pylist():
        shown = _show(value)
        if shown not in into and len(into) < EXAMPLES:
            into.append(shown)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _domain_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    domain = checks.domain
    flags = checks.flags(arr, "domain",
                         lambda values: pc.invert(pc.is_in(values, value_set=domain)))
    if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
        return
    rows = _rows_flagged(arr, flags)
    if arr.null_count and not pa.types.is_dictionary(arr.type):
        rows = pc.and_kleene(rows, pc.is_valid(arr))  # is_in(null) is false: not a violation
    count = _count(rows)
    if not count:
        return
    report.out_of_domain += count
    vc = pc.value_counts(_flagged_values(arr, rows))
    for item in vc.to_pylist():
        key = item["values"]
        report.out_of_domain_values[key] = report.out_of_domain_values.get(key, 0) + item["counts"]


def _range_counts(arr: pa.Array, lo: pa.Scalar | None, hi: pa.Scalar | None,
                  report: ColumnReport, examples: bool = True) -> None:
    mm = pc.min_max(arr)
    mn, mx = mm["min"], mm["max"]
    if not mn.is_valid:
        return
    if lo is not None and pc.less(mn, lo).as_py():
        below = pc.less(arr, lo)
        report.below += pc.sum(below).as_py() or 0
        if examples and len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, below)[:EXAMPLES].to_pylist())
    if hi is not None and pc.greater(mx, hi).as_py():
        above = pc.greater(arr, hi)
        report.above += pc.sum(above).as_py() or 0
        if examples and len(report.examples) < EXAMPLES:
            report.examples.extend(str(v) for v in pc.filter(arr, above)[:EXAMPLES].to_pylist())


def _pattern_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    pattern = checks.col.pattern
    flags = checks.flags(arr, "pattern",
                         lambda values: pc.invert(pc.match_substring_regex(values, pattern)))
    if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
        return
    rows = _rows_flagged(arr, flags)
    count = _count(rows)
    if count:
        report.mismatched += count
        if checks.examples:
            _add_examples(report.pattern_examples, _flagged_values(arr, rows))


def _length_counts(arr: pa.Array, checks: ColumnChecks, report: ColumnReport) -> None:
    lo, hi = checks.col.length  # type: ignore[misc]
    lengths = checks.flags(arr, "lengths", pc.utf8_length)
    for bound, compare, attr in ((lo, pc.less, "too_short"), (hi, pc.greater, "too_long")):
        if bound is None:
            continue
        limit = _packed("q", [bound], pa.int64())[0]  # not pa.scalar: see _packed
        flags = checks.flags(arr, attr, lambda _v, c=compare, b=limit: c(lengths, b))
        if pa.types.is_dictionary(arr.type) and not pc.any(flags).as_py():
            continue
        rows = _rows_flagged(arr, flags)
        count = _count(rows)
        if count:
            setattr(report, attr, getattr(report, attr) + count)
            if checks.examples:
                _add_examples(report.length_examples, _flagged_values(arr, rows))


# pa.array()/pa.scalar() on Python values make pyarrow import pandas (its lazy "is this a
# pandas object?" probe): ~0.4 s of CPU that validation never needs. Domains and bounds are
# built from raw buffers instead; anything unusual falls back to pa.array/pa.scalar.
_EPOCH_DAY = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PACK = {"int8": "b", "int16": "h", "int32": "i", "int64": "q", "float32": "f", "float64": "d"}


def _packed(fmt: str, values: list, type_: pa.DataType) -> pa.Array:
    data = struct.pack(f"<{len(values)}{fmt}", *values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(data)])


def _domain_array(values: list, dtype: str) -> pa.Array:
    """pa.array(values, type=arrow_type(dtype)), without importing pandas."""
    try:
        if dtype == "string" and all(type(v) is str for v in values):
            data = [v.encode("utf-8") for v in values]
            offsets = [0]
            for item in data:
                offsets.append(offsets[-1] + len(item))
            return pa.Array.from_buffers(pa.string(), len(values), [
                None, pa.py_buffer(struct.pack(f"<{len(offsets)}i", *offsets)),
                pa.py_buffer(b"".join(data))])
        if dtype in _PACK and dtype.startswith("int") and all(type(v) is int for v in values):
            return _packed(_PACK[dtype], values, arrow_type(dtype))
        if dtype in ("float32", "float64") and all(type(v) in (int, float) for v in values):
            # float64 values; is_in casts them to the stored type (float32 data: float32)
            return _packed("d", [float(v) for v in values], pa.float64())
    except (struct.error, UnicodeError, OverflowError):
        pass  # out of range for the width, or not encodable: let pyarrow say so
    return pa.array(values, type=arrow_type(dtype))


def _bounds(col: Column, actual: pa.DataType
            ) -> tuple[pa.Scalar | None, pa.Scalar | None] | None:
    """The range as scalars comparable with the stored type; None for an open end."""
    if col.range is None:
        return None
    lo, hi = col.range
    given = [v for v in (lo, hi) if v is not None]
    if col.dtype == "date":
        days = [(_parse_temporal(v).date() - _EPOCH_DAY).days for v in given]
        scalars = list(_packed("i", days, pa.date32()))
    elif col.dtype == "timestamp":
        unit = actual.unit if pa.types.is_timestamp(actual) else "us"
        tz = actual.tz if pa.types.is_timestamp(actual) else "UTC"
        if unit in ("us", "ns"):  # exact: datetime has microsecond precision
            scale = 1000 if unit == "ns" else 1
            ticks = [(_parse_temporal(v) - _EPOCH) // dt.timedelta(microseconds=1) * scale
                     for v in given]
            scalars = [s.cast(actual) for s in _packed("q", ticks, pa.timestamp(unit, tz or "UTC"))]
        else:
            scalars = [pa.scalar(_parse_temporal(v), pa.timestamp(unit, tz or "UTC")).cast(actual)
                       for v in given]
    else:
        scalars = list(_packed("d", [float(v) for v in given], pa.float64()))
    found = iter(scalars)
    return (next(found) if lo is not None else None, next(found) if hi is not None else None)


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
    dict_cols = [n for n, c in dataset.columns.items()
                 if c.dtype == "string" and (c.domain or c.pattern is not None or c.length)]
    gate = Gate(project, env, purpose, where=res)
    try:
        read = gate.open(ds_name, expect=digest)
    except GateError as exc:
        return [exc.diagnostic], None
    with read:
        if isinstance(read, PartitionedRead):
            return _validate_partitioned(res, ds_name, dataset, read, dict_cols, restricted,
                                         executor or LocalExecutor())
        return _validate_read(res, ds_name, dataset, read, columns, dict_cols, restricted)


def _spill_dir(read: Any) -> str:
    """Where duplicate counting may spill values: inside the repository's own state (owner
    only), never a shared temp directory; each count removes its files when it ends."""
    folder = read.gate.project.state_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder)


def _validate_read(res: Resolved, ds_name: str, dataset: Dataset, read: Any, columns: list[str],
                   dict_cols: list[str], restricted: bool) -> tuple[list[Diagnostic], str | None]:
    try:
        schema = read.schema
    except GateError as exc:
        return [exc.diagnostic], None
    problems: list[Diagnostic] = []
    checked: dict[str, ColumnChecks] = {}
    for name, col in dataset.columns.items():
        where = ("datasets", ds_name, "columns", name)
        if name not in schema.names:
            hint = _close(name, schema.names)
            problems.append(res.diag("BE206", f"dataset '{ds_name}' has no column '{name}' "
                                     f"({dataset.uri})", *where, hints=(hint,) if hint else ()))
            continue
        actual = schema.field(name).type
        if not type_accepts(col.dtype, actual):
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared {col.dtype}, stored "
                                     f"as {actual}", *where, "dtype",
                                     hints=(f"declare `dtype: {_suggest(actual)}` or cast the "
                                            "column when writing the data",)))
            continue
        checked[name] = ColumnChecks(
            col, domain=_domain_array(list(col.domain), col.dtype) if col.domain else None,
            bounds=_bounds(col, actual), examples=not restricted,
            duplicates=DuplicateCounter(examples=0 if restricted else EXAMPLES,
                                        spill_dir=_spill_dir(read))
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
        problems.extend(_judge(res, ds_name, name, checked[name].col, report, restricted))
    return problems, read.digest


# --- partitioned datasets: a task per file, merged in file order --------------------------------

FILES_NAMED = 5  # files named in one diagnostic


@dataclass
class FileResult:
    """What one file's task found: counts per column, schema findings, or the error that
    stopped it; and, when it completed, what was read (for the manifest of the read)."""

    path: str
    reports: dict[str, ColumnReport] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # declared columns the file lacks
    wrong: dict[str, str] = field(default_factory=dict)  # column -> stored type not accepted
    error: dict | None = None  # Diagnostic.to_json() of a GateError
    size: int = 0
    digest: str = ""
    rows: int = 0


def _validate_file(job: tuple[FileTask, str, dict[str, Column], list[str], bool]) -> FileResult:
    """The task: one file's schema against the declarations, then its counts (every rule but
    `unique`, which needs every value in one place). Runs wherever the executor puts it; reads
    and verifies the file through a gate of its own."""
    task, path, columns, dict_cols, restricted = job
    result = FileResult(path)
    try:
        with task.open(partitions=False) as read:
            schema = read.stored_schema
            checked: dict[str, ColumnChecks] = {}
            for name, col in columns.items():
                if name not in schema.names:
                    result.missing.append(name)
                    continue
                actual = schema.field(name).type
                if not type_accepts(col.dtype, actual):
                    result.wrong[name] = str(actual)
                    continue
                checked[name] = ColumnChecks(
                    col, domain=_domain_array(list(col.domain), col.dtype) if col.domain
                    else None, bounds=_bounds(col, actual), examples=not restricted)
            result.reports = {name: ColumnReport() for name in checked}
            for batch in read.batches(list(checked), dictionary=[c for c in dict_cols
                                                                 if c in checked]):
                for name, checks in checked.items():
                    check_batch(batch.column(batch.schema.get_field_index(name)), checks,
                                result.reports[name])
            read.verify()
            result.size, result.digest = read._pinned.size, read.digest or ""
            result.rows = read.rows_read if checked else read._stored_rows()
    except GateError as exc:
        result.error = exc.diagnostic.to_json()
    return result


def _merge(into: ColumnReport, part: ColumnReport) -> None:
    """Fold the next file's counts into `into` (examples: the first ones, in file order)."""
    into.rows += part.rows
    into.nulls += part.nulls
    into.out_of_domain += part.out_of_domain
    for key, n in part.out_of_domain_values.items():
        into.out_of_domain_values[key] = into.out_of_domain_values.get(key, 0) + n
    into.below += part.below
    into.above += part.above
    into.mismatched += part.mismatched
    into.too_short += part.too_short
    into.too_long += part.too_long
    into.examples.extend(part.examples[: max(0, EXAMPLES - len(into.examples))])
    for mine, theirs in ((into.pattern_examples, part.pattern_examples),
                         (into.length_examples, part.length_examples)):
        for value in theirs:
            if value not in mine and len(mine) < EXAMPLES:
                mine.append(value)


def _files_text(read: PartitionedRead, paths: list[str], values: dict[str, str] | None = None
                ) -> str:
    shown = [f"'{read.file_uri(p)}'" + (f" ({values[p]})" if values and p in values else "")
             for p in paths[:FILES_NAMED]]
    more = len(paths) - FILES_NAMED
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _validate_partitioned(res: Resolved, ds_name: str, dataset: Dataset, read: PartitionedRead,
                          dict_cols: list[str], restricted: bool, executor: Executor
                          ) -> tuple[list[Diagnostic], str | None]:
    partitions = set(read.partitions)
    stored = {n: c for n, c in dataset.columns.items() if n not in partitions}
    jobs = [(task, path, stored, dict_cols, restricted)
            for task, (path, _, _) in zip(read.tasks(), read.files)]
    results: list[FileResult] = executor.map(_validate_file, jobs)
    for result in results:
        if result.error is not None:  # the bytes are not trusted: nothing else is reported
            d = Diagnostic.from_json(result.error)
            return [res.diag(d.code, d.message, "datasets", ds_name, "uri", hints=d.hints)], None
    problems: list[Diagnostic] = []
    missing: dict[str, list[str]] = {}
    wrong: dict[str, list[str]] = {}
    wrong_types: dict[str, dict[str, str]] = {}
    for result in results:
        for name in result.missing:
            missing.setdefault(name, []).append(result.path)
        for name, actual in result.wrong.items():
            wrong.setdefault(name, []).append(result.path)
            wrong_types.setdefault(name, {})[result.path] = actual
    for name in stored:
        where = ("datasets", ds_name, "columns", name)
        if name in missing:
            paths = missing[name]
            problems.append(res.diag("BE206", f"dataset '{ds_name}' has no column '{name}' in "
                                     f"{len(paths)} of {len(results)} file(s): "
                                     f"{_files_text(read, paths)}", *where))
        if name in wrong:
            paths = wrong[name]
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared "
                                     f"{stored[name].dtype}, stored as another type in "
                                     f"{len(paths)} file(s): "
                                     f"{_files_text(read, paths, wrong_types[name])}",
                                     *where, "dtype"))
    reports: dict[str, ColumnReport] = {}
    for name in stored:
        if name in missing or name in wrong:
            continue
        merged = ColumnReport()
        for result in results:
            if name in result.reports:
                _merge(merged, result.reports[name])
        reports[name] = merged
    rows = {r.path: r.rows for r in results}
    try:
        _duplicates(read, dataset, reports, restricted)
    except GateError as exc:
        return [exc.diagnostic], None
    problems.extend(_partition_problems(res, ds_name, dataset, read, rows, reports))
    for name, report in reports.items():
        problems.extend(_judge(res, ds_name, name, dataset.columns[name], report, restricted))
    try:
        digest = read.complete([(r.path, r.size, r.digest, r.rows) for r in results],
                               sum(rows.values()), list(dataset.columns))
    except GateError as exc:
        return [exc.diagnostic], None
    return problems, digest


def _duplicates(read: PartitionedRead, dataset: Dataset, reports: dict[str, ColumnReport],
                restricted: bool) -> None:
    """`unique` columns: every value must meet every other, so they stream through one
    counter here, file after file (verified like any read), whatever executor ran the rest."""
    unique = [n for n in reports if dataset.columns[n].unique and n not in read.partitions]
    if not unique:
        return
    counters = {n: DuplicateCounter(examples=0 if restricted else EXAMPLES,
                                    spill_dir=_spill_dir(read)) for n in unique}
    for batch in read.batches(unique):
        for name in unique:
            counters[name].add(batch.column(batch.schema.get_field_index(name)))
    for name in unique:
        reports[name].duplicates = counters[name].finish()


def _partition_problems(res: Resolved, ds_name: str, dataset: Dataset, read: PartitionedRead,
                        rows: dict[str, int], reports: dict[str, ColumnReport]
                        ) -> list[Diagnostic]:
    """Partition values, from the paths (BE063, naming the files): a value that does not
    convert, a null where nulls are not allowed, or a value breaking the column's domain,
    range, pattern or length, checked with the same kernels as stored values; the null
    fraction is judged on rows like any column's."""
    problems = []
    for name in read.partitions:
        col = dataset.columns[name]
        where = ("datasets", ds_name, "columns", name)
        bad: dict[str, list[str]] = {}
        shown: dict[str, str] = {}
        total = ColumnReport()
        bad_rows = 0
        for path, _, values in read.files:
            text = values[name]
            n = rows.get(path, 0)
            total.rows += n
            try:
                value = partition_scalar(text, col)
            except ValueError:
                bad.setdefault(f"is not a {col.dtype}", []).append(path)
                shown[path] = repr(text)
                bad_rows += n
                continue
            if not value.is_valid:
                total.nulls += n
                if not col.nullable:
                    bad.setdefault("is null but the column is declared nullable: false",
                                   []).append(path)
                continue
            one = ColumnReport()
            array = pa.repeat(value, 1)
            check_batch(array, ColumnChecks(
                col, domain=_domain_array(list(col.domain), col.dtype) if col.domain else None,
                bounds=_bounds(col, array.type), examples=False), one)
            broken = [why for why, hit in (
                ("is outside the domain", one.out_of_domain),
                (f"is outside range {_range_text(col.range)}", one.below + one.above),
                (f"does not match pattern {col.pattern!r}", one.mismatched),
                (f"has a length outside {_range_text(col.length)}",
                 one.too_short + one.too_long)) if hit]
            for why in broken:
                bad.setdefault(why, []).append(path)
                shown[path] = repr(text)
            bad_rows += n if broken else 0
        non_null = total.rows - total.nulls
        for why, paths in bad.items():
            severity = Severity.ERROR
            if why.startswith("is outside") or why.startswith(("does not", "has a length")):
                _, severity, _ = _tolerance(col, bad_rows, non_null)
            problems.append(res.diag(
                "BE063", f"{ds_name}.{name}: the partition value {why} in {len(paths)} "
                f"file(s): {_files_text(read, paths, shown)}", *where, severity=severity,
                hints=("rename the directory or fix the declaration; files of a partition "
                       "are read with the value their path gives",)))
        if col.nullable:  # nulls where they are not allowed are BE063 above, with the files
            reports[name] = ColumnReport(rows=total.rows, nulls=total.nulls)
    return problems


def _range_text(bounds: Any) -> str:
    lo, hi = bounds if bounds is not None else (None, None)
    return f"[{_bound(lo)}, {_bound(hi)}]"


def _judge(res: Resolved, ds_name: str, name: str, col: Column, report: ColumnReport,
           restricted: bool) -> list[Diagnostic]:
    out = []
    where = ("datasets", ds_name, "columns", name)
    label = f"{ds_name}.{name}"
    # What a restricted dataset's violations point at instead of values: the audited peek;
    # `--invalid` selects rows that break nullability, the domain or the range.
    look = (f"values are never printed; a person allowed by privacy.peek can look, audited: "
            f"`buildenv peek ENV --dataset {ds_name} --rows 10 --reason \"...\"`")
    hidden = look.replace(" --rows 10 ", f" --rows 10 --invalid {name} ")
    if report.nulls and not col.nullable:
        out.append(res.diag("BE202", f"{label}: {report.nulls} of {report.rows} rows are null "
                            "but the column is declared nullable: false", *where, "nullable"))
    if col.max_null_fraction is not None and report.rows:
        fraction = report.nulls / report.rows
        if fraction > col.max_null_fraction:
            out.append(res.diag("BE203", f"{label}: null fraction {fraction:.4f} ({report.nulls}"
                                f" of {report.rows} rows) exceeds max_null_fraction "
                                f"{col.max_null_fraction}", *where, "max_null_fraction"))

    def violation(code: str, key: str, count: int, what: str, detail: str = "",
                  hints: tuple[str, ...] = ()) -> None:
        share, severity, tolerance = _tolerance(col, count, report.non_null)
        out.append(res.diag(code, f"{label}: {count} of {report.non_null} non-null values "
                            f"({share}) {what}{detail}{tolerance}", *where, key, hints=hints,
                            severity=severity))

    if report.out_of_domain:
        if not restricted:
            top = sorted(report.out_of_domain_values.items(), key=lambda kv: (-kv[1], kv[0]))
            detail = " (" + ", ".join(f"{_show(v)}: {n}" for v, n in top[:EXAMPLES]) + (
                ", ..." if len(top) > EXAMPLES else "") + ")"
            hint = f"add {', '.join(_show(v) for v, _ in top[:EXAMPLES])} to the domain if valid"
        else:
            detail = (f" ({len(report.out_of_domain_values)} distinct values; restricted "
                      "dataset: values not shown)")
            hint = hidden
        violation("BE204", "domain", report.out_of_domain, "are outside the domain", detail,
                  (hint,))
    if report.below or report.above:
        lo, hi = (_bound(v) for v in col.range)  # type: ignore[union-attr]
        detail = f" ({report.below} below, {report.above} above)"
        if not restricted and report.examples:
            detail += f"; e.g. {', '.join(report.examples[:EXAMPLES])}"
        violation("BE205", "range", report.below + report.above, f"are outside range [{lo}, {hi}]",
                  detail)
    if report.mismatched:
        detail = (f"; e.g. {', '.join(report.pattern_examples)}" if not restricted
                  and report.pattern_examples else "")
        violation("BE207", "pattern", report.mismatched,
                  f"do not match pattern {col.pattern!r}", detail,
                  (look,) if restricted else ())
    if report.too_short or report.too_long:
        lo, hi = (_bound(v) for v in col.length)  # type: ignore[union-attr]
        detail = f" ({report.too_short} shorter, {report.too_long} longer)"
        if not restricted and report.length_examples:
            detail += f"; e.g. {', '.join(report.length_examples)}"
        violation("BE208", "length", report.too_short + report.too_long,
                  f"have a length outside [{lo}, {hi}]", detail)
    dups = report.duplicates
    if dups is not None and dups.error is not None:
        out.append(res.diag("BE210", f"{label}: unique could not be checked: spilling values "
                            f"to disk failed ({dups.error})", *where, "unique",
                            hints=("free space in the temporary directory (TMPDIR), or point "
                                   "TMPDIR at a larger disk",)))
    elif dups is not None and dups.rows:
        detail = f" ({dups.values} distinct values occur more than once)"
        if not restricted and dups.examples:
            detail += "; e.g. " + ", ".join(f"{_show(v)} ({n} rows)" for v, n in dups.examples)
        violation("BE209", "unique", dups.rows, "are duplicated", detail,
                  (look,) if restricted else ())
    return out


def _bound(value: Any) -> str:
    return "null" if value is None else str(value)


def _tolerance(col: Column, count: int, non_null: int) -> tuple[str, Severity, str]:
    """The violating share, and whether it is an error or, within the tolerance, a warning."""
    fraction = count / non_null if non_null else 1.0
    share = f"fraction {fraction:.4g}"
    limit = col.max_violation_fraction
    if limit is None:
        return share, Severity.ERROR, ""
    if fraction <= limit + 1e-12:
        return share, Severity.WARNING, f"; within max_violation_fraction {limit}"
    return share, Severity.ERROR, f"; exceeds max_violation_fraction {limit}"


def _close(name: str, names: list[str]) -> str | None:
    from buildenv.core.diagnostics import did_you_mean

    return did_you_mean(name, names)


def _suggest(actual: pa.DataType) -> str:
    for dtype in ARROW_TYPES:
        if type_accepts(dtype, actual):
            return dtype
    return str(actual)


# --- whole environments, cached ---------------------------------------------------------------

def _spec_digest(dataset: Dataset, restricted: bool) -> str:
    data = dataset.model_dump(mode="json")
    data.pop("description", None)
    data.pop("uri", None)
    for col in data["columns"].values():
        col.pop("description", None)
        col.pop("serving", None)
        col.pop("monitor", None)  # drift only
    # every other column key (range, domain, pattern, length, unique, max_violation_fraction,
    # ...) is in the digest; v2: messages carry fractions, severities are cached
    spec = {"columns": data["columns"], "format": data["format"], "restricted": restricted,
            "v": 2}
    if data.get("partitions"):  # only when set: cache keys of other datasets stay as they were
        spec["partitions"] = data["partitions"]
    return digest_json(spec)


def validate_env(res: Resolved, project: Project, digests: dict[str, str] | None = None,
                 datasets: list[str] | None = None, purpose: str = "validate",
                 manifests: dict[str, Manifest] | None = None,
                 executor: Executor | None = None) -> list[Diagnostic]:
    """Validate each dataset. With `digests` (the lock's pins, and `manifests` for
    partitioned datasets) the reads are verified against them and a result already cached for
    (digest, column declarations) is reused; results are cached under the digest of the bytes
    actually validated. `executor` runs the per-file tasks of partitioned datasets."""
    problems: list[Diagnostic] = []
    for ds_name in datasets or sorted(res.env.datasets):
        dataset = res.env.datasets[ds_name]
        spec = _spec_digest(dataset, res.env.restricted(ds_name))
        pinned: str | Manifest | None = (digests or {}).get(ds_name)
        if pinned is not None:
            cached = _cache_get(project, pinned, spec)
            if cached is not None:
                problems.extend(_relocate(res, ds_name, cached))
                continue
            if dataset.partitioned:
                manifest = (manifests or {}).get(ds_name)
                pinned = manifest if manifest is not None and manifest.digest == pinned else None
        found, digest = validate_dataset(res, ds_name, project, pinned, purpose, executor)
        problems.extend(found)
        # a failed spill is not a property of the data: not cached
        if digest is not None and not any(p.code == "BE210" for p in found):
            _cache_put(project, digest, spec, [_portable(p, res, ds_name) for p in found])
    return problems


def _cache_file(project: Project, digest: str, spec: str) -> Path:
    hexkey = digest_json({"data": digest, "spec": spec}).split(":", 1)[1]
    return project.state_dir / "cache" / "validate" / hexkey[:2] / f"{hexkey}.json"


def _cache_get(project: Project, digest: str, spec: str) -> list[dict] | None:
    try:
        return json.loads(_cache_file(project, digest, spec).read_text())
    except (OSError, ValueError):
        return None


def _cache_put(project: Project, digest: str, spec: str, entries: list[dict]) -> None:
    try:
        atomic_write_text(_cache_file(project, digest, spec), json.dumps(entries))
    except OSError:
        pass  # a cache that cannot be written is only slower


def _portable(d: Diagnostic, res: Resolved, ds_name: str) -> dict:
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
    if d.code == "BE206":
        column = d.message.split("column '", 1)[1].split("'", 1)[0]
        return ["datasets", ds_name, "columns", column]
    return ["datasets", ds_name, "uri"]


_RULE_KEY = {"BE201": "dtype", "BE202": "nullable", "BE203": "max_null_fraction",
             "BE204": "domain", "BE205": "range", "BE207": "pattern", "BE208": "length",
             "BE209": "unique", "BE210": "unique"}


def _relocate(res: Resolved, ds_name: str, cached: list[dict]) -> list[Diagnostic]:
    out = []
    for item in cached:
        path = list(item["where"])
        if item["code"] in _RULE_KEY:
            path.append(_RULE_KEY[item["code"]])
        out.append(res.diag(item["code"], item["message"], *path, hints=tuple(item["hints"]),
                            severity=Severity(item.get("severity", "error"))))
    return out
