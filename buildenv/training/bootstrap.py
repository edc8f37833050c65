"""Metrics per slice with bootstrap resamples, every slice and every model at once.

The bootstrap resamples the evaluation rows: in resample b row i counts `W[b, i]` times, with
`W[b, i]` drawn from Poisson(1) (the Poisson bootstrap: each row's multiplicity is what it
would be in a resample of n rows drawn with replacement, approximately and independently of
the other rows, so one weight matrix serves every slice, however slices overlap). One matrix
per seed, generated in chunks of resamples (bounded memory; each chunk from its own stream of
the seed, so chunks run in parallel threads with the same result), is shared by every slice
family and every model scored on the same rows: comparisons are paired.

Every metric but ROC AUC is a function of sums over a slice's rows (`outputs.RowStats`):
accuracy of `correct`, log loss of `loss`, rmse/mae/r2 of `se`, `ae`, `y`, `yy`. A family's
rows are gathered once in slice order, so each slice is a run of consecutive columns of the
weights and every sum is one `reduceat` (no product with a mostly-zero slice matrix: each row
is in one slice of a family). ROC AUC is the Mann-Whitney statistic: within a slice, rows
sorted by score, the weight of negatives below each positive (ties count half) is read off one
cumulative sum per family. With every weight 1 the same code gives the point estimates, equal
to scikit-learn's metrics.
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
    plans = [[_Part.of(f, m) for f in families] for m in models]
    ones = np.ones((1, rows), np.uint8)
    point = [_metrics(m.kind, _sums(plan, ones)) for m, plan in zip(models, plans, strict=True)]

    def work(chunk: tuple[int, int]) -> list[dict[str, np.ndarray]]:
        weights = poisson_weights(rows, chunk[1], seed, chunk[0])
        return [_metrics(m.kind, _sums(plan, weights))
                for m, plan in zip(models, plans, strict=True)]

    # NumPy releases the GIL in its gathers, products and sums (no BLAS here, so no thread
    # pools inside threads): chunks run on every core this process may use
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


def _sums(plan: list[_Part], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Sums per (resample, slice), families side by side, for weights (resamples, rows)."""
    found = [part.sums(weights) for part in plan]
    return {name: np.concatenate([f[name] for f in found], axis=1) for name in found[0]}


