"""Streaming statistics for `buildenv drift`: one pass per version, bounded memory.

Record batches are read with pyarrow (Parquet: string columns dictionary-encoded, buffered
reads; CSV: 8 MiB blocks) and reduced with pyarrow compute and numpy, so memory is bounded by
the batch size plus fixed-size sketches, never by the data:

- categorical columns (string, bool): exact value counts (a dictionary-encoded read makes this a
  `bincount` over indices); past `MAX_DISTINCT` distinct values the rarest are dropped and the
  largest count that could have been lost is kept as `max_count_error`;
- numeric columns (ints, floats; dates as days and timestamps as seconds since 1970-01-01):
  count, nulls (NaN counts as null), min, max, mean and variance (per batch, merged with Chan's
  formula), and a uniform sample of `SAMPLE_SIZE` values without replacement (bottom-k by a
  seeded random key per row, so the sample does not depend on the batch size). Quantiles come
  from the sample: exact when the column has no more values than the sample holds, otherwise
  with a rank error of about 1/sqrt(SAMPLE_SIZE) (0.3%).

Shared bins are the baseline sample's deciles with open ends, (-inf, q10), [q10, q20), ...,
[q90, +inf), deduplicated, so point masses get bins of their own. Bin counts are *exact*: a
second pass over the baseline's numeric columns (skipped when the sample already holds every
value) runs concurrently with the candidate's single pass. A bin count is a difference of
`count_nonzero(x < edge)` sums, several times faster than `searchsorted` for ten bins.

The baseline's summaries are cached under `.buildenv/cache/drift/`, keyed by its content digest
and the column declarations, so later comparisons against the same locked version read only the
candidate. Restricted datasets are never cached: their summaries hold raw value counts.

A partitioned dataset is summarised one task per file (`_profile_file`), run by an executor (in
this process or as Ray tasks), and the partial accumulators are merged in file order (`merge`:
Chan's formula for the moments, a union of the bottom-k samples, sums of counts); each file's
sampling keys come from a generator seeded by (SEED, file index), so the result does not depend
on where the tasks ran.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core import progress
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic
from buildenv.data.executor import LocalExecutor
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.partitioned_read import PartitionedRead
from buildenv.env.spec import Column

__all__ = ["BATCH_ROWS", "BINS", "SAMPLE_SIZE", "Source", "coarse", "jsd", "kind_of", "linf",
           "profile_pair", "psi"]

SUMMARY_VERSION = 1
BATCH_ROWS = 262_144
SAMPLE_SIZE = 100_000
BINS = 10
PSI_EPSILON = 1e-4
MAX_DISTINCT = 100_000
SEED = 20260630
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
RESTRICTED_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
EPOCH = dt.date(1970, 1, 1)
_TS_FACTOR = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


# --- metrics ---------------------------------------------------------------------------------

def _normalize(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def linf(p_counts: np.ndarray, q_counts: np.ndarray) -> tuple[float, int]:
    """L-infinity distance of two count vectors (each normalized) and the index attaining it."""
    diff = np.abs(_normalize(q_counts) - _normalize(p_counts))
    i = int(np.argmax(diff)) if len(diff) else 0
    return (float(diff[i]) if len(diff) else 0.0), i


def jsd(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Jensen-Shannon divergence, log base 2 (0 = identical, 1 = disjoint)."""
    p, q = _normalize(p_counts), _normalize(q_counts)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return min(max((kl(p) + kl(q)) / 2, 0.0), 1.0)


