"""Great Expectations expectation suites (JSON) -> environment columns.

Reads the suite files GX 0.x (`expectation_suite_name`, `expectation_type`) and 1.x (`name`,
`type`) write. Each expectation is either translated (a per-value constraint buildenv has), or
listed with the reason it is not: aggregates (mean, stdev, row counts), multi-column and
conditional expectations, deny-lists, negative patterns, order checks. GX's semantics carry
over: nulls are ignored by value expectations, `mostly` becomes `max_violation_fraction`
(`1 - mostly`), `unique` counts every row of a duplicated value, regexes are searched (not
fully matched), an empty `value_set` allows no value, NaN is missing in a float column that
must not be null (pandas' `isnull`: `allow_nan: false`), and a column set matched exactly makes
other columns errors (`undeclared_columns: error`). A suite compares no distributions (its KL
divergence expectation is not translated), so every column is `monitor: false`. Regexes that
RE2 cannot compile (look-around, backreferences) are reported.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Any

from buildenv.env.importers.common import ColumnDraft, Imported, Skipped
from buildenv.env.spec import FLOAT_DTYPES, INTEGER_DTYPES, NUMERIC_DTYPES, pattern_problem

__all__ = ["GxError", "import_suite"]


class GxError(ValueError):
    """Not an expectation suite; `line`/`col` locate invalid JSON."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        super().__init__(message)
        self.line, self.col = line, col


_AGGREGATE = ("an aggregate statistic of the column; buildenv constrains values (distributions "
              "are `buildenv drift`'s job)")
_REASONS: dict[str, str] = {
    "expect_column_mean_to_be_between": _AGGREGATE,
    "expect_column_median_to_be_between": _AGGREGATE,
    "expect_column_stdev_to_be_between": _AGGREGATE,
    "expect_column_sum_to_be_between": _AGGREGATE,
    "expect_column_quantile_values_to_be_between": _AGGREGATE,
    "expect_column_unique_value_count_to_be_between": _AGGREGATE,
    "expect_column_most_common_value_to_be_in_set": _AGGREGATE,
    "expect_column_kl_divergence_to_be_less_than": _AGGREGATE,
    "expect_column_distinct_values_to_contain_set": "requires values to be present; buildenv "
    "checks that values are allowed, not that each one occurs",
    "expect_column_distinct_values_to_equal_set": "requires every value of the set to be "
    "present; buildenv checks only that values are allowed (translate it as in_set if that is "
    "enough)",
    "expect_column_values_to_not_be_in_set": "a deny-list; buildenv domains are allow-lists",
    "expect_column_values_to_not_match_regex": "a negative pattern; RE2 has no negative "
    "look-ahead to express it",
    "expect_column_values_to_not_match_regex_list": "negative patterns; RE2 has no negative "
    "look-ahead to express them",
    "expect_column_values_to_match_like_pattern": "a SQL LIKE pattern; rewrite it as a regex",
    "expect_column_values_to_be_null": "requires nulls; buildenv bounds nulls from above "
    "(nullable, max_null_fraction)",
    "expect_column_values_to_be_increasing": "depends on row order, which buildenv does not "
    "constrain",
    "expect_column_values_to_be_decreasing": "depends on row order, which buildenv does not "
    "constrain",
    "expect_column_values_to_be_dateutil_parseable": "a parse check of strings; declare the "
    "column as date or timestamp instead",
    "expect_column_values_to_be_json_parseable": "a parse check of strings",
    "expect_column_values_to_match_json_schema": "a JSON Schema check of strings",
    "expect_column_values_to_match_strftime_format": "a parse check of strings; declare the "
    "column as date or timestamp instead",
    "expect_table_row_count_to_be_between": "a row count; buildenv constrains columns",
    "expect_table_row_count_to_equal": "a row count; buildenv constrains columns",
    "expect_table_row_count_to_equal_other_table": "compares two tables",
    "expect_table_column_count_to_be_between": "a column count; declared columns must exist, "
    "others are allowed",
    "expect_table_column_count_to_equal": "a column count; declared columns must exist, others "
    "are allowed",
    "expect_compound_columns_to_be_unique": "a key over several columns; buildenv keys are "
    "single columns",
    "expect_select_column_values_to_be_unique_within_record": "relates several columns of a row",
    "expect_multicolumn_sum_to_equal": "relates several columns of a row",
}
_PREFIX_REASONS = (("expect_column_pair_", "relates two columns; buildenv constraints are "
                    "per column"),
                   ("expect_multicolumn_", "relates several columns of a row"))

