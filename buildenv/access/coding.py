"""How a declared column becomes the cells that private releases count.

Differential privacy needs the *shape* of every answer to be public before any data is read:
which keys a histogram has, which bins, how far one person can move a sum. The environment
already declares it: a column's `domain` gives the keys of its histogram, its `range` gives the
bins (and clamps values into them, which bounds a sum). So buildenv can release statistics and
fit synthetic data without anyone looking at the data to choose them. A string or integer column
without a domain has no public keys: its values are *discovered* (only those whose noisy count
clears a threshold are released). A float, date or timestamp column without a range cannot be
described beyond its null count.

Cells of a coded column, in order: the keys (domain values or range bins), then "(outside
domain)" for categorical columns (values the domain does not list), then "(null)".
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.env.spec import INTEGER_DTYPES, NUMERIC_DTYPES, TEMPORAL_DTYPES, Column

__all__ = ["NULL", "OTHER", "PRESENT", "SUM_STEPS", "Coding", "coding_for", "plan_codings"]

NULL = "(null)"
OTHER = "(outside domain)"
PRESENT = "(not null)"
SUM_STEPS = 1 << 20  # a clamped value is summed as an integer in [0, SUM_STEPS]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Coding:
    """One column as cells: `categorical` (domain or bool keys), `binned` (range bins),
    `keys` (no public keys: discovered under a threshold) or `nulls` (only null / not null)."""

    name: str
    column: Column
    kind: str
    keys: tuple[Any, ...] = ()
    edges: np.ndarray | None = None  # binned: k+1 edges in the numeric space
    lo: float = 0.0
    hi: float = 0.0

    # --- shape ----------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.column.dtype

    @property
    def integral(self) -> bool:
        """Whether the numeric space is integers (ints, dates as days, timestamps as µs)."""
        return self.dtype in INTEGER_DTYPES or self.dtype in TEMPORAL_DTYPES

    @property
    def bins(self) -> int:
        return 0 if self.edges is None else len(self.edges) - 1

    @property
    def cells(self) -> list[str | int | float]:
        if self.kind == "categorical":
            keys: list[str | int | float] = [_label(k) for k in self.keys]
            return keys + [OTHER, NULL]
        if self.kind == "binned":
            return [self.bin_label(i) for i in range(self.bins)] + [NULL]
        return [PRESENT, NULL]

    @property
    def null_cell(self) -> int:
        return len(self.cells) - 1

    def bin_label(self, i: int) -> str | int | float:
        """A bin as users read it: "[a, b)", or its one value for a one-value integer bin."""
        assert self.edges is not None
        a, b = self.edges[i], self.edges[i + 1]
        if self.integral:
            last = b - 1
            if last == a:
                return self.display(a)
            return f"[{self.display(a)}, {self.display(last)}]"
        close = "]" if i == self.bins - 1 else ")"
        return f"[{self.display(a)}, {self.display(b)}{close}"

    # --- numbers --------------------------------------------------------------------------
    @property
    def quantum(self) -> float:
        """Width of one summed unit: 1 for integers spanning at most SUM_STEPS values."""
        if self.integral and self.hi - self.lo <= SUM_STEPS:
            return 1.0
        return (self.hi - self.lo) / SUM_STEPS

    @property
    def sum_bound(self) -> int:
        """The most one row adds to the sum of units (what one person moves it by, per row)."""
        return round((self.hi - self.lo) / self.quantum)

    def display(self, value: float) -> str | int | float:
        """A number of the numeric space as users read it (dates and times in ISO 8601)."""
        if self.dtype == "date":
            return (_EPOCH + dt.timedelta(days=math.floor(value))).date().isoformat()
        if self.dtype == "timestamp":
            moment = _EPOCH + dt.timedelta(microseconds=round(value))
            return moment.isoformat().replace("+00:00", "Z")
        if self.integral:
            return int(value)
        return float(value)

    def numeric(self, array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(values in the numeric space, clamped to the range; mask of rows with a value)."""
        array = _plain(array)
        if self.dtype == "date":
            array = pc.cast(array, pa.date32()).cast(pa.int32())
        elif self.dtype == "timestamp":
            array = pc.cast(array, pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())
        valid = np.asarray(array.is_valid())
        if self.integral:
            values = np.asarray(pc.fill_null(array.cast(pa.int64()), 0), dtype=np.int64)
            values = np.clip(values, int(self.lo), int(self.hi))
        else:
            values = np.asarray(pc.fill_null(array.cast(pa.float64()), math.nan),
                                dtype=np.float64)
            valid &= ~np.isnan(values)
            values = np.clip(np.where(valid, values, self.lo), self.lo, self.hi)
        return values, valid

    def units(self, values: np.ndarray) -> np.ndarray:
        """Clamped values as non-negative integer units of `quantum` (what the sum adds)."""
        if self.quantum == 1.0:
            return (values - int(self.lo)).astype(np.int64)
        return np.rint((values - self.lo) / self.quantum).astype(np.int64)

    # --- encoding -------------------------------------------------------------------------
    def encode(self, array: pa.Array) -> np.ndarray:
        """The cell of every row (int32)."""
        if self.kind == "binned":
            assert self.edges is not None
            values, valid = self.numeric(array)
            cells = np.searchsorted(self.edges[1:-1], values, side="right").astype(np.int32)
            cells[~valid] = self.null_cell
            return cells
        if self.kind == "categorical":
            other = len(self.keys)
            if pa.types.is_dictionary(array.type):
                found = pc.index_in(array.dictionary, value_set=self._value_set(
                    array.type.value_type))
                lookup = np.array(pc.fill_null(found, other), dtype=np.int32)
                indices = array.indices
                cells = lookup[np.asarray(pc.fill_null(indices, 0), dtype=np.int64)] \
                    if len(lookup) else np.full(len(array), other, np.int32)
                cells[~np.asarray(indices.is_valid())] = self.null_cell
                cells[~np.asarray(array.is_valid())] = self.null_cell
                return cells
            found = pc.index_in(array, value_set=self._value_set(array.type))
            cells = np.array(pc.fill_null(found, other), dtype=np.int32)  # a writable copy
            cells[~np.asarray(array.is_valid())] = self.null_cell
            return cells
        cells = np.zeros(len(array), np.int32)
        cells[~np.asarray(_plain(array).is_valid())] = self.null_cell
        return cells

    def _value_set(self, value_type: pa.DataType) -> pa.Array:
        try:
            return pa.array(list(self.keys), type=value_type)
        except (pa.ArrowException, OverflowError):
            return pa.array(list(self.keys))

    def decode_bins(self, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Values drawn uniformly inside each row's bin (numeric space; null cells: lo)."""
        assert self.edges is not None
        inside = np.clip(cells, 0, self.bins - 1)
        lo, hi = self.edges[inside], self.edges[inside + 1]
        if self.integral:  # bins are [a, b) over integers; the last one ends at hi + 1
            return np.asarray(rng.integers(lo.astype(np.int64), hi.astype(np.int64)))
        return np.asarray(rng.uniform(lo, hi))


def _plain(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _label(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _numeric_bound(column: Column, value: Any) -> float:
    if column.dtype == "date":
        parsed = dt.date.fromisoformat(str(value)[:10])
        return float((parsed - _EPOCH.date()).days)
    if column.dtype == "timestamp":
        moment = dt.datetime.fromisoformat(str(value))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        delta = moment - _EPOCH
        return float(delta.days * 86_400_000_000 + delta.seconds * 1_000_000
                     + delta.microseconds)
    return float(value)


def _edges(lo: float, hi: float, integral: bool, bins: int) -> np.ndarray:
    if integral:
        span = int(hi - lo) + 1
        width = max(1, math.ceil(span / bins))
        edges = list(range(int(lo), int(hi) + 1, width)) + [int(hi) + 1]
        return np.asarray(edges, dtype=np.int64)
    if hi == lo:
        return np.asarray([lo, hi], dtype=np.float64)
    return np.linspace(lo, hi, bins + 1)


def coding_for(name: str, column: Column, bins: int = 20) -> Coding:
    """The coding buildenv uses for a declared column (see the module docstring)."""
    if column.domain is not None:
        return Coding(name, column, "categorical", keys=tuple(column.domain))
    if column.dtype == "bool":
        return Coding(name, column, "categorical", keys=(False, True))
    if column.range is not None and (column.dtype in NUMERIC_DTYPES
                                     or column.dtype in TEMPORAL_DTYPES):
        lo, hi = (_numeric_bound(column, v) for v in column.range)
        integral = column.dtype in INTEGER_DTYPES or column.dtype in TEMPORAL_DTYPES
        if integral:
            lo, hi = float(math.ceil(lo)), float(math.floor(hi))
        return Coding(name, column, "binned", edges=_edges(lo, hi, integral, bins), lo=lo, hi=hi)
    if column.dtype == "string" or column.dtype in INTEGER_DTYPES:
        return Coding(name, column, "keys")
    return Coding(name, column, "nulls")


def plan_codings(dataset: str, columns: dict[str, Column], asked: Sequence[str] | None,
                 bins: int = 20, where: Any = None) -> tuple[list[Coding], list[str]]:
    """The codings of the asked columns (default: every declared one but integers without a
    domain or range, which are usually identifiers), and notes on what is described less
    fully. A column named explicitly that cannot get the statistics its type calls for (a
    number, date or time without a range) is BE814."""
    names = list(asked) if asked else list(columns)
    problems, notes, out = [], [], []
    for name in names:
        if name not in columns:
            hint = did_you_mean(name, columns)
            problems.append(Diagnostic("BE010", f"unknown column '{name}' in dataset "
                                       f"'{dataset}'", hints=(hint,) if hint else ()))
            continue
        coding = coding_for(name, columns[name], bins)
        if coding.kind == "keys" and coding.dtype != "string" and not asked:
            notes.append(f"{name}: an integer without domain or range (an identifier?) is "
                         "described only when named in --columns")
            continue
        if coding.kind == "nulls":
            message = (f"column '{name}' ({coding.dtype}) of dataset '{dataset}' has neither a "
                       "range nor a domain, so no numeric or categorical statistic can be "
                       "released without looking at the data")
            if asked:
                diag = (where.diag("BE814", message, "datasets", dataset, "columns", name,
                                   hints=(_range_hint(name, coding.dtype),))
                        if where is not None else
                        Diagnostic("BE814", message, hints=(_range_hint(name, coding.dtype),)))
                problems.append(diag)
                continue
            notes.append(f"{name}: no range declared, so only its null count is released "
                         f"({_range_hint(name, coding.dtype)})")
        out.append(coding)
    if problems:
        raise DiagnosticError(problems, 2)
    return out, notes


def _range_hint(name: str, dtype: str) -> str:
    example = {"date": '["2020-01-01", "2030-12-31"]',
               "timestamp": '["2020-01-01T00:00:00Z", "2030-12-31T23:59:59Z"]'}.get(
                   dtype, "[lo, hi]")
    return f"declare the bounds users may know publicly: `{name}: {{dtype: {dtype}, range: " \
           f"{example}}}`"
