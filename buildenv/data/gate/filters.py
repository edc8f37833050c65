"""Row filters of `ctx.read(..., filters=...)` / `ctx.scan`: pyarrow's and pandas' syntax.

`filters` is a list of `(column, op, value)` conditions, all of which must hold, or a list of
such lists, any of which must hold (disjunctive normal form, as `pyarrow.parquet` and
`pandas.read_parquet` take it). `op` is one of `==` (`=`), `!=`, `<`, `<=`, `>`, `>=`, `in`,
`not in`; values are converted to the column's declared type (`"2026-09-01"` for a date
column). Conditions on partition columns are decided from the file paths, so the files they
rule out are never opened (`Condition.holds`); every condition is then applied to the rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.formats import arrow_type
from buildenv.env.spec import Column

__all__ = ["Condition", "Filters", "parse_filters"]

_OPS = {"=": "==", "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
        "in": "in", "not in": "not in"}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any  # a Python value of the column's type; a tuple for in / not in

    def holds(self, value: Any) -> bool:
        """Whether a (partition) value satisfies the condition; null satisfies nothing."""
        if value is None:
            return False
        if self.op == "in":
            return value in self.value
        if self.op == "not in":
            return value not in self.value
        try:
            return bool({"==": value == self.value, "!=": value != self.value,
                    "<": value < self.value, "<=": value <= self.value,
                    ">": value > self.value, ">=": value >= self.value}[self.op])
        except TypeError:
            return False

    def expression(self, types: Mapping[str, Any]) -> Any:
        field = pc.field(self.column)
        kind = types[self.column]
        if self.op in ("in", "not in"):
            inside = field.isin(pa.array(list(self.value), type=kind))
            return inside if self.op == "in" else ~inside
        scalar = pa.scalar(self.value, type=kind)
        return {"==": field == scalar, "!=": field != scalar, "<": field < scalar,
                "<=": field <= scalar, ">": field > scalar, ">=": field >= scalar}[self.op]


@dataclass(frozen=True)
class Filters:
    """Any of `alternatives` (each: all of its conditions)."""

    alternatives: tuple[tuple[Condition, ...], ...]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for alt in self.alternatives for c in alt))

    def may_hold(self, values: Mapping[str, Any]) -> bool:
        """Whether rows with these partition values can pass: conditions on other columns are
        unknown here and assumed to hold."""
        return any(all(c.holds(values[c.column]) for c in alt if c.column in values)
                   for alt in self.alternatives)

    def expression(self, declared: Mapping[str, Column]) -> Any:
        types = {c: arrow_type(declared[c].dtype) for c in self.columns}
        out = None
        for alt in self.alternatives:
            conj = None
            for cond in alt:
                e = cond.expression(types)
                conj = e if conj is None else conj & e
            out = conj if out is None else out | conj
        return out

    def apply(self, table: Any, declared: Mapping[str, Column]) -> Any:
        """The rows of a pyarrow Table (holding the filter columns) that pass."""
        return table.filter(self.expression(declared))


def _convert(value: Any, col: Column, what: str) -> Any:
    dtype = col.dtype
    if value is None:
        raise ValueError(f"{what}: null matches nothing; filter nulls out after reading")
    try:
        if dtype in ("int8", "int16", "int32", "int64"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if dtype in ("float32", "float64"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            return float(value)
        if dtype == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if dtype == "string":
            if not isinstance(value, str):
                raise TypeError
            return value
        if dtype == "date":
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            return dt.date.fromisoformat(str(value))
        if dtype == "timestamp":
            stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(
                str(value))
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{what}: {value!r} is not a {dtype}")


def parse_filters(filters: Any, declared: Mapping[str, Column], dataset: str) -> Filters | None:
    """Normalize `filters`; ValueError saying what is wrong (an undeclared column, an unknown
    operator, a value of the wrong type)."""
    if filters is None:
        return None
    if not isinstance(filters, Sequence) or isinstance(filters, (str, bytes)) or not filters:
        raise ValueError("filters must be a non-empty list of (column, op, value) conditions, "
                         "or a list of such lists")
    nested = all(isinstance(f, list) for f in filters)
    groups = filters if nested else [filters]
    alternatives = []
    for group in groups:
        conds = []
        for item in group:
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise ValueError(f"filter {item!r} is not a (column, op, value) triple")
            column, op, value = item
            if column not in declared:
                raise KeyError(column)
            if op not in _OPS:
                raise ValueError(f"filter on '{column}': unknown operator {op!r} (use one of "
                                 f"{', '.join(sorted(set(_OPS)))})")
            op = _OPS[op]
            what = f"filter on '{column}'"
            if op in ("in", "not in"):
                if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set,
                                                                             frozenset)):
                    raise ValueError(f"{what}: '{op}' takes a list of values")
                converted: Any = tuple(_convert(v, declared[column], what) for v in value)
            else:
                converted = _convert(value, declared[column], what)
            conds.append(Condition(column, op, converted))
        if not conds:
            raise ValueError("an empty list of conditions in filters")
        alternatives.append(tuple(conds))
    return Filters(tuple(alternatives))