# GX type names (pandas, numpy, Python, SQL, Spark) -> buildenv dtype, lowercased, with
# "[pyarrow]"-style suffixes and "type"/"dtype" endings removed
_TYPES = {
    "int8": "int8", "tinyint": "int8", "byte": "int8",
    "int16": "int16", "smallint": "int16", "short": "int16",
    "int32": "int32", "integer": "int32", "int4": "int32",
    "int64": "int64", "int": "int64", "bigint": "int64", "long": "int64", "int8_": "int8",
    "float32": "float32", "real": "float32", "float4": "float32",
    "float64": "float64", "float": "float64", "double": "float64", "double_precision": "float64",
    "float8": "float64", "numeric": "float64", "decimal": "float64",
    "bool": "bool", "boolean": "bool", "bool_": "bool",
    "str": "string", "string": "string", "object": "string", "varchar": "string",
    "text": "string", "char": "string", "nvarchar": "string", "large_string": "string",
    "utf8": "string", "large_utf8": "string", "unicode": "string",
    "date": "date", "date32": "date", "datetime64[d]": "date",
    "timestamp": "timestamp", "datetime": "timestamp", "datetime64": "timestamp",
    "timestamp_ntz": "timestamp", "timestamptz": "timestamp",
}
_SPARK_SIZES = {"byte": "int8", "short": "int16", "integer": "int32", "long": "int64",
                "float": "float32", "double": "float64"}


def gx_dtype(name: Any) -> str | None:
    """A GX type name as a buildenv dtype, or None when it has none."""
    if not isinstance(name, str):
        return None
    text = name.strip().lower()
    spark = re.fullmatch(r"(\w+?)type(\(\))?", text)
    if spark and spark.group(1) in _SPARK_SIZES:
        return _SPARK_SIZES[spark.group(1)]
    text = re.sub(r"\[pyarrow\]$", "", text)
    if text.startswith("datetime64"):
        return "date" if text == "datetime64[d]" else "timestamp"
    if text.startswith(("timestamp", "string", "varchar", "char(")):
        return "timestamp" if text.startswith("timestamp") else "string"
    text = re.sub(r"(dtype|type)(\(\))?$", "", text).rstrip("_") or text
    text = re.sub(r"\(.*\)$", "", text)
    return _TYPES.get(text) or _TYPES.get(text + "_")


class _Suite:
    def __init__(self, expectations: list[dict[str, Any]], lines: list[int | None]):
        self.expectations = expectations
        self.lines = lines
        self.drafts: dict[str, ColumnDraft] = {}
        self.skipped: list[Skipped] = []
        self.translated = 0
        self.exact = False  # a column set or list matched exactly: other columns are errors

    def draft(self, column: str, line: int | None) -> ColumnDraft:
        """The column's draft; its line is the first expectation about that column alone."""
        draft = self.drafts.setdefault(column, ColumnDraft(column, line=line))
        if line is not None and (draft.line is None or line < draft.line):
            draft.line = line
        return draft


