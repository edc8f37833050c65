"""Metrics per slice with bootstrap resamples, every slice and every model at once.

The bootstrap resamples the evaluation rows: in resample b row i counts `W[b, i]` times, with
`W[b, i]` drawn from Poisson(1) (the Poisson bootstrap: each row's multiplicity is what it
would be in a resample of n rows drawn with replacement, approximately and independently of
the other rows, so one weight matrix serves every slice, however slices overlap). One matrix
per seed, generated in chunks of resamples (bounded memory; each chunk from its own stream of
the seed, so chunks run in parallel threads with the same result), is shared by every slice
family and every model scored on the same rows: comparisons are paired.

Every metric but ROC AUC is a function of sums over a slice's rows (`outputs.RowStats`):
accuracy of `correct`, log loss of `loss`, rmse/mae/r2 of `se`, `ae`, `y`, `yy`. All of them,
for every slice of every family, are one matrix product: the weights (resamples x rows) times
a matrix with a column per (slice, figure) holding the figure on the slice's rows. ROC AUC is
the Mann-Whitney statistic: within a slice, rows sorted by score, the weight of negatives below
each positive (ties count half) is read off one cumulative sum per family. With every weight 1
the same code gives the point estimates, equal to scikit-learn's metrics.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from buildenv.training.outputs import RowStats
from buildenv.training.slicing import Family

__all__ = ["METRICS", "Resampled", "chunks", "intervals", "poisson_weights", "resample"]

#: Metrics of each kind of model, in report order.
METRICS = {"classification": ("accuracy", "logloss", "roc_auc"),
           "regression": ("rmse", "mae", "r2")}
_CELLS = 1 << 22  # weights per chunk of resamples: bounds memory (32 MiB per float64 copy)


def _poisson_table() -> np.ndarray:
    """Poisson(1) by inversion of a 16-bit uniform: multiplicities 0..9 (P(>9) < 2e-7)."""
    cdf = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(12)])
    u = (np.arange(1 << 16) + 0.5) / (1 << 16)
    return np.searchsorted(cdf, u).astype(np.uint8)


_TABLE = _poisson_table()


def chunks(rows: int, resamples: int) -> list[tuple[int, int]]:
    """(index, size) of the chunks of resamples the weight matrix is made in."""
    chunk = max(1, min(resamples, _CELLS // max(rows, 1)))
    return [(k, min(chunk, resamples - start))
            for k, start in enumerate(range(0, resamples, chunk))]


def poisson_weights(rows: int, size: int, seed: int, index: int) -> np.ndarray:
    """Chunk `index` of the weight matrix: (size, rows) uint8. Each chunk has its own stream
    of the seed, so chunks can be made in any order (or at once) with the same result."""
    rng = np.random.default_rng([seed, 0x5B1CE, index])
    return _TABLE[rng.integers(0, 1 << 16, size=(size, rows), dtype=np.uint16)]


@dataclass
class Resampled:
    """Metrics of each model on each slice: the point estimate and one value per resample."""

    names: list[str]  # every slice, families concatenated
    rows: np.ndarray  # rows per slice (int64)
    point: list[dict[str, np.ndarray]]  # per model: metric -> (slices,)
    draws: list[dict[str, np.ndarray]]  # per model: metric -> (resamples, slices)


def resample(families: list[Family], models: list[RowStats], resamples: int,
             seed: int) -> Resampled:
    """Point estimates and `resamples` bootstrap values of every metric, for every model on
    every slice of `families` (the same weights for all: paired)."""
    rows = models[0].rows
    plans = [_Plan.of(families, m) for m in models]
    ones = np.ones((1, rows), np.uint8)
    point = [plan.metrics(ones) for plan in plans]

    def work(chunk: tuple[int, int]) -> list[dict[str, np.ndarray]]:
        weights = poisson_weights(rows, chunk[1], seed, chunk[0])
        dense = weights.astype(np.float64)
        return [plan.metrics(weights, dense) for plan in plans]

    # NumPy releases the GIL in gathers, sums and products: chunks run on every core this
    # process may use
    with ThreadPoolExecutor(_workers()) as pool:
        done = list(pool.map(work, chunks(rows, resamples)))
    parts = [[d[k] for d in done] for k in range(len(models))]
    draws = [{name: np.concatenate([p[name] for p in found]) for name in found[0]}
             if found else {} for found in parts]
    names = [n for f in families for n in f.names]
    counts = np.concatenate([f.rows() for f in families]) if families else np.zeros(0, np.int64)
    return Resampled(names, counts, [{k: v[0] for k, v in p.items()} for p in point], draws)


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def intervals(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per slice (columns of `draws`); NaN where the metric is undefined
    in too many resamples to say."""
    alpha = 1.0 - confidence
    finite = np.isfinite(draws)
    low = np.full(draws.shape[1], np.nan)
    high = np.full(draws.shape[1], np.nan)
    ok = finite.mean(axis=0) >= 1 - alpha / 2 if len(draws) else np.zeros(draws.shape[1], bool)
    if ok.any():
        sub = np.where(finite[:, ok], draws[:, ok], np.nan)
        low[ok] = np.nanquantile(sub, alpha / 2, axis=0)
        high[ok] = np.nanquantile(sub, 1 - alpha / 2, axis=0)
    return low, high


