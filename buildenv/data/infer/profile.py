"""What a column's data looks like, from one streaming pass: the facts `buildenv init` writes
an environment from.

A profiler sees every record batch of one column once and keeps only summaries, so memory is
bounded whatever the size of the data: null and value counts, the smallest and largest value,
up to `DOMAIN_MAX + 1` distinct values, and (for integer and string columns still free of
duplicates) an exact duplicate count spilled to disk (`validate.uniqueness`).

- `TextProfiler` reads CSV text: each non-null value is classified by pattern (integer, float,
  bool, date, timestamp, other text), and the column's dtype is the narrowest that holds every
  value: integers only -> `int64`; integers and floats -> `float64`; `true`/`false` -> `bool`;
  ISO dates -> `date`; dates and times -> `timestamp`; anything else -> `string`. A column whose
  values are of more than one kind keeps the counts (`kinds`) and each kind's first data row,
  so the choice can be explained.
- `TypedProfiler` reads Parquet (and partition values): the dtype is the stored type's; files
  of a partitioned dataset that store a column with different types are widened when one dtype
  accepts both (`int32` and `int64` -> `int64`), and the column is left out otherwise.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.formats import parse_timestamps, type_accepts
from buildenv.data.validate.uniqueness import DuplicateCounter

__all__ = ["DOMAIN_MAX", "ColumnProfile", "Slots", "TextProfiler", "TypedProfiler", "dtype_of"]

DOMAIN_MAX = 20  # distinct values a domain may list; more is not a category
UNIQUE_CANDIDATES = 8  # columns counted for duplicates at once (memory: one budget each)
UNIQUE_BUDGET = 16 << 20  # bytes of values each buffers before spilling to disk

_KIND_PATTERNS = (  # RE2, matched on the whole value; the first that matches decides
    ("int", r"^[+-]?[0-9]+$"),
    ("float", r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$"),
    ("bool", r"^(true|false|True|False|TRUE|FALSE)$"),
    ("date", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
    ("timestamp", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?"
                  r"\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?$"),
)
_WIDENED = {frozenset({"int"}): "int64", frozenset({"int", "float"}): "float64",
            frozenset({"float"}): "float64", frozenset({"bool"}): "bool",
            frozenset({"date"}): "date", frozenset({"timestamp"}): "timestamp",
            frozenset({"date", "timestamp"}): "timestamp"}
_ARROW = {"int": pa.int64(), "float": pa.float64(), "date": pa.date32()}


@dataclass
class ColumnProfile:
    """What one pass over a column found."""

    name: str
    dtype: str | None  # None: no dtype holds the data (`left_out` says why)
    rows: int = 0
    nulls: int = 0
    lo: Any = None  # smallest non-null value (int, float, date, datetime, str length: no)
    hi: Any = None
    values: list[Any] | None = None  # distinct non-null values (strings, integers), if <= DOMAIN_MAX
    unique: bool = False  # every non-null value once (integer and string columns only)
    kinds: dict[str, int] = field(default_factory=dict)  # text: values of each kind, if mixed
    first_rows: dict[str, int] = field(default_factory=dict)  # kind -> its first data row
    left_out: str | None = None

    @property
    def non_null(self) -> int:
        return self.rows - self.nulls


class _Distinct:
    """Up to DOMAIN_MAX + 1 distinct values: enough to know whether a domain applies."""

    def __init__(self) -> None:
        self.values: set[Any] | None = set()

    def add(self, array: pa.Array) -> None:
        if self.values is None or not len(array):
            return
        found = pc.unique(array)
        if len(found) > DOMAIN_MAX:
            self.values = None
            return
        self.values.update(v for v in found.to_pylist() if v is not None)
        if len(self.values) > DOMAIN_MAX:
            self.values = None

    def result(self) -> list[Any] | None:
        return None if self.values is None else sorted(self.values, key=_order)


class Slots:
    """How many duplicate counters the columns of one dataset may run at once (each may buffer
    `UNIQUE_BUDGET` bytes): memory stays bounded however many columns look like keys."""

    def __init__(self, limit: int = UNIQUE_CANDIDATES) -> None:
        self.free = limit


class _Uniqueness:
    """Exact: duplicates counted with bounded memory; given up at the first batch that repeats
    a value (most columns), so only key-like columns cost anything."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.counter: DuplicateCounter | None = None
        self.possible = True

    def add(self, array: pa.Array) -> None:
        if not self.possible:
            return
        values = array.drop_null()
        if pc.count_distinct(values).as_py() != len(values):
            self.drop()
            return
        if self.counter is None:
            if self.slots.free <= 0:
                self.possible = False
                return
            self.slots.free -= 1
            self.counter = DuplicateCounter(budget=UNIQUE_BUDGET, examples=0)
        self.counter.add(values)

    def drop(self) -> None:
        self.possible = False
        if self.counter is not None:
            self.counter = None
            self.slots.free += 1

    def result(self) -> bool:
        if not self.possible or self.counter is None:
            return False
        found = self.counter.finish()
        self.drop()
        return found.error is None and found.values == 0