@dataclass
class _Part:
    """One model on one family's slices: the family's rows in slice order (by score within a
    slice when ROC AUC is scored), so every slice is a run of consecutive rows and a sum per
    slice is one `reduceat`."""

    size: int  # slices of the family
    order: np.ndarray | None  # evaluation rows of the family, in slice order; None: all, as is
    values: dict[str, np.ndarray]  # figure -> float64 per ordered row
    codes: np.ndarray  # non-empty slices
    starts: np.ndarray  # their first ordered row; `ends` one past their last
    ends: np.ndarray
    auc: _Auc | None

    @classmethod
    def of(cls, family: Family, stats: RowStats) -> _Part:
        codes = family.codes
        inside = np.flatnonzero(codes >= 0)
        binary = stats.score is not None and stats.positive is not None
        if binary:
            assert stats.score is not None
            order = inside[np.lexsort((stats.score[inside], codes[inside]))]
        else:
            order = inside[np.argsort(codes[inside], kind="stable")]
        code = codes[order]
        n = len(order)
        starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]]) if n else np.zeros(0, int)
        ends = np.r_[starts[1:], n].astype(int) if n else starts
        identity = n == len(codes) and bool(np.all(order == np.arange(n)))
        auc = _Auc.of(order, code, starts, family.size, stats) if binary else None
        return cls(family.size, None if identity else order,
                   {k: v[order] for k, v in stats.sums.items()}, code[starts], starts, ends, auc)

    def sums(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Sums per (resample, slice) of the count and of each figure; 0 for empty slices."""
        w = weights if self.order is None else np.take(weights, self.order, axis=1)
        chunk = len(weights)
        full = {k: np.zeros((chunk, self.size)) for k in ["n", *self.values]}
        if len(self.starts):
            dense = w.astype(np.float64)  # one cast: reductions of uint8 cast element-wise
            full["n"][:, self.codes] = np.add.reduceat(dense, self.starts, axis=1)
            for name, value in self.values.items():
                full[name][:, self.codes] = np.add.reduceat(dense * value, self.starts, axis=1)
        if self.auc is not None:
            full["auc"] = self.auc.value(w)
        return full


@dataclass
class _Auc:
    """ROC AUC per slice as the Mann-Whitney statistic: within a slice, rows sorted by score,
    the weight of negatives below each positive (ties count half) is read off one running sum
    of negative weights down the family's ordered rows."""

    size: int
    negative: np.ndarray  # uint8 per ordered row: 1 for a negative row
    positives: np.ndarray  # ordered positions of positive rows (in slice order)
    tie_start: np.ndarray | None  # per positive: first position of its tie block; None: no ties
    tie_end: np.ndarray | None  # per positive: one past its tie block's last position
    codes: np.ndarray  # slices with a positive
    first: np.ndarray  # their first entry in `positives`
    starts: np.ndarray  # their first and one past their last ordered row
    ends: np.ndarray

    @classmethod
    def of(cls, order: np.ndarray, code: np.ndarray, starts: np.ndarray, size: int,
           stats: RowStats) -> _Auc:
        assert stats.score is not None and stats.positive is not None
        score, positive = stats.score[order], stats.positive[order]
        n = len(order)
        new_slice = np.zeros(n, bool)
        new_slice[starts] = True
        new_block = new_slice | np.r_[True, score[1:] != score[:-1]][:n]
        position = np.arange(n)
        pos = np.flatnonzero(positive)
        tie_start = tie_end = None
        if not new_block[1:].all() or n < 2:  # some scores tie within a slice
            block_start = np.maximum.accumulate(np.where(new_block, position, 0))
            block_end = np.r_[np.flatnonzero(new_block)[1:], n][np.cumsum(new_block) - 1]
            tie_start, tie_end = block_start[pos], block_end[pos]
        slice_of = np.searchsorted(starts, pos, side="right") - 1  # index into starts
        first = np.flatnonzero(np.r_[True, slice_of[1:] != slice_of[:-1]]) if len(pos) \
            else np.zeros(0, int)
        which = slice_of[first]
        ends = np.r_[starts[1:], n]
        return cls(size, (~positive).astype(np.uint8), pos, tie_start, tie_end,
                   code[starts][which], first, starts[which], ends[which])

    def value(self, w: np.ndarray) -> np.ndarray:
        """AUC per (resample, slice) for weights `w` (resamples, ordered rows); NaN where a
        slice lacks positives or negatives."""
        chunk = len(w)
        out = np.full((chunk, self.size), np.nan)
        if not len(self.positives):
            return out
        kind = np.int32 if w.shape[1] * 10 < 2**31 else np.int64  # weights are at most 9
        cum = np.zeros((chunk, w.shape[1] + 1), kind)
        np.cumsum(w * self.negative, axis=1, dtype=kind, out=cum[:, 1:])  # negatives before
        pos = np.take(w, self.positives, axis=1).astype(np.int64)
        # twice the negatives' weight below a positive, ties counting half: the negatives
        # before its tie block plus those before its block's end, less twice those before
        # its slice (subtracted per slice below, once for the slice's positive weight)
        if self.tie_start is None:
            twice = 2 * pos * np.take(cum, self.positives, axis=1)
        else:
            assert self.tie_end is not None
            twice = pos * (np.take(cum, self.tie_start, axis=1)
                           + np.take(cum, self.tie_end, axis=1))
        pos_weight = np.add.reduceat(pos, self.first, axis=1).astype(np.float64)
        before = cum[:, self.starts].astype(np.float64)
        numerator = np.add.reduceat(twice, self.first, axis=1) - 2.0 * before * pos_weight
        neg_weight = (cum[:, self.ends] - cum[:, self.starts]).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = numerator / (2.0 * pos_weight * neg_weight)
        out[:, self.codes] = np.where((pos_weight > 0) & (neg_weight > 0), value, np.nan)
        return out


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
