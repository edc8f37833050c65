"""Drift (SPEC §6, `buildenv drift`): the locked version of a dataset against a candidate.

Statistics are computed in a streaming way, one record batch at a time, with pyarrow compute
and numpy; memory is bounded by the batch size plus fixed-size sketches, never by the data:

- categorical columns (string, bool): exact value counts (a dictionary-encoded read makes this a
  `bincount` over indices); past `MAX_DISTINCT` distinct values the rarest are dropped and the
  largest count that could have been lost is recorded as `max_count_error`;
- numeric columns (ints, floats; dates as days and timestamps as seconds since 1970-01-01):
  count, nulls (NaN counts as null), min, max, mean and variance (merged per batch with Chan's
  formula), and a uniform sample of `SAMPLE_SIZE` values without replacement (bottom-k by a
  seeded random key, so the sample does not depend on the batch size). The quantiles reported
  come from the sample (exact when the column has no more values than the sample holds; rank
  error about 1/sqrt(SAMPLE_SIZE) otherwise). The shared bins are the baseline sample's deciles
  with open ends, (-inf, q10), [q10, q20), ..., [q90, +inf); counts in those bins are *exact*:
  a second pass over the baseline's numeric columns (skipped when the sample already holds every
  value) runs concurrently with the candidate's single pass. A bin count is a sum of
  `count_nonzero(x < edge)` differences, which is several times faster than searchsorted.

Metrics, over the shared bins (numeric) or over the values (categorical), non-null values only
(missing values are judged by `null_fraction`):
- `linf`: L-infinity distance, the largest absolute change of one value's (bin's) frequency, each
  distribution normalized by its own total: TFDV's `infinity_norm`.
- `jsd`: Jensen-Shannon divergence with log base 2, in [0, 1]: TFDV's `jensen_shannon_divergence`
  (TFDV bins numeric features into its own histograms and adds NaN as a bucket; here the bins are
  the baseline deciles and NaN is missing).
- `psi`: population stability index, natural log, empty bins floored at `PSI_EPSILON`.
- `null_fraction`: absolute change of the fraction of null rows.

Privacy (restricted datasets): everything that leaves this module -- alert messages, the
statistics file, text, JSON, SARIF and HTML -- is built from a *public view*: categorical values
seen fewer than `privacy.min_group_size` times in a version are merged into "(other)"; numeric
columns have no min/max, their quantiles (only p10..p90, and only those with at least
min_group_size rows beyond them) and bin edges are rounded to 2 significant digits (dates to the
month, timestamps to the day), there are at most count/min_group_size bins, and mean/std are
omitted below min_group_size values. Baseline statistics of restricted datasets are never cached.

Rendering (text, JSON, SARIF, HTML) lives in `drift_report`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .diagnostics import Diagnostic, DiagnosticError, Severity, did_you_mean
from .digest import digest_json
from .fsutil import atomic_write_text
from .project import Project
from .resolve import Multiverse, Resolved
from .spec import Column, TEMPORAL_DTYPES
from .storage import Location, locate

__all__ = ["BATCH_ROWS", "BINS", "SAMPLE_SIZE", "Alert", "DriftResult", "Usage", "jsd", "linf",
           "psi", "run_drift", "write_outputs"]

STATS_VERSION = 1
BATCH_ROWS = 262_144
SAMPLE_SIZE = 100_000
BINS = 10
PSI_EPSILON = 1e-4
MAX_DISTINCT = 100_000
SEED = 20260630
OTHER = "(other)"
_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_RESTRICTED_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_STATS = ("linf", "jsd", "psi", "null_fraction")
STAT_NAMES = {"linf": "L∞", "jsd": "JSD", "psi": "PSI", "null_fraction": "null-fraction change",
              "domain": "values outside the domain"}
_TS_FACTOR = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


# --- metrics -------------------------------------------------------------------------------

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
        values = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return values / _TS_FACTOR[unit]
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


class _Numeric:
    """Count, nulls, min/max, mean/M2 (Chan's merge), a bottom-k sample, bin counts."""

    def __init__(self, dtype: str, edges: np.ndarray | None, sample_size: int, sample: bool,
                 domain: list | None):
        self.dtype = dtype
        self.rows = self.nulls = self.n = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf
        self.sample_size = sample_size if sample else 0
        self.keys = np.empty(0)
        self.values = np.empty(0)
        self.tau = math.inf
        self.edges = edges
        self.below = np.zeros(len(edges), np.int64) if edges is not None else None
        self.domain = pa.array(domain) if domain is not None else None
        self.out_of_domain: dict[Any, int] = {}

    def update(self, arr: pa.Array, keys: np.ndarray | None) -> None:
        self.rows += len(arr)
        if self.domain is not None:
            _out_of_domain(arr, self.domain, self.out_of_domain)
        x = _as_float(arr, self.dtype)
        missing = np.isnan(x) if (arr.null_count or self.dtype in ("float32", "float64")) \
            else None
        if missing is not None and missing.any():
            valid = ~missing
            xv = x[valid]
        else:
            valid = None
            xv = x
        n = len(xv)
        self.nulls += len(x) - n
        if n == 0:
            return
        mean = float(xv.mean())
        centred = xv - mean
        m2 = float(np.dot(centred, centred))
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total
        self.min = min(self.min, float(xv.min()))
        self.max = max(self.max, float(xv.max()))
        if self.below is not None:
            for j, edge in enumerate(self.edges):  # type: ignore[arg-type]
                self.below[j] += np.count_nonzero(xv < edge)
        if self.sample_size and keys is not None:
            chosen = keys < self.tau
            if valid is not None:
                chosen &= valid
            new_keys, new_values = keys[chosen], x[chosen]
            if len(new_keys):
                k_all = np.concatenate([self.keys, new_keys])
                v_all = np.concatenate([self.values, new_values])
                if len(k_all) > self.sample_size:
                    keep = np.argpartition(k_all, self.sample_size - 1)[: self.sample_size]
                    k_all, v_all = k_all[keep], v_all[keep]
                    self.tau = float(k_all.max())
                self.keys, self.values = k_all, v_all

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
        if len(counts) > 2 * MAX_DISTINCT:
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])
            self.max_count_error = max(self.max_count_error, ranked[MAX_DISTINCT][1])
            self.counts = dict(ranked[:MAX_DISTINCT])


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


