"""Validation of a partitioned dataset: a task per file (local or Ray), merged in file order.

Partition values come from the paths and are checked against their declarations once per
file; `unique` columns are counted across all files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.data.executor import Executor
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import type_accepts
from buildenv.data.gate.partitioned_read import FileTask, PartitionedRead, partition_scalar
from buildenv.data.validate.column_checks import (
    EXAMPLES,
    ColumnChecks,
    ColumnReport,
    check_batch,
    checks_for,
    spill_dir,
)
from buildenv.data.validate.uniqueness import DuplicateCounter
from buildenv.data.validate.violations import bound, judge, tolerance, undeclared
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset

__all__ = ["FILES_NAMED", "validate_partitioned"]


FILES_NAMED = 5  # files named in one diagnostic


@dataclass
class FileResult:
    """What one file's task found: counts per column, schema findings, or the error that
    stopped it; and, when it completed, what was read (for the manifest of the read)."""

    path: str
    reports: dict[str, ColumnReport] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # declared columns the file lacks
    wrong: dict[str, str] = field(default_factory=dict)  # column -> stored type not accepted
    extra: list[str] = field(default_factory=list)  # stored columns not declared
    # partition column -> (its value in the path, a stored value that differs, rows differing)
    clashes: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # Diagnostic.to_json() of a GateError
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
            result.extra = [n for n in schema.names if n not in columns]
            checked: dict[str, ColumnChecks] = {}
            for name, col in columns.items():
                if name not in schema.names:
                    result.missing.append(name)
                    continue
                actual = schema.field(name).type
                if not type_accepts(col.dtype, actual):
                    result.wrong[name] = str(actual)
                    continue
                checked[name] = checks_for(col, actual, examples=not restricted)
            result.reports = {name: ColumnReport() for name in checked}
            spec = task.env.datasets[task.dataset]
            # a partition column the file stores too: the path's value is what is read (as
            # pyarrow and Spark read it), so stored values that differ are compared here
            twins = {n: (text, partition_scalar(text, spec.columns[n]))
                     for n, text in _valid_values(task, spec.columns) if n in schema.names}
            for batch in read.batches(list(checked) + [n for n in twins if n not in checked],
                                      dictionary=[c for c in dict_cols if c in checked]):
                for name, checks in checked.items():
                    check_batch(batch.column(batch.schema.get_field_index(name)), checks,
                                result.reports[name])
                for name, (text, value) in twins.items():
                    _compare_stored(batch.column(batch.schema.get_field_index(name)), name,
                                    text, value, result.clashes)
            read.verify()
            result.size, result.digest = read.size, read.digest or ""
            result.rows = read.rows_read if checked or twins else read.stored_rows()
    except GateError as exc:
        result.error = exc.diagnostic.to_json()
    return result


def _valid_values(task: FileTask, columns: dict[str, Column]) -> list[tuple[str, str]]:
    """The file's partition values from its path that convert to their columns' types (the
    others are BE063)."""
    out = []
    for name, text in task.values:
        if name not in columns or text is None:
            continue
        try:
            partition_scalar(text, columns[name])
        except ValueError:
            continue
        out.append((name, text))
    return out


def _compare_stored(column: Any, name: str, text: str, value: pa.Scalar,
                    clashes: dict[str, tuple[str, str, int]]) -> None:
    """Count the stored values of partition column `name` that differ from the path's
    `value` (nulls and values of another type included) into `clashes`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    try:
        same = pc.fill_null(pc.equal(column.cast(value.type), value), False)
    except (pa.ArrowException, ValueError):  # stored as something the value is not
        same = pa.repeat(pa.scalar(False), len(column))
    differing = len(column) - pc.sum(same).as_py() if len(column) else 0
    if not differing:
        return
    first = column.filter(pc.invert(same))[0].as_py()
    before = clashes.get(name)
    shown = "null" if first is None else repr(str(first))
    clashes[name] = (text, before[1] if before else shown,
                     (before[2] if before else 0) + differing)


