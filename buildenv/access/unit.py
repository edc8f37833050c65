"""The privacy unit: who one differential-privacy guarantee protects.

By default a row is a person (one user per row of `users`). Where a person holds several rows
(`ratings`), the environment names the column identifying them and a bound,
`privacy.units: {ratings: {key: user_id, max_rows: 20}}`: every private release then uses at
most `max_rows` rows of each person (the first ones read; later rows of that person are left
out), so adding or removing one person changes the data by at most `max_rows` rows whatever the
data holds, and OpenDP calibrates the noise to that distance (`d_in`). A null key is one person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from buildenv.env.spec import Environment

__all__ = ["Truncation", "contributions", "truncation_for"]

_NULL_KEY = ("buildenv", "null key")


def contributions(env: Environment, dataset: str) -> int:
    """How many rows one person may add or remove: the `d_in` of every release."""
    unit = env.privacy.units.get(dataset)
    return unit.max_rows if unit is not None else 1


def truncation_for(env: Environment, dataset: str) -> Truncation | None:
    unit = env.privacy.units.get(dataset)
    return Truncation(unit.key, unit.max_rows) if unit is not None else None


@dataclass
class Truncation:
    """Keeps at most `max_rows` rows per value of `key`, across a stream of batches."""

    key: str
    max_rows: int
    seen: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0

    def keep(self, batch: pa.RecordBatch) -> np.ndarray:
        """Mask of the rows of `batch` that are within their person's bound."""
        import pandas as pd  # deferred: only releases with a person unit pay its import

        column = batch.column(batch.schema.get_field_index(self.key))
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        keys = column.to_pandas()
        if keys.isna().any():  # every null key is the same person
            keys = keys.astype(object).where(keys.notna(), _NULL_KEY)
        codes, uniques = pd.factorize(keys, use_na_sentinel=False)
        before = np.fromiter((self.seen.get(u, 0) for u in uniques), dtype=np.int64,
                             count=len(uniques))
        order = pd.Series(codes).groupby(codes).cumcount().to_numpy()
        mask = (before[codes] + order) < self.max_rows
        counts = np.bincount(codes, minlength=len(uniques))
        for value, had, added in zip(uniques, before.tolist(), counts.tolist()):
            self.seen[value] = had + added
        self.dropped += int(len(mask) - mask.sum())
        return np.asarray(mask)
