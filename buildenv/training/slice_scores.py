"""Every model scored on every slice of the evaluation rows, with bootstrap intervals.

`score_slices` is what builds and promotion share: the environment's slice families over the
labelled evaluation rows (`training.slicing`), the overall figures as one more family, and the
paired bootstrap of every model's metrics on all of them (`training.bootstrap`). The result is
exact and stays in the process that computed it: `public` turns it into what may be shown
(`training.slice_view` applies the environment's privacy policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from buildenv.env.spec import Environment
from buildenv.training.bootstrap import Resampled, intervals, resample
from buildenv.training.outputs import Outputs
from buildenv.training.slicing import Family, families, overall

__all__ = ["SliceScores", "score_slices"]


@dataclass
class SliceScores:
    """Exact figures: point estimates, resamples and intervals of every model on every slice.
    Slice 0 is every row ("all"); then each family's slices in declaration order."""

    families: list[Family]
    resampled: Resampled
    confidence: float
    resamples: int
    seed: int
    kind: str

    @property
    def names(self) -> list[str]:
        return self.resampled.names

    @property
    def rows(self) -> np.ndarray:
        return self.resampled.rows

    def positions(self) -> list[tuple[Family, int, int]]:
        """(family, code within it, index among all slices) for every slice."""
        out, first = [], 0
        for family in self.families:
            out += [(family, code, first + code) for code in range(family.size)]
            first += family.size
        return out

    def value(self, model: int, metric: str, index: int) -> float | None:
        found = self.resampled.point[model].get(metric)
        return _finite(found[index]) if found is not None else None

    def interval(self, model: int, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        draws = self.resampled.draws[model].get(metric)
        return None if draws is None else intervals(draws, self.confidence)


def score_slices(env: Environment, attributes: pa.Table | None, models: list[Outputs],
                 keep: np.ndarray, public_keys: bool = False) -> SliceScores:
    """Score `models` (outputs on the labelled rows, `keep` of the evaluation rows) on every
    declared slice; `public_keys` takes a `by` slice's values from its declared domain (what a
    differentially private release needs) instead of from the data."""
    evaluation = env.evaluation
    rows = int(keep.sum())
    found = [overall(rows)]
    if evaluation.slices and attributes is not None:
        found += families(env, attributes.filter(pa.array(keep)), public_keys=public_keys)
    stats = [m.row_stats() for m in models]
    resampled = resample(found, stats, evaluation.resamples, evaluation.seed)
    return SliceScores(found, resampled, evaluation.confidence, evaluation.resamples,
                       evaluation.seed, models[0].kind)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