@dataclass
class _Plan:
    """One model's figures on every slice, laid out for the weights."""

    stats: RowStats
    figures: list[str]  # "n" and the names of `stats.sums`
    matrix: np.ndarray  # (rows, slices x figures): figure values on each slice's rows
    slices: int
    aucs: list[_Auc]

    @classmethod
    def of(cls, families: list[Family], stats: RowStats) -> _Plan:
        figures = ["n", *stats.sums]
        values = [None, *stats.sums.values()]
        slices = sum(f.size for f in families)
        matrix = np.zeros((stats.rows, slices * len(figures)))
        first = 0
        for family in families:
            rows = np.flatnonzero(family.codes >= 0)
            column = (first + family.codes[rows]) * len(figures)
            for k, v in enumerate(values):
                matrix[rows, column + k] = 1.0 if v is None else v[rows]
            first += family.size
        aucs = [_Auc.of(f, stats) for f in families] \
            if stats.score is not None and stats.positive is not None else []
        return cls(stats, figures, matrix, slices, aucs)

    def metrics(self, weights: np.ndarray, dense: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """Metrics per (resample, slice) for these weights."""
        dense = weights.astype(np.float64) if dense is None else dense
        sums = (dense @ self.matrix).reshape(len(weights), self.slices, len(self.figures))
        got = {name: sums[:, :, k] for k, name in enumerate(self.figures)}
        if self.aucs:
            got["auc"] = np.concatenate([a.value(weights) for a in self.aucs], axis=1)
        return _metrics(self.stats.kind, got)


@dataclass
class _Auc:
    """One family's rows sorted by (slice, score), and where each positive's tie block begins
    and ends in that order."""

    size: int
    order: np.ndarray  # evaluation rows of the family, sorted
    negative: np.ndarray  # uint8 per sorted position
    positives: np.ndarray  # sorted positions of positive rows
    tie_start: np.ndarray  # per positive: first position of its tie block
    tie_end: np.ndarray  # per positive: one past its tie block's last position
    membership: np.ndarray  # (positives, slices): 1 where the positive is in the slice
    bounds: tuple[np.ndarray, np.ndarray, np.ndarray]  # non-empty slices: code, start, end

    @classmethod
    def of(cls, family: Family, stats: RowStats) -> _Auc:
        assert stats.score is not None and stats.positive is not None
        codes = family.codes
        inside = np.flatnonzero(codes >= 0)
        order = inside[np.lexsort((stats.score[inside], codes[inside]))]
        code, score, positive = codes[order], stats.score[order], stats.positive[order]
        n = len(order)
        new_slice = np.r_[True, code[1:] != code[:-1]] if n else np.zeros(0, bool)
        new_block = new_slice | np.r_[True, score[1:] != score[:-1]] if n else new_slice
        position = np.arange(n)
        block_start = np.maximum.accumulate(np.where(new_block, position, 0)) if n else position
        block_end = np.r_[np.flatnonzero(new_block)[1:], n][np.cumsum(new_block) - 1] \
            if n else position
        starts = np.flatnonzero(new_slice)
        ends = np.r_[starts[1:], n] if n else starts
        pos = np.flatnonzero(positive)
        membership = np.zeros((len(pos), family.size))
        membership[np.arange(len(pos)), code[pos]] = 1.0
        return cls(family.size, order, (~positive).astype(np.uint8), pos, block_start[pos],
                   block_end[pos], membership,
                   (code[starts], starts, ends))

    def value(self, weights: np.ndarray) -> np.ndarray:
        """AUC per (resample, slice); NaN where a slice lacks positives or negatives."""
        chunk = len(weights)
        out = np.full((chunk, self.size), np.nan)
        if not len(self.positives):
            return out
        w = weights[:, self.order]
        kind = np.int32 if w.shape[1] * 200 < 2**31 else np.int64  # holds every product below
        cum = np.zeros((chunk, w.shape[1] + 1), kind)
        np.cumsum(w * self.negative, axis=1, dtype=kind, out=cum[:, 1:])  # negatives so far
        # twice the negatives' weight below a positive, ties counting half: the negatives
        # before its tie block plus those before its block's end, less twice those before
        # its slice (subtracted per slice below, once for the slice's positive weight)
        pos = w[:, self.positives]
        twice = pos * (cum[:, self.tie_start] + cum[:, self.tie_end])
        pos_weight = pos.astype(np.float64) @ self.membership
        codes, start, end = self.bounds
        before = np.zeros((chunk, self.size))
        before[:, codes] = cum[:, start]
        numerator = twice.astype(np.float64) @ self.membership - 2.0 * before * pos_weight
        neg_weight = np.zeros((chunk, self.size))
        neg_weight[:, codes] = cum[:, end] - cum[:, start]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = numerator / (2.0 * pos_weight * neg_weight)
        return np.where((pos_weight > 0) & (neg_weight > 0), value, np.nan)


def _metrics(kind: str, sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics from sums per (resample, slice)."""
    n = sums["n"]
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(n > 0, n, np.nan)
        if kind == "classification":
            out["accuracy"] = sums["correct"] / safe
            if "loss" in sums:
                out["logloss"] = sums["loss"] / safe
            if "auc" in sums:
                out["roc_auc"] = sums["auc"]
        else:
            out["rmse"] = np.sqrt(sums["se"] / safe)
            out["mae"] = sums["ae"] / safe
            total = sums["yy"] - sums["y"] ** 2 / safe
            r2 = 1.0 - sums["se"] / np.where(total > 0, total, np.nan)
            out["r2"] = np.where(n > 1, r2, np.nan)
    return out