def import_suite(text: str) -> Imported:
    """Translate a suite's JSON text; GxError when it is not a suite."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GxError(f"invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise GxError("not a Great Expectations expectation suite: no `expectations` list")
    name = data.get("name") or data.get("expectation_suite_name") or "(unnamed)"
    expectations = data["expectations"]
    for i, exp in enumerate(expectations):
        if not isinstance(exp, dict) or not isinstance(_type_of(exp), str) or not isinstance(
                exp.get("kwargs", {}), dict):
            raise GxError(f"expectations[{i}] is not an expectation (a `type` or "
                          "`expectation_type` and `kwargs`)")
    suite = _Suite(expectations, _lines(text, len(expectations)))
    # types first, so that constraints are read knowing the column's dtype
    typed = [i for i, exp in enumerate(expectations) if _type_of(exp) in _TYPE_EXPECTATIONS]
    for i in typed + [i for i in range(len(expectations)) if i not in typed]:
        _translate(suite, expectations[i], suite.lines[i])
    columns: dict[str, dict[str, Any]] = {}
    for column, draft in suite.drafts.items():
        if draft.dtype is None:
            _infer_dtype(draft, suite.skipped)
        if not draft.nullable and draft.dtype in FLOAT_DTYPES:
            draft.allow_nan = False  # GX on pandas counts NaN as null
        draft.monitor = False  # the suite compares no distributions
        columns[column] = draft.finish(suite.skipped)
    return Imported(f"Great Expectations suite '{name}'", columns, {}, suite.skipped,
                    suite.translated, len(expectations), "expectations",
                    dataset_keys={"undeclared_columns": "error"} if suite.exact else {})


def _type_of(exp: dict[str, Any]) -> Any:
    return exp.get("type", exp.get("expectation_type"))


def _lines(text: str, count: int) -> list[int | None]:
    """The line of each expectation's type key, when they can be told apart in the text."""
    found = [m.start() for m in re.finditer(r'"(?:expectation_)?type"\s*:\s*"expect_', text)]
    if len(found) != count:
        return [None] * count
    return [text.count("\n", 0, pos) + 1 for pos in found]


def _translate(suite: _Suite, exp: dict[str, Any], line: int | None) -> None:
    kind: str = _type_of(exp)
    kwargs: dict[str, Any] = exp.get("kwargs") or {}
    column = kwargs.get("column")
    what = f"{kind}" + (f" on '{column}'" if isinstance(column, str) else "")

    def skip(reason: str) -> None:
        suite.skipped.append(Skipped(what, reason, line))

    if kwargs.get("row_condition"):
        return skip("applies only to rows matching a row_condition; buildenv constraints "
                    "apply to every row")
    if any(isinstance(v, dict) and ("$PARAMETER" in v or "$parameter" in v)
           for v in kwargs.values()):
        return skip("takes a value from a runtime parameter ($PARAMETER); write the value in")
    handler = _HANDLERS.get(kind)
    if handler is None:
        reason = _REASONS.get(kind) or next((r for p, r in _PREFIX_REASONS if kind.startswith(p)),
                                            None)
        return skip(reason or "not an expectation this importer knows")
    if handler not in _TABLE_HANDLERS and not isinstance(column, str):
        return skip("has no `column`")
    mostly = kwargs.get("mostly")
    tolerance = 0.0
    if mostly is not None:
        if not isinstance(mostly, (int, float)) or isinstance(mostly, bool) or not (
                0 <= mostly <= 1):
            return skip(f"mostly {mostly!r} is not a fraction in 0..1")
        tolerance = round(1.0 - float(mostly), 12)
    existed = set(suite.drafts)
    reason = handler(suite, kwargs, tolerance, what, line)
    if reason:
        for name in set(suite.drafts) - existed:  # nothing translated: declare nothing
            del suite.drafts[name]
        skip(reason)
    else:
        suite.translated += 1


# --- handlers: return None when translated, or the reason they are not --------------------------

Kwargs = dict[str, Any]  # an expectation's kwargs, as the suite's JSON has them
Handler = Callable[[_Suite, Kwargs, float, str, "int | None"], "str | None"]