def psi(p_counts: np.ndarray, q_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index: sum((q - p) * ln(q / p)), empty bins floored at epsilon."""
    p = np.maximum(_normalize(p_counts), epsilon)
    q = np.maximum(_normalize(q_counts), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


# --- streaming accumulators ------------------------------------------------------------------

def _as_float(arr: pa.Array, dtype: str) -> np.ndarray:
    """Values as float64 (NaN for null): dates in days, timestamps in seconds since the epoch."""
    if dtype == "date":
        arr = pc.cast(arr, pa.int32())
    elif dtype == "timestamp":
        unit = arr.type.unit if pa.types.is_timestamp(arr.type) else "us"
        return _as_float(pc.cast(arr, pa.int64()), "int64") / _TS_FACTOR[unit]
    if arr.type != pa.float64():
        arr = pc.cast(arr, pa.float64(), safe=False)
    if arr.null_count:
        arr = pc.fill_null(arr, math.nan)
    return arr.to_numpy(zero_copy_only=True)


class _Scratch:
    """Reused buffers: large temporaries would otherwise be fresh pages every batch."""

    def __init__(self) -> None:
        self.floats, self.flags = np.empty(0), np.empty(0, bool)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.floats) < n:
            self.floats, self.flags = np.empty(n), np.empty(n, bool)
        return self.floats[:n], self.flags[:n]


class _Numeric:
    """Count, nulls, min/max, mean/M2 (Chan's merge), a bottom-k sample, bin counts."""

    def __init__(self, dtype: str, edges: np.ndarray | None, sample_size: int, sample: bool,
                 domain: list | None, tau: float = math.inf):
        self.dtype = dtype
        self.rows = self.nulls = self.n = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf
        self.sample_size = sample_size if sample else 0
        self.keys = np.empty(0)
        self.values = np.empty(0)
        self.tau = tau  # keys at or above it cannot be in the sample
        self.edges = edges
        self.below = np.zeros(len(edges), np.int64) if edges is not None else None
        self.domain = pa.array(domain) if domain is not None else None
        self.out_of_domain: dict[Any, int] = {}
        self.floating = dtype in ("float32", "float64")
        self.scratch = _Scratch()  # _scan shares one between the columns it reads
        self._sorted: np.ndarray | None = None

    def update(self, arr: pa.Array, keys: np.ndarray | None) -> None:
        rows = len(arr)
        self.rows += rows
        if self.domain is not None:
            _out_of_domain(arr, self.domain, self.out_of_domain)
        x = _as_float(arr, self.dtype)
        floats, flags = self.scratch.get(rows)
        valid = None
        if arr.null_count or self.floating:
            missing = np.isnan(x, out=flags)
            if missing.any():
                valid = ~missing
        xv = x if valid is None else x[valid]
        n = len(xv)
        self.nulls += rows - n
        if n == 0:
            return
        mean = float(xv.sum()) / n
        centred = np.subtract(xv, mean, out=floats[:n])
        m2 = float(np.multiply(centred, centred, out=centred).sum())  # no BLAS: no thread spin
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total
        self.min = min(self.min, float(xv.min()))
        self.max = max(self.max, float(xv.max()))
        if self.below is not None:
            below = flags[:n]
            for j, edge in enumerate(self.edges):  # type: ignore[arg-type]
                self.below[j] += np.count_nonzero(np.less(xv, edge, out=below))
        if self.sample_size and keys is not None:
            chosen = np.less(keys, self.tau, out=flags)
            if valid is not None:
                chosen &= valid
            picked = np.flatnonzero(chosen)
            if len(picked):
                k_all = np.concatenate([self.keys, keys[picked]])
                v_all = np.concatenate([self.values, x[picked]])
                if len(k_all) > self.sample_size:
                    keep = np.argpartition(k_all, self.sample_size - 1)[: self.sample_size]
                    k_all, v_all = k_all[keep], v_all[keep]
                    self.tau = float(k_all.max())
                self.keys, self.values = k_all, v_all

    def merge(self, other: _Numeric) -> None:
        """Fold in the accumulator of the next file (same columns, edges and sample size)."""
        self.rows += other.rows
        self.nulls += other.nulls
        for value, n in other.out_of_domain.items():
            self.out_of_domain[value] = self.out_of_domain.get(value, 0) + n
        if self.below is not None and other.below is not None:
            self.below = self.below + other.below  # a Ray result is a read-only view
        if other.n:
            total = self.n + other.n
            delta = other.mean - self.mean
            self.mean += delta * other.n / total
            self.m2 += other.m2 + delta * delta * self.n * other.n / total
            self.n = total
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        if self.sample_size and len(other.keys):
            keys = np.concatenate([self.keys, other.keys])
            values = np.concatenate([self.values, other.values])
            if len(keys) > self.sample_size:
                keep = np.argpartition(keys, self.sample_size - 1)[: self.sample_size]
                keys, values = keys[keep], values[keep]
                self.tau = float(keys.max())
            self.keys, self.values = keys, values
            self._sorted = None

    def sorted_values(self) -> np.ndarray:
        if self._sorted is None or len(self._sorted) != len(self.values):
            self._sorted = np.sort(self.values)
        return self._sorted

    @property
    def complete_sample(self) -> bool:
        return self.sample_size > 0 and len(self.values) == self.n

    def bin_counts(self) -> np.ndarray | None:
        if self.below is None:
            return None
        return np.diff(np.concatenate([[0], self.below, [self.n]])).astype(np.int64)


class _Categorical:
    """Exact value counts (bounded: past MAX_DISTINCT values the rarest are dropped)."""

    def __init__(self, dtype: str):
        self.is_bool = dtype == "bool"
        self.rows = self.nulls = 0
        self.counts: dict[Any, int] = {}
        self.max_count_error = 0

    def update(self, arr: pa.Array, keys: np.ndarray | None = None) -> None:
        self.rows += len(arr)
        self.nulls += arr.null_count
        counts = self.counts
        if self.is_bool:
            valid = len(arr) - arr.null_count
            true = int(pc.sum(arr).as_py() or 0)
            for key, n in ((True, true), (False, valid - true)):
                if n:
                    counts[key] = counts.get(key, 0) + n
            return
        if pa.types.is_dictionary(arr.type):
            indices = arr.indices
            if arr.null_count:
                indices = pc.drop_null(indices)
            bins = np.bincount(indices.to_numpy(zero_copy_only=False),
                               minlength=len(arr.dictionary))
            present = np.flatnonzero(bins)
            values = arr.dictionary.take(pa.array(present)).to_pylist()
            numbers = bins[present].tolist()
        else:
            vc = pc.value_counts(arr)
            values = vc.field(0).to_pylist()
            numbers = vc.field(1).to_pylist()
        for value, n in zip(values, numbers):
            if value is None:
                continue
            counts[value] = counts.get(value, 0) + n
        self._bound()

    def _bound(self) -> None:
        if len(self.counts) > 2 * MAX_DISTINCT:
            ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])
            self.max_count_error = max(self.max_count_error, ranked[MAX_DISTINCT][1])
            self.counts = dict(ranked[:MAX_DISTINCT])

    def merge(self, other: _Categorical) -> None:
        """Fold in the accumulator of the next file."""
        self.rows += other.rows
        self.nulls += other.nulls
        self.max_count_error = max(self.max_count_error, other.max_count_error)
        for value, n in other.counts.items():
            self.counts[value] = self.counts.get(value, 0) + n
        self._bound()