# --- reading -------------------------------------------------------------------------------

@dataclass
class Source:
    """One version of the dataset: where it is and what identifies it."""

    uri: str
    format: str
    digest: str
    rows: int
    origin: str  # how it was chosen, for people: "locked in environments/x.lock.json"
    location: Location = field(repr=False, default=None)  # type: ignore[assignment]

    def describe(self) -> dict:
        return {"uri": self.uri, "format": self.format, "digest": self.digest,
                "rows": self.rows, "origin": self.origin}


def _kind(col: Column) -> str:
    return "categorical" if col.dtype in ("string", "bool") else "numeric"


def _open(source: Source, columns: dict[str, Column], batch_rows: int
          ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    from .validate import arrow_type

    if source.format == "csv":
        import pyarrow.csv as pacsv

        with source.location.open() as stream:
            names = pacsv.open_csv(stream).schema.names
        present = [c for c in columns if c in names]
        types = {c: arrow_type(columns[c].dtype) for c in present}
        reader = pacsv.open_csv(
            source.location.open(), read_options=pacsv.ReadOptions(block_size=8 << 20),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=present))
        return reader.schema, iter(reader)
    import pyarrow.parquet as pq

    dictionary = [c for c, col in columns.items() if col.dtype == "string"]
    pf = pq.ParquetFile(source.location.open_random(), read_dictionary=dictionary,
                        buffer_size=1 << 20, pre_buffer=False)
    schema = pf.schema_arrow
    present = [c for c in columns if c in schema.names]
    return schema, pf.iter_batches(batch_size=batch_rows, columns=present, use_threads=True)