def _exist(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    suite.draft(kw["column"], line)
    if kw.get("column_index") is not None:
        suite.skipped.append(Skipped(what, "column_index: buildenv does not constrain column "
                                     "order", line, approximate=True))
    return None


def _of_type(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    dtype = gx_dtype(kw.get("type_"))
    if dtype is None:
        return f"type {kw.get('type_')!r} has no buildenv dtype"
    return _set_dtype(suite.draft(kw["column"], line), dtype, f"type {kw.get('type_')!r}")


def _type_list(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    names = kw.get("type_list")
    if not isinstance(names, list) or not names:
        return "type_list is not a list of type names"
    found = [gx_dtype(n) for n in names]
    if None in found:
        return f"type_list {names!r} has a type with no buildenv dtype"
    dtypes = {d for d in found if d is not None}
    if dtypes <= set(INTEGER_DTYPES):
        dtype = max(dtypes, key=INTEGER_DTYPES.index)
    elif dtypes <= set(NUMERIC_DTYPES):
        dtype = "float64"
    elif len(dtypes) == 1:
        dtype = dtypes.pop()
    else:
        return f"type_list {names!r} spans several kinds of dtype"
    return _set_dtype(suite.draft(kw["column"], line), dtype, f"type_list {names!r}")


def _set_dtype(draft: ColumnDraft, dtype: str, by: str) -> str | None:
    if draft.dtype is not None and draft.dtype != dtype:
        return f"{by} contradicts the column's other type expectation ({draft.dtype})"
    draft.dtype = dtype
    return None


def _not_null(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    draft = suite.draft(kw["column"], line)
    if tol == 0:
        draft.nullable = False
    else:
        draft.max_null_fraction = _min_opt(draft.max_null_fraction, tol)
    return None


def _non_null_share(suite: _Suite, kw: Kwargs, tol: float, what: str,
                    line: int | None) -> str | None:
    low, high = kw.get("min_value"), kw.get("max_value")
    if high is not None and (not isinstance(high, (int, float)) or isinstance(high, bool)):
        return "max_value is not a number"
    if high is not None and high < 1:
        return "requires some nulls (max_value < 1); buildenv bounds nulls from above only"
    if not isinstance(low, (int, float)) or isinstance(low, bool) or not 0 <= low <= 1:
        return "min_value is not a fraction in 0..1"
    draft = suite.draft(kw["column"], line)
    if low >= 1:
        draft.nullable = False
    elif low > 0:
        draft.max_null_fraction = _min_opt(draft.max_null_fraction, round(1.0 - low, 12))
    return None


def _between(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None,
             ends: tuple[bool, bool] = (True, True)) -> str | None:
    """`ends`: which of min_value/max_value bound every value (both, for values_to_be_between;
    one for the min/max aggregates)."""
    draft = suite.draft(kw["column"], line)
    lo = kw.get("min_value") if ends[0] else None
    hi = kw.get("max_value") if ends[1] else None
    if lo is None and hi is None:
        return "bounds nothing (no min_value or max_value)"
    bounds: list[Any] = []
    for value, strict, low in ((lo, kw.get("strict_min"), True), (hi, kw.get("strict_max"), False)):
        if value is None:
            bounds.append(None)
            continue
        bound = _bound(draft, value, bool(strict), low, kw.get("parse_strings_as_datetimes"))
        if isinstance(bound, str) and bound.startswith("!"):
            return bound[1:]
        bounds.append(bound)
    by = what.split(" on ")[0].removeprefix("expect_column_")
    if bounds[0] is not None:
        draft.lows.append((bounds[0], tol, by))
    if bounds[1] is not None:
        draft.highs.append((bounds[1], tol, by))
    return None


def _extreme(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None, *,
             low: bool) -> str | None:
    """min_to_be_between's min_value bounds every value from below (max's max_value from
    above); its other bound constrains only the extreme itself, an aggregate."""
    kept, other = ("min_value", "max_value") if low else ("max_value", "min_value")
    if kw.get(kept) is None:
        return f"only {other} is given, which bounds the column's " \
               f"{'minimum' if low else 'maximum'} itself, an aggregate"
    reason = _between(suite, {**kw, other: None}, 0.0, what, line, (low, not low))
    if reason is None and kw.get(other) is not None:
        suite.skipped.append(Skipped(what, f"{kept} is a range bound; {other} bounds the "
                                     f"column's {'minimum' if low else 'maximum'} itself, an "
                                     "aggregate, and is not translated", line,
                                     approximate=True))
    return reason


def _bound(draft: ColumnDraft, value: Any, strict: bool, low: bool, parse_dates: Any) -> Any:
    """A bound as buildenv writes it (inclusive), or "!reason" when there is none."""
    if isinstance(value, bool):
        return "!a bool bound; bool columns take a domain"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "!an infinite or NaN bound"
        draft.hints.append("float64" if isinstance(value, float) else "int64")
        if not strict:
            return value
        if draft.dtype is None:
            return "!a strict bound on a column of unknown type (no type expectation): " \
                   "the inclusive bound depends on it"
        if draft.dtype in INTEGER_DTYPES:  # x > 2.5 is x >= 3; x < 3 is x <= 2
            whole = math.floor(value) if low else math.ceil(value)
            return whole + 1 if low else whole - 1
        # the next float64 after the bound: exact for float64 data, and for float32 data
        # (compared in float64)
        return math.nextafter(float(value), math.inf if low else -math.inf)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            if parse_dates:
                return "!a date bound that is not ISO 8601"
            return "!a range over strings; buildenv ranges are numeric or temporal"
        is_date = re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None
        draft.hints.append("date" if is_date else "timestamp")
        if not strict:
            return value
        if is_date:
            return (parsed.date() + dt.timedelta(days=1 if low else -1)).isoformat()
        return "!a strict bound on a timestamp; write the inclusive bound"
    return f"!bound {value!r} is not a number or an ISO 8601 date"


def _in_set(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    values = kw.get("value_set")
    if not isinstance(values, list):
        return "value_set is not a list"
    if not all(isinstance(v, (str, int, float, bool)) for v in values):
        return "value_set holds values that are not strings, numbers or bools"
    draft = suite.draft(kw["column"], line)
    unique = list(dict.fromkeys(values))
    if values and all(isinstance(v, bool) for v in values):
        draft.hints.append("bool")
    elif values and all(isinstance(v, str) for v in values):
        if all(_iso(v) for v in values) and draft.dtype in ("date", "timestamp"):
            return "a set of dates; buildenv domains are strings, numbers or bools (use a range)"
        draft.hints.append("string")
    elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        draft.hints.append("float64" if any(isinstance(v, float) for v in values) else "int64")
    by = what.split(" on ")[0].removeprefix("expect_column_")
    draft.domains.append((unique, tol, by))
    return None


def _iso(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _unique(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    suite.draft(kw["column"], line).unique = (tol, "values_to_be_unique")
    return None


def _unique_share(suite: _Suite, kw: Kwargs, tol: float, what: str,
                  line: int | None) -> str | None:
    if kw.get("min_value") != 1 and kw.get("min_value") != 1.0:
        return "a share of distinct values below 1 is an aggregate; only min_value: 1 " \
               "(every value distinct) is a key"
    suite.draft(kw["column"], line).unique = (0.0, "proportion_of_unique_values")
    return None


def _regex(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    return _set_pattern(suite.draft(kw["column"], line), kw.get("regex"), tol,
                        "values_to_match_regex")


def _regex_list(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    patterns = kw.get("regex_list")
    if not isinstance(patterns, list) or not patterns or not all(
            isinstance(p, str) for p in patterns):
        return "regex_list is not a list of regular expressions"
    match_on = kw.get("match_on", "all")
    if len(patterns) == 1:
        pattern = patterns[0]
    elif match_on == "any":
        pattern = "|".join(f"(?:{p})" for p in patterns)
    else:
        return "every one of several regexes must match (match_on: all); buildenv has one " \
               "pattern per column and RE2 has no look-ahead to combine them"
    return _set_pattern(suite.draft(kw["column"], line), pattern, tol, "match_regex_list")


def _set_pattern(draft: ColumnDraft, pattern: Any, tol: float, by: str) -> str | None:
    if not isinstance(pattern, str):
        return "regex is not a string"
    why = pattern_problem(pattern)
    if why:
        return f"the regex uses syntax RE2 does not have ({why})"
    if draft.pattern is not None and draft.pattern[0] != pattern:
        return "a second regex for the column; buildenv has one pattern per column"
    draft.pattern = (pattern, tol, by)
    draft.hints.append("string")
    return None


def _lengths(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    return _set_length(suite.draft(kw["column"], line), lo, hi, tol, kw)


def _length_equal(suite: _Suite, kw: Kwargs, tol: float, what: str,
                  line: int | None) -> str | None:
    value = kw.get("value")
    return _set_length(suite.draft(kw["column"], line), value, value, tol, kw)


def _set_length(draft: ColumnDraft, lo: Any, hi: Any, tol: float, kw: Kwargs) -> str | None:
    if lo is None and hi is None:
        return "bounds nothing (no min_value or max_value)"
    for value in (lo, hi):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0):
            return f"length {value!r} is not a non-negative integer"
    if kw.get("strict_min"):
        lo = lo + 1 if lo is not None else None
    if kw.get("strict_max"):
        hi = hi - 1 if hi is not None else None
    if lo is not None:
        draft.length_lows.append((lo, tol, "value_lengths"))
    if hi is not None:
        draft.length_highs.append((hi, tol, "value_lengths"))
    draft.hints.append("string")
    return None


def _columns(suite: _Suite, kw: Kwargs, tol: float, what: str, line: int | None) -> str | None:
    names = kw.get("column_set", kw.get("column_list"))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "the column list is not a list of names"
    for name in names:
        suite.draft(name, None)
    if kw.get("column_list") is not None:
        suite.exact = True
        suite.skipped.append(Skipped(what, "columns are declared and others are errors "
                                     "(undeclared_columns: error), but buildenv does not "
                                     "constrain their order", line, approximate=True))
    elif kw.get("exact_match", True):
        suite.exact = True
    return None


def _min_opt(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


_HANDLERS: dict[str, Handler] = {
    "expect_column_to_exist": _exist,
    "expect_column_values_to_be_of_type": _of_type,
    "expect_column_values_to_be_in_type_list": _type_list,
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_proportion_of_non_null_values_to_be_between": _non_null_share,
    "expect_column_values_to_be_between": _between,
    "expect_column_min_to_be_between": lambda *a: _extreme(*a, low=True),
    "expect_column_max_to_be_between": lambda *a: _extreme(*a, low=False),
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_distinct_values_to_be_in_set": _in_set,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_proportion_of_unique_values_to_be_between": _unique_share,
    "expect_column_values_to_match_regex": _regex,
    "expect_column_values_to_match_regex_list": _regex_list,
    "expect_column_value_lengths_to_be_between": _lengths,
    "expect_column_value_lengths_to_equal": _length_equal,
    "expect_table_columns_to_match_set": _columns,
    "expect_table_columns_to_match_ordered_list": _columns,
}
_TABLE_HANDLERS = {_columns}
_TYPE_EXPECTATIONS = ("expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list")


def _infer_dtype(draft: ColumnDraft, skipped: list[Skipped]) -> None:
    """No type expectation: the dtype the constraints' values suggest (reported), or string."""
    hints = set(draft.hints)
    if not hints:
        draft.dtype = "string"
        skipped.append(Skipped(f"column '{draft.name}': dtype", "the suite says nothing about "
                               "its type (no expect_column_values_to_be_of_type); declared "
                               "string: check it", draft.line, approximate=True))
        return
    if hints <= {"int64"}:
        dtype = "int64"
    elif hints <= {"int64", "float64"}:
        dtype = "float64"
    elif len(hints) == 1:
        dtype = hints.pop()
    elif hints <= {"date", "timestamp"}:
        dtype = "timestamp"
    else:
        dtype = "string"
    draft.dtype = dtype
    skipped.append(Skipped(f"column '{draft.name}': dtype", f"inferred as {dtype} from the "
                           "values the suite compares with (no "
                           "expect_column_values_to_be_of_type): check it", draft.line,
                           approximate=True))