class TextProfiler:
    """One CSV column, read as text."""

    def __init__(self, name: str, slots: Slots | None = None) -> None:
        self.name = name
        self.rows = self.nulls = 0
        self.kinds: dict[str, int] = {}
        self.first_row: dict[str, int] = {}  # kind -> data row of its first value
        self.bounds: dict[str, list[Any]] = {}  # kind -> [lo, hi]
        self.distinct = _Distinct()
        self.unique = _Uniqueness(slots or Slots())
        self.unique_kind: str | None = None  # the kind the duplicate counter was fed

    def add(self, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = pa.concat_arrays(array.chunks) if array.num_chunks else pa.array([], pa.string())
        start = self.rows
        self.rows += len(array)
        self.nulls += array.null_count
        remaining = pc.is_valid(array)
        for kind, pattern in _KIND_PATTERNS:
            if not pc.any(remaining).as_py():
                break
            hit = pc.and_(remaining, pc.fill_null(pc.match_substring_regex(array, pattern),
                                                  False))
            remaining = pc.and_not(remaining, hit)
            self._take(kind, array, hit, start)
        if pc.any(remaining).as_py():
            self._take("text", array, remaining, start)
        self.distinct.add(array)

    def _take(self, kind: str, array: pa.Array, mask: pa.Array, start: int) -> None:
        count = pc.sum(mask.cast(pa.int64())).as_py() or 0
        if not count:
            return
        typed = _parse(kind, pc.filter(array, mask))
        if typed is None:  # does not convert after all (an integer beyond int64, 2026-13-01)
            self._take("text", array, mask, start)
            return
        if kind not in self.kinds:
            self.first_row[kind] = start + pc.index(mask, True).as_py() + 1
        self.kinds[kind] = self.kinds.get(kind, 0) + count
        if kind in ("int", "float", "date", "timestamp"):
            low, high = pc.min_max(typed).values()
            if low.is_valid:
                bounds = self.bounds.setdefault(kind, [low.as_py(), high.as_py()])
                bounds[0], bounds[1] = min(bounds[0], low.as_py()), max(bounds[1], high.as_py())
        if kind in ("int", "text"):
            if self.unique_kind not in (None, kind):
                self.unique.drop()
            self.unique_kind = kind
            self.unique.add(typed)

    def finish(self) -> ColumnProfile:
        kinds = frozenset(k for k, n in self.kinds.items() if n)
        dtype = _WIDENED.get(kinds, "string") if kinds else "string"
        out = ColumnProfile(self.name, dtype, self.rows, self.nulls)
        if len(kinds) > 1:
            out.kinds = {k: self.kinds[k] for k in sorted(kinds, key=_kind_order)}
            out.first_rows = {k: self.first_row[k] for k in out.kinds}
        if dtype == "float64":
            finite = [v for k in ("int", "float") for v in self.bounds.get(k, [])
                      if math.isfinite(v)]
            out.lo, out.hi = (min(finite), max(finite)) if finite else (None, None)
        elif dtype == "timestamp":
            moments = [_as_datetime(v) for k in ("date", "timestamp") for v in
                       self.bounds.get(k, [])]
            out.lo, out.hi = (min(moments), max(moments)) if moments else (None, None)
        elif dtype in ("int64", "date"):
            out.lo, out.hi = self.bounds.get("int" if dtype == "int64" else "date",
                                             [None, None])
        seen = self.distinct.result()
        if dtype == "string":
            out.values = seen
        elif dtype == "int64" and seen is not None:
            out.values = sorted({int(v) for v in seen})
        out.unique = (dtype in ("int64", "string") and self.unique_kind in ("int", "text")
                      and self.unique.result())
        self.unique.drop()
        return out


class TypedProfiler:
    """One Parquet column (or partition column), already typed."""

    def __init__(self, name: str, slots: Slots | None = None) -> None:
        self.name = name
        self.rows = self.nulls = 0
        self.types: list[pa.DataType] = []
        self.lo: Any = None
        self.hi: Any = None
        self.distinct = _Distinct()
        self.unique = _Uniqueness(slots or Slots())

    def add(self, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = pa.concat_arrays(array.chunks) if array.num_chunks else pa.nulls(0)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if array.type not in self.types:
            self.types.append(array.type)
        dtype = dtype_of(array.type)
        self.rows += len(array)
        self.nulls += array.null_count
        if dtype is None or not len(array) or array.null_count == len(array):
            return
        if dtype == "string" or dtype.startswith("int"):
            self.distinct.add(array)
        if dtype not in ("bool", "string"):
            low, high = pc.min_max(array).values()
            if low.is_valid:
                lo, hi = low.as_py(), high.as_py()
                if isinstance(lo, float) and not (math.isfinite(lo) and math.isfinite(hi)):
                    finite = pc.filter(array, pc.is_finite(array))
                    if not len(finite):
                        return
                    lo, hi = (v.as_py() for v in pc.min_max(finite).values())
                self.lo = lo if self.lo is None else min(self.lo, lo)
                self.hi = hi if self.hi is None else max(self.hi, hi)
        if dtype.startswith("int") or dtype == "string":
            self.unique.add(array)
        else:
            self.unique.drop()

    def finish(self) -> ColumnProfile:
        dtype, why = _common_dtype(self.types)
        out = ColumnProfile(self.name, dtype, self.rows, self.nulls, self.lo, self.hi,
                            left_out=why)
        if dtype is not None and (dtype == "string" or dtype.startswith("int")):
            out.values = self.distinct.result()
        out.unique = dtype is not None and (dtype.startswith("int") or dtype == "string") \
            and self.unique.result()
        self.unique.drop()
        if dtype in ("date", "timestamp") and isinstance(out.lo, dt.datetime):
            out.lo, out.hi = _as_utc(out.lo), _as_utc(out.hi)
        return out


def dtype_of(kind: pa.DataType) -> str | None:
    """The environment dtype an Arrow type is declared as (None: buildenv has none)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    for dtype in ("int8", "int16", "int32", "int64", "float32", "float64", "bool", "string",
                  "date", "timestamp"):
        if type_accepts(dtype, kind):
            return dtype
    return None


def _common_dtype(types: list[pa.DataType]) -> tuple[str | None, str | None]:
    """The narrowest dtype that accepts every stored type, or why there is none."""
    if not types:
        return "string", None
    if any(pa.types.is_null(t) for t in types) and len(types) > 1:
        types = [t for t in types if not pa.types.is_null(t)]
    if all(pa.types.is_null(t) for t in types):
        return "string", None  # every value null: nothing says otherwise
    candidates = [dtype_of(t) for t in types]
    if None in candidates:
        bad = types[candidates.index(None)]
        return None, f"stored as {bad}, which no environment dtype reads"
    for dtype in ("int8", "int16", "int32", "int64", "float32", "float64", "bool", "string",
                  "date", "timestamp"):
        if all(type_accepts(dtype, t) for t in types):
            return dtype, None
    return None, ("stored as " + " in some files and ".join(str(t) for t in types)
                  + " in others: no dtype reads both")


def _parse(kind: str, values: pa.Array) -> pa.Array | None:
    """Text of one kind as typed values (text stays text); None when it does not convert."""
    try:
        if kind in _ARROW:
            return values.cast(_ARROW[kind])
        if kind == "timestamp":
            return parse_timestamps(pa.RecordBatch.from_arrays([values], names=["v"]),
                                    ["v"]).column(0)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return None
    return values


def _kind_order(kind: str) -> int:
    return ["int", "float", "bool", "date", "timestamp", "text"].index(kind)


def _order(value: Any) -> tuple[str, Any]:
    return (str(type(value)), value)


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _as_utc(value)
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
