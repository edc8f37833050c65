"""Feature-value skew (`buildenv skew --key K`): serving rows joined to the training rows with the
same key, and per column the share of joined examples whose value differs.

The serving side (key and compared columns) is held in memory, a table as large as the serving
batch; the training side streams in batches, and each batch is matched against it with one
hash lookup (`index_in`) of the serving keys in the batch's keys. A serving row joins the first
training row with its key (a key repeated in the training data does not multiply it). Values are compared as the environment declares them: equal, or both null; floats
within a relative 1e-6 (serving code often computes in float32). Restricted datasets: counts
only, never a value or a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.env.spec import Column

__all__ = ["RTOL", "Mismatches", "count_mismatches"]

RTOL = 1e-6


@dataclass
class Mismatches:
    """What the join found: per column, how many joined examples differ (and one example of
    a differing pair, for unrestricted datasets)."""

    serving_rows: int = 0
    joined: int = 0
    differ: dict[str, int] = field(default_factory=dict)
    example: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)  # key, train, serve


def _plain(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _key_of(table: pa.Table | pa.RecordBatch, key: list[str]) -> pa.Array:
    """One array of keys: the column itself, or several columns joined as text."""
    arrays = [_plain(pa.concat_arrays(c.chunks) if isinstance(c, pa.ChunkedArray) else c)
              for c in (table.column(k) for k in key)]
    if len(arrays) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*[pc.cast(a, pa.string()) for a in arrays], "\x1f")


def _equal(train: pa.Array, serve: pa.Array, dtype: str) -> np.ndarray:
    """Per pair: the same value (both null counts as the same)."""
    train, serve = _plain(train), _plain(serve)
    if train.type != serve.type:
        serve = serve.cast(train.type)
    both_null = np.asarray(pc.and_(train.is_null(), serve.is_null()))
    if dtype in ("float32", "float64"):
        a = train.to_numpy(zero_copy_only=False).astype(np.float64)
        b = serve.to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            same = np.isclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True)
        valid = np.asarray(pc.and_(train.is_valid(), serve.is_valid()))
        return (same & valid) | both_null
    same = np.asarray(pc.fill_null(pc.equal(train, serve), False))
    return same | both_null


def count_mismatches(train_batches: Any, serving: pa.Table, key: list[str],
                     columns: dict[str, Column], keep_examples: bool) -> Mismatches:
    """Join `serving` (key + columns) to the streamed training batches on `key`."""
    found = Mismatches(serving_rows=serving.num_rows,
                       differ={name: 0 for name in columns})
    serve_key = _key_of(serving, key)
    matched = np.zeros(serving.num_rows, dtype=bool)
    serve_cols = {name: _plain(pa.concat_arrays(serving.column(name).chunks)
                               if serving.num_rows else pa.array([], serving.column(name).type))
                  for name in columns}
    for batch in train_batches:
        if not batch.num_rows:
            continue
        train_key = _key_of(batch, key)
        where = pc.index_in(serve_key, value_set=train_key, skip_nulls=True)
        hit = np.asarray(pc.is_valid(where)) & ~matched
        if not hit.any():
            continue
        rows = np.flatnonzero(hit)
        matched[rows] = True
        at = pa.array(np.asarray(pc.fill_null(where, 0))[rows])
        found.joined += len(rows)
        for name, col in columns.items():
            train_values = _plain(batch.column(batch.schema.get_field_index(name))).take(at)
            serve_values = serve_cols[name].take(pa.array(rows))
            same = _equal(train_values, serve_values, col.dtype)
            bad = int((~same).sum())
            found.differ[name] += bad
            if bad and keep_examples and name not in found.example:
                i = int(np.flatnonzero(~same)[0])
                found.example[name] = (serve_key[int(rows[i])].as_py(),
                                       train_values[i].as_py(), serve_values[i].as_py())
    return found