def merge(into: ColumnReport, part: ColumnReport) -> None:
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
    into.nans += part.nans
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


def validate_partitioned(res: Resolved, ds_name: str, dataset: Dataset, read: PartitionedRead,
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
    problems, unusable = _column_shape_problems(res, ds_name, read, stored, results)
    extra = dict.fromkeys(n for r in results for n in r.extra if n not in dataset.columns)
    problems.extend(undeclared(res, ds_name, dataset, list(extra), dataset.uri))
    reports: dict[str, ColumnReport] = {}
    for name in stored:
        if name in unusable:
            continue
        merged = ColumnReport()
        for result in results:
            if name in result.reports:
                merge(merged, result.reports[name])
        reports[name] = merged
    rows = {r.path: r.rows for r in results}
    try:
        _duplicates(read, dataset, reports, restricted)
    except GateError as exc:
        return [exc.diagnostic], None
    problems.extend(_partition_problems(res, ds_name, dataset, read, rows, reports))
    problems.extend(_clash_problems(res, ds_name, read, results))
    for name, report in reports.items():
        problems.extend(judge(res, ds_name, name, dataset.columns[name], report, restricted))
    try:
        digest = read.complete([(r.path, r.size, r.digest, r.rows) for r in results],
                               sum(rows.values()), list(dataset.columns))
    except GateError as exc:
        return [exc.diagnostic], None
    return problems, digest


def _column_shape_problems(res: Resolved, ds_name: str, read: PartitionedRead,
                           stored: dict[str, Column], results: list[FileResult]
                           ) -> tuple[list[Diagnostic], set[str]]:
    """BE206/BE201: declared columns some files lack or store as another type, naming the
    files; and those columns, whose values are not judged further."""
    problems: list[Diagnostic] = []
    missing: dict[str, list[str]] = {}
    wrong: dict[str, list[str]] = {}
    wrong_types: dict[str, dict[str, str]] = {}
    for result in results:
        for name in result.missing:
            if not stored[name].required:  # may be absent: that file reads it as nulls
                continue
            missing.setdefault(name, []).append(result.path)
        for name, actual in result.wrong.items():
            wrong.setdefault(name, []).append(result.path)
            wrong_types.setdefault(name, {})[result.path] = actual
    for name in stored:
        where = ("datasets", ds_name, "columns", name)
        if name in missing:
            paths = missing[name]
            above = _in_uri(read.spec.uri, name)
            hint = ((f"'{above}' is part of the dataset's uri, and partitions are found below "
                     f"it (as pyarrow finds them): point the uri at its parent directory and "
                     f"filter on '{name}' where it is read, or drop '{name}' from the columns",)
                    if above and len(paths) == len(results) else
                    (f"if the values of '{name}' are in the paths, name those directories "
                     f"'{name}=<value>' (they are then found as a partition column)",)
                    if len(paths) == len(results) and read.spec.partitions is None else ())
            problems.append(res.diag("BE206", f"dataset '{ds_name}' has no column '{name}' in "
                                     f"{len(paths)} of {len(results)} file(s): "
                                     f"{_files_text(read, paths)}", *where, hints=hint))
        if name in wrong:
            paths = wrong[name]
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared "
                                     f"{stored[name].dtype}, stored as another type in "
                                     f"{len(paths)} file(s): "
                                     f"{_files_text(read, paths, wrong_types[name])}",
                                     *where, "dtype"))
    return problems, set(missing) | set(wrong)


def _in_uri(uri: str, name: str) -> str | None:
    """The `name=<value>` directory of the dataset's own uri (`data/flights/year=2024/`), if
    any: a column given there is in no file and in no path below the uri."""
    return next((part for part in uri.rstrip("/").split("/")
                 if part.partition("=")[0] == name and "=" in part), None)