def _check_schema(schema: pa.Schema, columns: dict[str, Column], source: Source, res: Resolved,
                  ds_name: str, what: str) -> tuple[dict[str, Column], list[Diagnostic]]:
    from .validate import type_accepts

    usable, problems = {}, []
    for name, col in columns.items():
        where = ("datasets", ds_name, "columns", name)
        if name not in schema.names:
            hint = did_you_mean(name, schema.names)
            problems.append(res.diag("BE206", f"{ds_name}.{name}: the {what} ({source.uri}) has "
                                     "no such column; it is left out of the drift report", *where,
                                     hints=(hint,) if hint else ()))
        elif not type_accepts(col.dtype, schema.field(name).type):
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared {col.dtype}, stored "
                                     f"as {schema.field(name).type} in the {what} "
                                     f"({source.uri}); it is left out of the drift report",
                                     *where, "dtype"))
        else:
            usable[name] = col
    return usable, problems


def _scan(source: Source, columns: dict[str, Column], edges: dict[str, np.ndarray] | None,
          sample_size: int, batch_rows: int, numeric_only: bool = False) -> dict[str, Any]:
    """One streaming pass: an accumulator per column."""
    if numeric_only:
        columns = {n: c for n, c in columns.items() if _kind(c) == "numeric"}
    _, batches = _open(source, columns, batch_rows)
    accs: dict[str, Any] = {}
    for name, col in columns.items():
        if _kind(col) == "categorical":
            accs[name] = _Categorical(col.dtype)
        else:
            accs[name] = _Numeric(col.dtype, None if edges is None else edges.get(name),
                                  sample_size, not numeric_only,
                                  col.domain if col.domain is not None and not numeric_only
                                  else None)
    rng = np.random.default_rng(SEED)
    wants_keys = not numeric_only and any(isinstance(a, _Numeric) for a in accs.values())
    for batch in batches:
        keys = rng.random(batch.num_rows) if wants_keys else None
        for name, acc in accs.items():
            acc.update(batch.column(batch.schema.get_field_index(name)), keys)
    return accs


# --- summaries (serializable; what comparisons, the cache and the report use) ------------------

def _quantile(sample: np.ndarray, qs: tuple[float, ...], method: str = "linear") -> list[float]:
    if not len(sample):
        return []
    return [float(v) for v in np.quantile(sample, qs, method=method)]


def _coarse(value: float, dtype: str) -> float:
    """Round for restricted datasets: 2 significant digits; dates to the month, times to a day."""
    if not math.isfinite(value):
        return value
    if dtype == "date":
        day = _EPOCH + dt.timedelta(days=int(math.floor(value)))
        return float((day.replace(day=1) - _EPOCH).days)
    if dtype == "timestamp":
        return float(math.floor(value / 86400.0) * 86400.0)
    if value == 0:
        return 0.0
    digits = 1 - int(math.floor(math.log10(abs(value))))
    return float(round(value, digits))


_EPOCH = dt.date(1970, 1, 1)


