"""Evaluation slices as data: which evaluation rows each declared slice holds.

A declared slice (`evaluation.slices[i]`) becomes a `Family`: one code per row saying which of
its slices the row is in (-1: none). A `by` column makes one slice per value (nulls are the
slice `<by>=null`), `bins` one per bin (`[lo, hi)`, the last one closed; values outside the
edges are in none), and `where` one slice of the rows the predicate holds for. Slices of one
family never overlap, so a family is summed with one pass; rows may be in slices of several
families. A `by` family with more than `MAX_VALUES` values keeps the largest ones.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.filters import parse_filters
from buildenv.env.evaluation_rules import MAX_VALUES, slice_columns
from buildenv.env.spec import Environment, Slice

__all__ = ["Family", "MissingColumn", "families", "overall"]


class MissingColumn(Exception):
    """A slice's column is not among the evaluation rows read (its dataset was not joined)."""

    def __init__(self, index: int, column: str):
        super().__init__(column)
        self.index, self.column = index, column


@dataclass(frozen=True)
class Family:
    """The slices one declaration makes: `codes[row]` is the slice of each row, -1 none."""

    index: int | None  # evaluation.slices[index]; None for all rows
    codes: np.ndarray  # int32
    names: list[str]  # the slices' names, by code
    min_rows: int
    kind: str  # all | value | bins | where
    public: list[bool] = field(default_factory=list)  # names written in the environment
    dropped: int = 0  # values beyond MAX_VALUES, in no slice

    @property
    def size(self) -> int:
        return len(self.names)

    def rows(self) -> np.ndarray:
        """Rows per slice."""
        kept = self.codes[self.codes >= 0]
        return np.bincount(kept, minlength=self.size).astype(np.int64)


def overall(rows: int) -> Family:
    """Every labelled evaluation row as one family of one slice (the overall figures)."""
    return Family(None, np.zeros(rows, np.int32), ["all"], 1, "all", [True])


def families(env: Environment, attributes: pa.Table, public_keys: bool = False
             ) -> list[Family]:
    """The families of `env.evaluation.slices` over `attributes` (the rows to score). With
    `public_keys` a `by` column's slices are its declared domain (bool: false, true) and null,
    whether or not rows hold them, so the data does not choose which slices exist."""
    declared = {name: col for name, (_, col) in slice_columns(env).items()}
    out = []
    for i, spec in enumerate(env.evaluation.slices):
        for column in spec.columns:
            if column not in attributes.column_names:
                raise MissingColumn(i, column)
        if spec.by is not None and spec.bins is not None:
            out.append(_binned(i, spec, attributes.column(spec.by)))
        elif spec.by is not None and public_keys:
            col = declared[spec.by]
            keys = list(col.domain) if col.domain is not None else [False, True]
            out.append(_by_key(i, spec, attributes.column(spec.by), keys))
        elif spec.by is not None:
            out.append(_by_value(i, spec, attributes.column(spec.by)))
        else:
            out.append(_where(i, spec, attributes, declared))
    return out


def _by_value(index: int, spec: Slice, column: pa.ChunkedArray) -> Family:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    values = encoded.dictionary.to_pylist()
    raw = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = sorted(range(len(values)), key=lambda k: _sort_key(values[k]))
    rank = np.empty(len(values), np.int64)
    rank[order] = np.arange(len(values))
    codes = rank[raw] if len(raw) else raw
    names = [f"{spec.by}={value_text(values[k])}" for k in order]
    dropped = 0
    if len(names) > MAX_VALUES:  # keep the largest slices (ties: by name)
        counts = np.bincount(codes, minlength=len(names))
        keep = sorted(sorted(range(len(names)), key=lambda k: (-counts[k], names[k]))
                      [:MAX_VALUES])
        dropped = len(names) - MAX_VALUES
        remap = np.full(len(names), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        codes = remap[codes]
        names = [names[k] for k in keep]
    return Family(index, codes.astype(np.int32), names, spec.min_rows, "value",
                  [False] * len(names), dropped)


def _by_key(index: int, spec: Slice, column: pa.ChunkedArray, keys: list[Any]) -> Family:
    """One slice per declared key and one for nulls; other values are in none."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    found = pc.index_in(array, value_set=pa.array(keys, type=array.type))
    codes = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    codes[np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = len(keys)
    names = [f"{spec.by}={value_text(k)}" for k in keys] + [f"{spec.by}=null"]
    return Family(index, codes, names, spec.min_rows, "value", [True] * len(names))


def _binned(index: int, spec: Slice, column: pa.ChunkedArray) -> Family:
    assert spec.bins is not None
    edges = np.asarray(spec.bins, dtype=np.float64)
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    values = np.asarray(values, dtype=np.float64)
    codes = np.searchsorted(edges, values, side="right") - 1
    last = len(edges) - 2
    codes = np.where(values == edges[-1], last, codes)  # the last bin is closed
    codes = np.where(np.isnan(values) | (codes < 0) | (codes > last), -1, codes)
    names = [f"{spec.by}=[{_edge(lo)}, {_edge(hi)}{']' if k == last else ')'}"
             for k, (lo, hi) in enumerate(itertools.pairwise(edges))]
    return Family(index, codes.astype(np.int32), names, spec.min_rows, "bins",
                  [True] * len(names))


def _where(index: int, spec: Slice, attributes: pa.Table, declared: dict) -> Family:
    rule = parse_filters(spec.where, declared, "evaluation")
    assert rule is not None
    numbered = attributes.select(rule.columns).append_column(
        "__row__", pa.array(np.arange(attributes.num_rows, dtype=np.int64)))
    held = rule.apply(numbered, declared).column("__row__").to_numpy()
    codes = np.full(attributes.num_rows, -1, np.int32)
    codes[held] = 0
    return Family(index, codes, [str(spec.name)], spec.min_rows, "where", [True])


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, 0, "")
    if isinstance(value, (bool, int, float)):
        return (0, float(value), "")
    return (1, 0, str(value))


def value_text(value: Any) -> str:
    """A slice value as its name shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _edge(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"
