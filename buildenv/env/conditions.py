"""The condition syntax of `ctx.read(..., filters=...)` and of `where` slices, as data.

A predicate is a list of `(column, op, value)` conditions, all of which must hold, or a list of
such lists, any of which must hold (disjunctive normal form, as `pyarrow.parquet` and
`pandas.read_parquet` take it). `op` is one of `==` (`=`), `!=`, `<`, `<=`, `>`, `>=`, `in`,
`not in`; values are converted to the column's declared type (`"2026-09-01"` for a date
column). This module only reads and checks the syntax against declared columns; the data gate
(`buildenv.data.gate.filters`) applies predicates to files and rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.env.spec import Column


__all__ = ["OPERATORS", "convert_value", "parse_conditions"]

#: Accepted operator -> its canonical spelling.
OPERATORS = {"=": "==", "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
             "in": "in", "not in": "not in"}


def convert_value(value: Any, col: Column, what: str) -> Any:
    """`value` as a Python value of the column's declared type; ValueError saying why not."""
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


def parse_conditions(filters: Any, declared: Mapping[str, Column]
                     ) -> list[list[tuple[str, str, Any]]]:
    """`filters` in disjunctive normal form with canonical operators and converted values (a
    tuple for in / not in). KeyError(column) for an undeclared column; ValueError saying what
    else is wrong (an unknown operator, a value of the wrong type, an empty list)."""
    if not isinstance(filters, Sequence) or isinstance(filters, (str, bytes)) or not filters:
        raise ValueError("filters must be a non-empty list of (column, op, value) conditions, "
                         "or a list of such lists")
    nested = all(isinstance(f, list) for f in filters) and not _is_condition(filters[0])
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
            if op not in OPERATORS:
                raise ValueError(f"filter on '{column}': unknown operator {op!r} (use one of "
                                 f"{', '.join(sorted(set(OPERATORS)))})")
            op = OPERATORS[op]
            what = f"filter on '{column}'"
            if op in ("in", "not in"):
                if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set,
                                                                             frozenset)):
                    raise ValueError(f"{what}: '{op}' takes a list of values")
                converted: Any = tuple(convert_value(v, declared[column], what) for v in value)
            else:
                converted = convert_value(value, declared[column], what)
            conds.append((column, op, converted))
        if not conds:
            raise ValueError("an empty list of conditions in filters")
        alternatives.append(conds)
    return alternatives


def _is_condition(item: Any) -> bool:
    """A (column, op, value) triple, written as a list: `[hour, ">=", 20]`."""
    return isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) \
        and isinstance(item[1], str) and item[1] in OPERATORS