def _edges(acc: _Numeric, restricted: bool, min_group: int) -> np.ndarray:
    """Interior bin edges: the baseline sample's deciles (actual values), deduplicated."""
    bins = BINS
    if restricted:
        bins = max(1, min(BINS, acc.n // max(min_group, 1)))
    if bins < 2 or not len(acc.values):
        return np.empty(0)
    qs = tuple(i / bins for i in range(1, bins))
    cuts = np.quantile(acc.values, qs, method="inverted_cdf")
    if restricted:
        cuts = np.array([_coarse(float(c), acc.dtype) for c in cuts])
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
        "quantiles": dict(zip(_QUANTILES, _quantile(acc.values, _QUANTILES))),
        "restricted_quantiles": dict(zip(_RESTRICTED_QUANTILES,
                                         _quantile(acc.values, _RESTRICTED_QUANTILES))),
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


def _profile_pair(baseline: Source, candidate: Source, columns: dict[str, Column],
                  restricted: bool, min_group: int, sample_size: int, batch_rows: int,
                  cache_dir: Path | None) -> tuple[dict[str, dict], dict[str, dict]]:
    """Summaries of both versions: baseline pass 1, then (baseline bins ∥ candidate pass)."""
    key = None
    if cache_dir is not None and not restricted:
        key = digest_json({"v": STATS_VERSION, "data": baseline.digest, "bins": BINS,
                           "sample": sample_size, "seed": SEED, "columns": {
                               n: c.model_dump(mode="json", include={"dtype", "domain"})
                               for n, c in sorted(columns.items())}}).split(":", 1)[1]
        cached = _cache_get(cache_dir, key)
        if cached is not None and set(cached) == set(columns):
            edges = {n: np.array(s["edges"]) for n, s in cached.items() if s["kind"] == "numeric"}
            cand = _scan(candidate, columns, edges, sample_size, batch_rows)
            return cached, _summaries(cand, edges, {})
    first = _scan(baseline, columns, None, sample_size, batch_rows)
    edges = {n: _edges(a, restricted, min_group) for n, a in first.items()
             if isinstance(a, _Numeric)}
    need_second = {n for n, a in first.items() if isinstance(a, _Numeric)
                   and not a.complete_sample}
    with ThreadPoolExecutor(2) as pool:
        cand_future = pool.submit(_scan, candidate, columns, edges, sample_size, batch_rows)
        second = (_scan(baseline, {n: columns[n] for n in need_second}, edges, sample_size,
                        batch_rows, numeric_only=True) if need_second else {})
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


# --- formatting in the column's own units ------------------------------------------------------

def fmt_number(value: float | None, dtype: str = "float64") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if dtype == "date":
        return (_EPOCH + dt.timedelta(days=int(round(value)))).isoformat()
    if dtype == "timestamp":
        moment = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M") + "Z"
    return _plain(value)


def _plain(value: float, digits: int = 5) -> str:
    if value == 0:
        return "0"
    magnitude = int(math.floor(math.log10(abs(value))))
    if magnitude >= 9 or magnitude < -4:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_delta(value: float, dtype: str) -> str:
    sign = "+" if value >= 0 else "-"
    size = abs(value)
    if dtype == "date":
        return f"{sign}{_plain(size, 3)} days"
    if dtype == "timestamp":
        for unit, seconds in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if size >= seconds:
                return f"{sign}{_plain(size / seconds, 3)} {unit}"
        return f"{sign}{_plain(size, 3)} s"
    return f"{sign}{_plain(size)}"


def fmt_stat(value: float, against: float | None = None) -> str:
    """A statistic, with enough digits to differ visibly from `against` (the threshold)."""
    for digits in range(2, 7):
        text = f"{value:.{digits}g}"
        if against is None or float(text) != against:
            return text
    return repr(value)


def fmt_share(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'" if value != OTHER else OTHER
    return str(value)


def bin_label(i: int, edges: list[float], dtype: str) -> str:
    if not edges:
        return "all values"
    if i == 0:
        return f"< {fmt_number(edges[0], dtype)}"
    if i == len(edges):
        return f"≥ {fmt_number(edges[-1], dtype)}"
    return f"[{fmt_number(edges[i - 1], dtype)}, {fmt_number(edges[i], dtype)})"


def _suggest(value: float, bounded: bool) -> float:
    """A round threshold just above an observed statistic."""
    if value <= 0:
        return 0.01
    step = 10 ** (math.floor(math.log10(value)) - 1)
    out = math.ceil(value / step) * step
    if out <= value:
        out += step
    out = float(f"{out:.6g}")
    return min(out, 1.0) if bounded else out