def _duplicates(read: PartitionedRead, dataset: Dataset, reports: dict[str, ColumnReport],
                restricted: bool) -> None:
    """`unique` columns: every value must meet every other, so they stream through one
    counter here, file after file (verified like any read), whatever executor ran the rest."""
    unique = [n for n in reports if dataset.columns[n].unique and n not in read.partitions]
    if not unique:
        return
    counters = {n: DuplicateCounter(examples=0 if restricted else EXAMPLES,
                                    spill_dir=spill_dir(read)) for n in unique}
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
        spellings: dict[Any, dict[str, str]] = {}  # value -> its text in the path -> a file
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
            if text is not None:
                spellings.setdefault(value.as_py(), {}).setdefault(text, path)
            if not value.is_valid:
                total.nulls += n
                if not col.nullable:
                    bad.setdefault("is null but the column is declared nullable: false",
                                   []).append(path)
                continue
            one = ColumnReport()
            array = pa.repeat(value, 1)
            check_batch(array, checks_for(col, array.type, examples=False), one)
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
                _, severity, _ = tolerance(col, bad_rows, non_null)
            problems.append(res.diag(
                "BE063", f"{ds_name}.{name}: the partition value {why} in {len(paths)} "
                f"file(s): {_files_text(read, paths, shown)}", *where, severity=severity,
                hints=("rename the directory or fix the declaration; files of a partition "
                       "are read with the value their path gives",)))
        problems.extend(_spelling_problems(res, ds_name, name, read, spellings))
        if col.nullable:  # nulls where they are not allowed are BE063 above, with the files
            reports[name] = ColumnReport(rows=total.rows, nulls=total.nulls)
    return problems


def _spelling_problems(res: Resolved, ds_name: str, name: str, read: PartitionedRead,
                       spellings: dict[Any, dict[str, str]]) -> list[Diagnostic]:
    """BE069: one value written two ways in the paths (`year=2026` and `year=02026`, both
    2026): two directories would hold one partition, and a filter or a rewrite of one of them
    misses the other. One spelling used throughout (`month=09`) is fine."""
    problems = []
    for value, texts in spellings.items():
        if len(texts) < 2:
            continue
        named = sorted(texts.items())
        dirs = ", ".join(f"'{name}={text}/' (e.g. '{read.file_uri(path)}')"
                         for text, path in named[:FILES_NAMED])
        keep = min(texts, key=lambda t: (len(t), t))
        problems.append(res.diag(
            "BE069", f"{ds_name}.{name}: {len(texts)} directories name the partition value "
            f"{str(value)!r}: {dirs}; they would read as one partition",
            "datasets", ds_name, "columns", name,
            hints=(f"move the files of the other directories into '{name}={keep}/' (one "
                   "spelling per value), then run `buildenv lock`",)))
    return problems


def _clash_problems(res: Resolved, ds_name: str, read: PartitionedRead,
                    results: list[FileResult]) -> list[Diagnostic]:
    """BE068: files that store a partition column holding other values than their path's
    directory, naming the files and both values."""
    problems = []
    for name in read.partitions:
        hits = [(r.path, r.clashes[name]) for r in results if name in r.clashes]
        if not hits:
            continue
        shown = [f"'{read.file_uri(path)}' ({rows} row(s) hold {stored}, its path says "
                 f"{text!r})" for path, (text, stored, rows) in hits[:FILES_NAMED]]
        more = len(hits) - FILES_NAMED
        problems.append(res.diag(
            "BE068", f"{ds_name}.{name}: the files store a '{name}' column whose values differ "
            f"from their '{name}=<value>' directory in {len(hits)} file(s): "
            + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
            + "; the path's value is the one read",
            "datasets", ds_name, "columns", name,
            hints=(f"move each file to the '{name}=<value>' directory of its rows (one value "
                   "per file), or drop the column from the files",
                   f"if the stored '{name}' is right and the directories are not partitions, "
                   "write `partitions: []` under the dataset")))
    return problems


def _range_text(bounds: Any) -> str:
    lo, hi = bounds if bounds is not None else (None, None)
    return f"[{bound(lo)}, {bound(hi)}]"
