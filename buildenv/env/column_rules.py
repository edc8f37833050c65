"""The cross-field rules of one column declaration, each a problem at its own key.

`spec.Column` runs every check here after its fields parse; a problem is a pydantic custom
error whose type (`bad_range`, `bad_presence`, ...) `COLUMN_PROBLEM_KEYS` maps to the key it
is about, so the diagnostic points at that key's YAML line and carries the code
`validation_errors` gives the type. Kept apart from the models so that the format (`spec`)
reads as a list of keys, and free of pydantic: the lock's plan runs the same checks on an edited
environment without the models (`env.quick_validate`), and `spec.Column` turns each problem
into the pydantic error.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from typing import Any, NamedTuple, Protocol

# Deferred imports (pyarrow): only an environment that declares a `pattern` needs RE2 to check it;
# `show`, `diff` and `schema` stay light.

__all__ = ["COLUMN_CHECKS", "COLUMN_PROBLEM_KEYS", "ColumnProblem", "FLOAT_DTYPES", "INTEGER_DTYPES",
           "NUMERIC_DTYPES", "TEMPORAL_DTYPES", "parse_temporal", "pattern_problem"]

INTEGER_DTYPES = ("int8", "int16", "int32", "int64")
FLOAT_DTYPES = ("float32", "float64")
NUMERIC_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES
TEMPORAL_DTYPES = ("date", "timestamp")

class Column(Protocol):
    """What the rules read of a column declaration (`spec.Column`, which imports this module)."""

    @property
    def dtype(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def min_count(self) -> int | None: ...
    @property
    def domain(self) -> list[Any] | None: ...
    @property
    def range(self) -> tuple[Any, Any] | None: ...
    @property
    def allow_nan(self) -> bool: ...
    @property
    def max_violation_fraction(self) -> float | None: ...
    @property
    def unique(self) -> bool: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def length(self) -> tuple[int | None, int | None] | None: ...

    def constraints(self) -> list[str]: ...


class ColumnProblem(NamedTuple):
    """A column's problem as pydantic's custom error takes it (`spec.Column` raises
    `pydantic_core.PydanticCustomError(*problem)`): error type, message template, context."""

    type: str
    message: str
    context: dict[str, Any]


#: A column's cross-field problem (its error type) -> the key it is about.
COLUMN_PROBLEM_KEYS = {"bad_range": "range", "bad_domain": "domain", "bad_pattern": "pattern",
                       "bad_length": "length", "bad_tolerance": "max_violation_fraction",
                       "bad_unique": "unique", "bad_presence": "min_count",
                       "bad_nan": "allow_nan"}


@functools.lru_cache(maxsize=256)
def pattern_problem(pattern: str) -> str | None:
    """Why RE2 (pyarrow's regex engine, the one validation runs) refuses `pattern`, if it does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.nulls(1, pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return str(exc).removeprefix("Invalid regular expression: ")
    return None


def _range_problem(col: Column) -> ColumnProblem | None:
    if col.range is None:
        return None
    dtype, (lo, hi) = col.dtype, col.range
    if lo is None and hi is None:
        return ColumnProblem("bad_range", "range [null, null] bounds nothing: give at "
                                   "least one end", {})
    given = [v for v in (lo, hi) if v is not None]
    if dtype in NUMERIC_DTYPES:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
            return ColumnProblem("bad_range", "range of a {dtype} column takes two "
                                       "numbers (or null for an open end)", {"dtype": dtype})
        if any(isinstance(v, float) and not math.isfinite(v) for v in given):
            return ColumnProblem("bad_range", "range bounds cannot be NaN or infinite: write "
                                 "null for an open end", {})
        parsed: list[Any] = [lo, hi]
    elif dtype in TEMPORAL_DTYPES:
        try:
            parsed = [None if v is None else parse_temporal(v) for v in (lo, hi)]
        except ValueError:
            return ColumnProblem("bad_range", "range of a {dtype} column takes two ISO "
                                       "8601 strings (or null for an open end)", {"dtype": dtype})
    else:
        return ColumnProblem("bad_range", "a {dtype} column takes no range (use domain)",
                                   {"dtype": dtype})
    if parsed[0] is not None and parsed[1] is not None and parsed[0] > parsed[1]:
        return ColumnProblem("bad_range", "range [{lo}, {hi}] is empty: the first bound "
                                   "must not exceed the second", {"lo": str(lo), "hi": str(hi)})
    return None


def _domain_problem(col: Column) -> ColumnProblem | None:
    if col.domain is None:
        return None
    dtype = col.dtype
    if dtype not in ("string", "bool") + NUMERIC_DTYPES:
        return ColumnProblem("bad_domain", "a {dtype} column takes no domain (use range)",
                                   {"dtype": dtype})
    floating = dtype in ("float32", "float64")
    for value in col.domain:
        if not _domain_value_fits(dtype, value):
            return ColumnProblem("bad_domain", "domain value {value} is not {what}",
                                       {"value": repr(value),
                                        "what": "a finite number" if floating else
                                        f"{'an' if dtype.startswith('int') else 'a'} {dtype}"})
    seen = [float(v) for v in col.domain] if floating else [repr(v) for v in col.domain]
    if len(set(seen)) != len(seen):
        return ColumnProblem("bad_domain", "domain lists a value twice", {})
    return None


def _pattern_problem(col: Column) -> ColumnProblem | None:
    if col.pattern is None:
        return None
    if col.dtype != "string":
        return ColumnProblem("bad_pattern", "a {dtype} column takes no pattern (patterns "
                                   "apply to strings)", {"dtype": col.dtype})
    why = pattern_problem(col.pattern)
    if why:
        return ColumnProblem("bad_pattern", "pattern {pattern} does not compile as RE2: "
                                   "{why}", {"pattern": repr(col.pattern), "why": why})
    return None


def _length_problem(col: Column) -> ColumnProblem | None:
    if col.length is None:
        return None
    if col.dtype != "string":
        return ColumnProblem("bad_length", "a {dtype} column takes no length (lengths "
                                   "apply to strings)", {"dtype": col.dtype})
    lo, hi = col.length
    if lo is None and hi is None:
        return ColumnProblem("bad_length", "length [null, null] bounds nothing: give at "
                                   "least one end", {})
    if lo is not None and hi is not None and lo > hi:
        return ColumnProblem("bad_length", "length [{lo}, {hi}] is empty: the first bound "
                                   "must not exceed the second", {"lo": lo, "hi": hi})
    return None


def _unique_problem(col: Column) -> ColumnProblem | None:
    if col.unique and col.dtype == "bool":
        return ColumnProblem("bad_unique", "a bool column cannot be unique (it has two "
                                   "values); declare a domain instead", {})
    return None


def _tolerance_problem(col: Column) -> ColumnProblem | None:
    if col.max_violation_fraction is not None and not col.constraints():
        return ColumnProblem("bad_tolerance", "max_violation_fraction tolerates "
                                   "violations of range, domain, pattern, length or unique, and "
                                   "this column declares none of them", {})
    return None


def _domain_value_fits(dtype: str, value: Any) -> bool:
    if dtype == "string":
        return isinstance(value, str)
    if dtype == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if dtype in INTEGER_DTYPES:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def parse_temporal(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _presence_problem(col: Column) -> ColumnProblem | None:
    if col.min_count is not None and not col.required:
        return ColumnProblem("bad_presence", "min_count {n} asks for values, so the column "
                                   "cannot be optional: drop `required: false` or `min_count`",
                                   {"n": col.min_count})
    return None


def _nan_problem(col: Column) -> ColumnProblem | None:
    if not col.allow_nan and col.dtype not in FLOAT_DTYPES:
        return ColumnProblem("bad_nan", "a {dtype} column holds no NaN (allow_nan applies "
                                   "to float32 and float64 columns)", {"dtype": col.dtype})
    return None


#: Every check, in the order their problems are reported.
COLUMN_CHECKS = (_range_problem, _domain_problem, _pattern_problem, _length_problem,
                 _unique_problem, _tolerance_problem, _presence_problem, _nan_problem)
