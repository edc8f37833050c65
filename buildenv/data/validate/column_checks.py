"""Per-batch column checks: the vectorised kernels validation streams every batch through.

Domains, patterns and lengths of string columns run once per dictionary entry (reused while
batches share a dictionary); ranges use a per-batch min/max and count offending rows only when
a bound is crossed; `unique` columns stream into `uniqueness.DuplicateCounter`. A
`ColumnReport` holds the counts (and, for public datasets, a few example values).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.formats import arrow_type
from buildenv.data.validate.uniqueness import DuplicateCounter, Duplicates
from buildenv.env.spec import Column, _parse_temporal

__all__ = ["EXAMPLES", "ColumnChecks", "ColumnReport", "bounds", "check_batch", "checks_for",
           "dictionary_columns", "domain_array", "show", "spill_dir"]


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
    nans: int = 0  # NaN values, counted for `allow_nan: false` columns only

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

    def flags(self, arr: pa.Array, name: str, compute: Callable[[pa.Array], pa.Array]
              ) -> pa.Array:
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


def checks_for(col: Column, actual: pa.DataType, examples: bool = True,
               duplicates: DuplicateCounter | None = None) -> ColumnChecks:
    """What to test in each batch of `col`, stored as `actual` (an empty domain is checked:
    it allows no value)."""
    domain = domain_array(list(col.domain), col.dtype) if col.domain is not None else None
    return ColumnChecks(col, domain=domain, bounds=bounds(col, actual), examples=examples,
                        duplicates=duplicates)


def dictionary_columns(columns: dict[str, Column]) -> list[str]:
    """String columns worth reading dictionary-encoded: their checks run per distinct value."""
    return [n for n, c in columns.items()
            if c.dtype == "string" and (c.domain is not None or c.pattern is not None or c.length)]


def _same_array(a: pa.Array, b: pa.Array | None) -> bool:
    """Same buffers, or equal contents: a row group's batches get equal dictionaries, and
    comparing them costs far less than a regex over them."""
    if b is None or len(a) != len(b) or a.type != b.type:
        return False
    if a.offset == b.offset and all(
            (x.address if x is not None else None) == (y.address if y is not None else None)
            for x, y in zip(a.buffers(), b.buffers())):
        return True
    return bool(a.equals(b))


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
    if not col.allow_nan and pa.types.is_floating(arr.type):
        report.nans += pc.sum(pc.is_nan(arr)).as_py() or 0


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
        shown = show(value)
        if shown not in into and len(into) < EXAMPLES:
            into.append(shown)


def show(value: Any) -> str:
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

        def beyond(_values: pa.Array, c: Any = compare, b: Any = limit) -> pa.Array:
            return c(lengths, b)

        flags = checks.flags(arr, attr, beyond)
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


def _packed(fmt: str, values: list[Any], type_: pa.DataType) -> pa.Array:
    data = struct.pack(f"<{len(values)}{fmt}", *values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(data)])


def domain_array(values: list[Any], dtype: str) -> pa.Array:
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


def bounds(col: Column, actual: pa.DataType
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


def spill_dir(read: Any) -> str:
    """Where duplicate counting may spill values: inside the repository's own state (owner
    only), never a shared temp directory; each count removes its files when it ends."""
    folder = read.scope.project.state_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder)