def _out_of_domain(arr: pa.Array, domain: pa.Array, into: dict) -> None:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    try:
        inside = pc.is_in(arr, value_set=domain.cast(arr.type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return
    bad = pc.and_kleene(pc.invert(inside), pc.is_valid(arr))
    if not pc.any(bad).as_py():
        return
    vc = pc.value_counts(pc.filter(arr, bad))
    for value, n in zip(vc.field(0).to_pylist(), vc.field(1).to_pylist()):
        into[value] = into.get(value, 0) + n


# --- reading ---------------------------------------------------------------------------------

@dataclass
class Source:
    """One version of the dataset: where it is, what identifies it, and its open gate read."""

    uri: str
    format: str
    digest: str | None  # the lock's pin; for unpinned data, what the read found
    rows: int | None
    origin: str  # how it was chosen, for people: "locked in environments/x.lock.json"
    read: Any = field(repr=False, default=None)  # buildenv.data.gate.dataset_read.DatasetRead

    def describe(self) -> dict:
        if self.read is not None and self.read.digest is not None:
            self.digest = self.read.digest
            self.rows = self.rows if self.rows is not None else self.read.rows_read
        return {"uri": self.uri, "format": self.format, "digest": self.digest,
                "rows": self.rows, "origin": self.origin}


def kind_of(col: Column) -> str:
    return "categorical" if col.dtype in ("string", "bool") else "numeric"


def _scan(source: Source, columns: dict[str, Column], edges: dict[str, np.ndarray] | None,
          sample_size: int, batch_rows: int, numeric_only: bool = False,
          executor: Any = None) -> dict[str, Any]:
    """One streaming pass: an accumulator per column (a partitioned dataset: one task per
    file, merged in file order)."""
    if numeric_only:
        columns = {n: c for n, c in columns.items() if kind_of(c) == "numeric"}

    if isinstance(source.read, PartitionedRead):
        return _scan_partitioned(source.read, columns, edges, sample_size, batch_rows,
                                 numeric_only, executor)
    return _scan_read(source.read, columns, edges, sample_size, batch_rows, numeric_only,
                      np.random.default_rng(SEED), source.uri, source.rows)


def _scan_read(read: Any, columns: dict[str, Column], edges: dict[str, np.ndarray] | None,
               sample_size: int, batch_rows: int, numeric_only: bool, rng: Any,
               uri: str = "", rows: int | None = None, tau: float = math.inf
               ) -> dict[str, Any]:
    strings = [c for c, col in columns.items() if col.dtype == "string"]
    batches = read.batches(list(columns), batch_rows=batch_rows, dictionary=strings)
    accs: dict[str, Any] = {}
    for name, col in columns.items():
        if kind_of(col) == "categorical":
            accs[name] = _Categorical(col.dtype)
        else:
            accs[name] = _Numeric(col.dtype, None if edges is None else edges.get(name),
                                  sample_size, not numeric_only,
                                  col.domain if col.domain is not None and not numeric_only
                                  else None, tau)
    scratch = _Scratch()
    for acc in accs.values():
        if isinstance(acc, _Numeric):
            acc.scratch = scratch
    wants_keys = not numeric_only and any(isinstance(a, _Numeric) for a in accs.values())
    what = "bins of" if numeric_only else "profile"
    for batch in progress.batches(batches, f"{what} {uri}", rows or None):
        keys = rng.random(batch.num_rows) if wants_keys else None
        for name, acc in accs.items():
            acc.update(batch.column(batch.schema.get_field_index(name)), keys)
    return accs


def _profile_file(job: tuple) -> tuple[dict[str, Any] | None, tuple | None, dict | None]:
    """The task: one file's accumulators, and (size, digest, rows) of what it read, or the
    error (Diagnostic.to_json()) that stopped it. Runs wherever the executor puts it."""
    task, path, columns, edges, sample_size, batch_rows, numeric_only, tau = job
    try:
        with task.open() as read:
            accs = _scan_read(read, columns, edges, sample_size, batch_rows, numeric_only,
                              np.random.default_rng([SEED, task.index]), task.uri, tau=tau)
            digest = read.verify()
            found = (path, read.size, digest, read.rows_read)
    except GateError as exc:
        return None, None, exc.diagnostic.to_json()
    except ValueError as exc:  # a partition value that does not convert

        return None, None, Diagnostic("BE063", f"dataset '{task.dataset}': partition value "
                                      f"in '{task.uri}': {exc}").to_json()
    for acc in accs.values():
        if isinstance(acc, _Numeric):
            acc.scratch = _Scratch()  # its buffers stay here, not in the result
    return accs, found, None


def _scan_partitioned(read: Any, columns: dict[str, Column],
                      edges: dict[str, np.ndarray] | None, sample_size: int, batch_rows: int,
                      numeric_only: bool, executor: Any) -> dict[str, Any]:
    # A file's sample needs only keys below what the whole dataset's k-th smallest key will
    # be, about k / rows (keys are uniform): a threshold of twice that spares every file most
    # of the bottom-k work. If it turns out too low (fewer keys below it than the sample
    # holds), the pass is run again without one, so the sample is exact either way.
    total = read.total_rows() if sample_size and not numeric_only else None
    tau = min(1.0, 2.0 * sample_size / total + 1e-4) if total else math.inf
    merged = _merge_files(read, columns, edges, sample_size, batch_rows, numeric_only, tau,
                          executor)
    if tau < 1.0 and any(isinstance(a, _Numeric) and a.sample_size
                         and len(a.values) < min(a.sample_size, a.n) for a in merged.values()):
        merged = _merge_files(read, columns, edges, sample_size, batch_rows, numeric_only,
                              math.inf, executor)
    return merged


def _merge_files(read: Any, columns: dict[str, Column], edges: dict[str, np.ndarray] | None,
                 sample_size: int, batch_rows: int, numeric_only: bool, tau: float,
                 executor: Any) -> dict[str, Any]:
    jobs = [(task, path, columns, edges, sample_size, batch_rows, numeric_only, tau)
            for task, (path, _, _) in zip(read.tasks(), read.files)]
    results = (executor or LocalExecutor()).map(_profile_file, jobs)
    merged: dict[str, Any] | None = None
    found = []
    for accs, seen, error in results:
        if error is not None:  # nothing decoded is used: the bytes are not trusted
            d = Diagnostic.from_json(error)
            raise read.error(d.code, d.message, hints=d.hints)
        found.append(seen)
        if merged is None:
            merged = accs
        else:
            for name, acc in merged.items():
                acc.merge(accs[name])
    if merged is None:  # no file passes: empty accumulators
        merged = _scan_read(_NoRows(), columns, edges, sample_size, batch_rows, numeric_only,
                            np.random.default_rng(SEED))
    read.complete(found, sum(f[3] for f in found), list(columns))
    return merged


class _NoRows:
    def batches(self, *args: Any, **kwargs: Any):
        return iter(())


# --- summaries (serializable; what comparisons, the cache and the report use) ----------------

def _quantile(sample: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Linear-interpolation quantiles of a *sorted* sample (numpy's default method)."""
    n = len(sample)
    if not n:
        return []
    pos = np.asarray(qs) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return [float(v) for v in sample[lo] + (sample[hi] - sample[lo]) * (pos - lo)]


def coarse(value: float, dtype: str) -> float:
    """Round for restricted datasets: 2 significant digits; dates to the month, times to a day."""
    if not math.isfinite(value):
        return value
    if dtype == "date":
        day = EPOCH + dt.timedelta(days=math.floor(value))
        return float((day.replace(day=1) - EPOCH).days)
    if dtype == "timestamp":
        return float(math.floor(value / 86400.0) * 86400.0)
    if value == 0:
        return 0.0
    digits = 1 - math.floor(math.log10(abs(value)))
    return float(round(value, digits))


def _edges(acc: _Numeric, restricted: bool, min_group: int) -> np.ndarray:
    """Interior bin edges: the baseline sample's deciles (actual values), deduplicated."""
    bins = BINS
    if restricted:
        bins = max(1, min(BINS, acc.n // max(min_group, 1)))
    if bins < 2 or not len(acc.values):
        return np.empty(0)
    values = acc.sorted_values()
    n = len(values)
    # inverted CDF: the smallest value with at least a fraction q of the sample at or below it
    at = np.ceil(np.arange(1, bins) / bins * n - 1e-9).astype(np.int64) - 1
    cuts = values[np.clip(at, 0, n - 1)]
    if restricted:
        cuts = np.array([coarse(float(c), acc.dtype) for c in cuts])
    return np.unique(cuts)


def _summary_numeric(acc: _Numeric, edges: np.ndarray, bins: np.ndarray | None) -> dict:
    if bins is None and acc.complete_sample:
        bins = np.diff(np.concatenate([[0], [np.count_nonzero(acc.values < e) for e in edges],
                                       [acc.n]])).astype(np.int64)
    std = math.sqrt(acc.m2 / acc.n) if acc.n else None
    return {
        "kind": "numeric", "rows": acc.rows, "nulls": acc.nulls, "count": acc.n,
        "mean": acc.mean if acc.n else None, "std": std,
        "min": acc.min if acc.n else None, "max": acc.max if acc.n else None,
        "quantiles": dict(zip(QUANTILES, _quantile(acc.sorted_values(), QUANTILES))),
        "restricted_quantiles": dict(zip(RESTRICTED_QUANTILES,
                                         _quantile(acc.sorted_values(), RESTRICTED_QUANTILES))),
        "edges": [float(e) for e in edges],
        "bins": [int(c) for c in bins] if bins is not None else None,
        "out_of_domain": {json.dumps(k): v for k, v in acc.out_of_domain.items()},
        "sample_exact": acc.complete_sample,
    }


def _summary_categorical(acc: _Categorical) -> dict:
    return {"kind": "categorical", "rows": acc.rows, "nulls": acc.nulls,
            "count": acc.rows - acc.nulls,
            "counts": {json.dumps(k): v for k, v in acc.counts.items()},
            "max_count_error": acc.max_count_error}


def profile_pair(baseline: Source, candidate: Source, columns: dict[str, Column],
                  restricted: bool, min_group: int, sample_size: int, batch_rows: int,
                  cache_dir: Path | None, executor: Any = None
                  ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Summaries of both versions: baseline pass 1, then (baseline bins ∥ candidate pass)."""
    key = None
    if cache_dir is not None and not restricted:
        key = digest_json({"v": SUMMARY_VERSION, "data": baseline.digest, "bins": BINS,
                           "sample": sample_size, "seed": SEED, "columns": {
                               n: c.model_dump(mode="json", include={"dtype", "domain"})
                               for n, c in sorted(columns.items())}}).split(":", 1)[1]
        cached = _cache_get(cache_dir, key)
        if cached is not None and set(cached) == set(columns):
            edges = {n: np.array(s["edges"]) for n, s in cached.items() if s["kind"] == "numeric"}
            cand = _scan(candidate, columns, edges, sample_size, batch_rows,
                         executor=executor)
            return cached, _summaries(cand, edges, {})
    first = _scan(baseline, columns, None, sample_size, batch_rows, executor=executor)
    edges = {n: _edges(a, restricted, min_group) for n, a in first.items()
             if isinstance(a, _Numeric)}
    need_second = {n for n, a in first.items() if isinstance(a, _Numeric)
                   and not a.complete_sample}
    with ThreadPoolExecutor(2) as pool:
        cand_future = pool.submit(_scan, candidate, columns, edges, sample_size, batch_rows,
                                  executor=executor)
        second = (_scan(baseline, {n: columns[n] for n in need_second}, edges, sample_size,
                        batch_rows, numeric_only=True, executor=executor)
                  if need_second else {})
        cand = cand_future.result()
    base_bins = {n: a.bin_counts() for n, a in second.items()}
    base = _summaries(first, edges, base_bins)
    if key is not None:
        _cache_put(cache_dir, key, base)  # type: ignore[arg-type]
    return base, _summaries(cand, edges, {})


def _summaries(accs: dict[str, Any], edges: dict[str, np.ndarray],
               bins: dict[str, np.ndarray | None]) -> dict[str, dict]:
    out = {}
    for name, acc in accs.items():
        if isinstance(acc, _Numeric):
            out[name] = _summary_numeric(acc, edges[name],
                                         bins.get(name) if name in bins else acc.bin_counts())
        else:
            out[name] = _summary_categorical(acc)
    return out


def _cache_get(folder: Path, key: str) -> dict | None:
    path = folder / key[:2] / f"{key}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["columns"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_put(folder: Path, key: str, summaries: dict) -> None:
    try:
        atomic_write_text(folder / key[:2] / f"{key}.json",
                          json.dumps({"columns": summaries}, sort_keys=True))
    except OSError:
        pass  # a cache that cannot be written is only slower
