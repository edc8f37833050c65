"""Metrics per slice with bootstrap resamples, every slice and every model at once.

The bootstrap resamples the evaluation rows: in resample b row i counts `W[b, i]` times, with
`W[b, i]` drawn from Poisson(1) (the Poisson bootstrap: each row's multiplicity is what it
would be in a resample of n rows drawn with replacement, approximately and independently of
the other rows, so one weight matrix serves every slice, however slices overlap). One matrix
per seed, generated in chunks of resamples (bounded memory; each chunk from its own stream of
the seed, so chunks run in parallel threads with the same result), is shared by every slice
family and every model scored on the same rows: comparisons are paired.

Every metric but ROC AUC is a function of sums over a slice's rows (`outputs.RowStats`):
accuracy of `correct`, log loss of `loss`, rmse/mae/r2 of `se`, `ae`, `y`, `yy`. ROC AUC is the
Mann-Whitney statistic. `training.slice_sums` computes both for one family's slices, in blocks
of rows laid out once per model and family. With every weight 1 the same code gives the point
estimates, equal to scikit-learn's metrics.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from buildenv.training.outputs import RowStats
from buildenv.training.slice_sums import FamilySums
from buildenv.training.slicing import Family

__all__ = ["METRICS", "Resampled", "chunks", "intervals", "poisson_weights", "resample"]

#: Metrics of each kind of model, in report order.
METRICS = {"classification": ("accuracy", "logloss", "roc_auc"),
           "regression": ("rmse", "mae", "r2")}
_CELLS = 1 << 22  # weights per chunk of resamples (4 MiB of uint8); part of the draws: fixed


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
    of the seed, so chunks can be made in any order (or at once) with the same result.

    The 16-bit uniforms are the generator's 64-bit outputs cut in four, low bits first: the
    numbers `integers(0, 2**16, dtype=uint16)` gives, without its per-draw loop."""
    cells = size * rows
    raw = np.random.default_rng([seed, 0x5B1CE, index]).bit_generator.random_raw(-(-cells // 4))
    return _TABLE[raw.astype("<u8", copy=False).view("<u2")[:cells].reshape(size, rows)]


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
    plans = [[FamilySums.of(f, m) for f in families] for m in models]
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


def _sums(plan: list[FamilySums], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Sums per (resample, slice), families side by side, for weights (resamples, rows)."""
    found = [part.sums(weights) for part in plan]
    return {name: np.concatenate([f[name] for f in found], axis=1) for name in found[0]}


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
