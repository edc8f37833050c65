"""`buildenv stats`: what a dataset looks like, without anyone seeing a row of it.

Per column: the count and null count; for a column with a `range`, the mean, a histogram over
bins of the range and quartiles; for a column with a `domain` (or a bool), a histogram over the
domain's values; for a string or integer column without a domain, the values whose noisy count
clears a threshold. For a restricted dataset every figure is released with differential privacy
by OpenDP; for a public one the figures are exact.

How a private call works. The data gate streams the locked version in batches; each batch adds
to exact aggregates held in memory -- a count, a vector of cell counts per column, a sum of
clamped values in integer units, a table of discovered keys -- so memory stays bounded by a batch
whatever the size of the data. Each aggregate is what an OpenDP transformation computes
(`make_count`, `make_count_by_categories` over the public cells, `make_sum` over integers bounded
by the range, `make_count_by`), and OpenDP's stability map of that transformation gives how far
one person moves it (`d_in` = rows per person). OpenDP's measurement on the aggregate's space
adds the noise: discrete Laplace (`make_laplace`), or Laplace with a threshold for discovered
keys (`make_laplace_threshold`, which costs a small delta). The call's epsilon is split evenly
over its figures, and OpenDP's privacy maps of the chains sum to no more than it (basic
composition). Accuracy is OpenDP's: the half-width of a 95% interval per figure; figures derived
from several noisy counts (a column's count, the mean, quartiles) get intervals that hold
jointly by a union bound. Negative noisy counts are shown as 0 (post-processing).

The noise is random by nature: two calls give different figures, and each spends budget. There
is no seed: a replayable noise draw would not be private.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.access import backend, policy
from buildenv.access.coding import OTHER, Coding, plan_codings
from buildenv.access.unit import Truncation, contributions, truncation_for
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import read_lock

__all__ = ["ALPHA", "DELTA", "Exact", "Plan", "collect", "exact_report", "plan_release",
           "release"]

ALPHA = 0.05        # accuracy is the half-width of a (1 - ALPHA) interval
DELTA = 1e-9        # per call, spent only by thresholded key discovery
TOP_KEYS = 20       # public data: most frequent values shown for a column without a domain


@dataclass
class Exact:
    """Exact aggregates of one read. For a restricted dataset they are never shown."""

    rows: int = 0
    cells: dict[str, np.ndarray] = field(default_factory=dict)
    sums: dict[str, int] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)


def collect(read: Any, codings: list[Coding], truncation: Truncation | None,
            batch_rows: int | None = None) -> Exact:
    """One pass over the read's batches (verified by the gate after the last one)."""
    names = [c.name for c in codings]
    wanted = list(dict.fromkeys(names + ([truncation.key] if truncation else [])))
    strings = [c.name for c in codings if c.dtype == "string"]
    exact = Exact()
    for coding in codings:
        if coding.kind == "keys":
            exact.keys[coding.name] = {}
        else:
            exact.cells[coding.name] = np.zeros(len(coding.cells), np.int64)
        if coding.kind == "binned":
            exact.sums[coding.name] = 0
    kwargs = {"batch_rows": batch_rows} if batch_rows else {}
    for batch in read.batches(wanted, dictionary=strings, **kwargs):
        mask = truncation.keep(batch) if truncation is not None else None
        exact.rows += int(mask.sum()) if mask is not None else batch.num_rows
        for coding in codings:
            array = batch.column(batch.schema.get_field_index(coding.name)) \
                if coding.name in batch.schema.names else pa.nulls(batch.num_rows)
            _add(exact, coding, array, mask)
    return exact


def _add(exact: Exact, coding: Coding, array: pa.Array, mask: np.ndarray | None) -> None:
    if coding.kind == "keys":
        if mask is not None:
            array = array.filter(pa.array(mask))
        if pa.types.is_dictionary(array.type):
            counts = np.bincount(np.asarray(pc.fill_null(array.indices, 0)),
                                 weights=np.asarray(array.indices.is_valid()),
                                 minlength=len(array.dictionary)).astype(np.int64)
            pairs = zip(array.dictionary.to_pylist(), counts.tolist())
        else:
            counted = pc.value_counts(array.drop_null())
            pairs = zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())
        table = exact.keys[coding.name]
        for value, count in pairs:
            if count:
                table[value] = table.get(value, 0) + int(count)
        return
    if coding.kind == "binned":
        values, valid = coding.numeric(array)
        assert coding.edges is not None
        cells = np.searchsorted(coding.edges[1:-1], values, side="right").astype(np.int32)
        cells[~valid] = coding.null_cell
        units = coding.units(values)
        keep = valid if mask is None else valid & mask
        exact.sums[coding.name] += int(units[keep].sum(dtype=np.int64))
    else:
        cells = coding.encode(array)
    if mask is not None:
        cells = cells[mask]
    exact.cells[coding.name] += np.bincount(cells, minlength=len(coding.cells))


# --- private release ------------------------------------------------------------------------

@dataclass
class Figure:
    """One OpenDP measurement, built before the data is read, applied to one aggregate."""

    kind: str          # rows | cells | sum | keys
    column: str | None
    measurement: Any
    scale: float
    epsilon: float     # OpenDP's privacy map of the chain at d_in
    delta: float = 0.0
    threshold: int | None = None


@dataclass
class Plan:
    figures: list[Figure]
    epsilon: float
    delta: float
    d_in: int


def plan_release(dp: Any, codings: list[Coding], epsilon: float, d_in: int) -> Plan:
    """The measurements of a call: its epsilon split evenly over its figures. Needs no data,
    so a request OpenDP cannot satisfy fails before anything is read or spent."""
    count = 1 + len(codings) + sum(c.kind == "binned" for c in codings)
    share = epsilon / count * (1 - 1e-12)
    discovered = sum(c.kind == "keys" for c in codings)
    delta_share = DELTA / discovered if discovered else 0.0
    figures = [_figure(dp, "rows", None, dp.t.make_count(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.symmetric_distance(), TO="i64"),
        share, d_in)]
    for coding in codings:
        if coding.kind == "keys":
            element = "i64" if coding.dtype != "string" else "String"
            t = dp.t.make_count_by(dp.vector_domain(dp.atom_domain(T=element)),
                                   dp.symmetric_distance(), TV="i64")
            figures.append(_threshold_figure(dp, coding.name, t, share, delta_share, d_in))
            continue
        t = dp.t.make_count_by_categories(
            dp.vector_domain(dp.atom_domain(T="i64")), dp.symmetric_distance(),
            categories=list(range(len(coding.cells) - 1)), null_category=True, TOA="i64")
        figures.append(_figure(dp, "cells", coding.name, t, share, d_in))
        if coding.kind == "binned":
            t = dp.t.make_sum(dp.vector_domain(dp.atom_domain(bounds=(0, coding.sum_bound),
                                                              T="i64")),
                              dp.symmetric_distance())
            figures.append(_figure(dp, "sum", coding.name, t, share, d_in))
    spent = math.fsum(f.epsilon for f in figures)
    if spent > epsilon:  # basic composition must hold exactly as OpenDP maps it
        raise AssertionError(f"figures spend {spent} > {epsilon}")
    return Plan(figures, epsilon, math.fsum(f.delta for f in figures), d_in)


def _figure(dp: Any, kind: str, column: str | None, t: Any, share: float, d_in: int) -> Figure:
    scale = dp.binary_search_param(lambda s: t >> dp.m.then_laplace(s), d_in=d_in, d_out=share)
    measurement = dp.m.make_laplace(t.output_domain, t.output_metric, scale)
    return Figure(kind, column, measurement, scale, float((t >> measurement).map(d_in)))


def _threshold_figure(dp: Any, column: str, t: Any, share: float, delta: float,
                      d_in: int) -> Figure:
    never = (1 << 31) - 1

    def loss(scale: float, threshold: int = never) -> tuple[float, float]:
        spent = (t >> dp.m.then_laplace_threshold(scale, threshold=threshold)).map(d_in)
        return float(spent[0]), float(spent[1])

    scale = dp.binary_search(lambda s: loss(s)[0] <= share, bounds=(1e-9, 1e12), T=float)
    threshold = dp.binary_search(lambda th: loss(scale, th)[1] <= delta, bounds=(d_in, never),
                                 T=int)
    measurement = dp.m.make_laplace_threshold(t.output_domain, t.output_metric, scale,
                                              threshold=threshold)
    eps, dlt = (t >> measurement).map(d_in)
    return Figure("keys", column, measurement, scale, float(eps), float(dlt), int(threshold))


def release(plan: Plan, exact: Exact, codings: list[Coding]) -> dict[str, Any]:
    """Apply the plan's measurements to the aggregates (call only after the ledger spend)."""
    accuracy = backend.opendp().accuracy.discrete_laplacian_scale_to_accuracy

    by_column: dict[str, dict[str, Figure]] = {}
    rows_figure = plan.figures[0]
    for figure in plan.figures[1:]:
        by_column.setdefault(figure.column or "", {})[figure.kind] = figure
    noisy_rows = int(rows_figure.measurement(int(exact.rows)))
    report: dict[str, Any] = {"private": True, "epsilon": plan.epsilon, "delta": plan.delta,
                              "alpha": ALPHA, "rows_per_person": plan.d_in,
                              "rows": {"value": max(0, noisy_rows),
                                       "accuracy": accuracy(rows_figure.scale, ALPHA)},
                              "columns": []}
    for coding in codings:
        figures = by_column[coding.name]
        if coding.kind == "keys":
            fig = figures["keys"]
            released = fig.measurement({_key(coding, k): int(v)
                                        for k, v in exact.keys[coding.name].items()})
            report["columns"].append(_keys_entry(coding, released, accuracy(fig.scale, ALPHA),
                                                 fig.threshold))
            continue
        fig = figures["cells"]
        noisy = np.asarray(fig.measurement(exact.cells[coding.name].tolist()), dtype=np.int64)
        cell_accuracy = accuracy(fig.scale, ALPHA)
        # a column's count is rows minus nulls: two noisy figures, jointly within the sum
        # of their (ALPHA/2)-accuracies
        count = {"value": max(0, noisy_rows - max(0, int(noisy[-1]))),
                 "accuracy": accuracy(rows_figure.scale, ALPHA / 2)
                 + accuracy(fig.scale, ALPHA / 2)}
        entry = _cells_entry(coding, noisy, cell_accuracy, count)
        if coding.kind == "binned":
            sum_fig = figures["sum"]
            noisy_sum = int(sum_fig.measurement(int(exact.sums[coding.name])))
            total = {"value": count["value"],
                     "accuracy": accuracy(rows_figure.scale, ALPHA / 4)
                     + accuracy(fig.scale, ALPHA / 4)}
            k = coding.bins
            entry.update(_numeric_entry(coding, noisy, total, noisy_sum,
                                        accuracy(sum_fig.scale, ALPHA / 2),
                                        accuracy(fig.scale, ALPHA / k)))
        report["columns"].append(entry)
    report["figures"] = [{"figure": f.kind, "column": f.column, "epsilon": f.epsilon,
                          "delta": f.delta, "scale": f.scale} for f in plan.figures]
    return report


def _key(coding: Coding, value: Any) -> Any:
    return int(value) if coding.dtype != "string" else str(value)


# --- exact figures (public data) -------------------------------------------------------------

def exact_report(exact: Exact, codings: list[Coding]) -> dict[str, Any]:
    report: dict[str, Any] = {"private": False, "epsilon": 0.0, "delta": 0.0, "alpha": ALPHA,
                              "rows": {"value": exact.rows, "accuracy": 0.0}, "columns": []}
    for coding in codings:
        if coding.kind == "keys":
            table = exact.keys[coding.name]
            top = dict(sorted(table.items(), key=lambda kv: (-kv[1], str(kv[0])))[:TOP_KEYS])
            entry = _keys_entry(coding, top, 0.0, None)
            entry["distinct"] = len(table)
            report["columns"].append(entry)
            continue
        counts = exact.cells[coding.name]
        count = {"value": int(counts[:-1].sum()), "accuracy": 0.0}
        entry = _cells_entry(coding, counts, 0.0, count)
        if coding.kind == "binned":
            entry.update(_numeric_entry(coding, counts, count, exact.sums[coding.name], 0.0,
                                        0.0))
        report["columns"].append(entry)
    return report


# --- figures of one column ---------------------------------------------------------------------

def _cells_entry(coding: Coding, counts: np.ndarray, cell_accuracy: float,
                 count: dict[str, Any]) -> dict[str, Any]:
    shown = np.maximum(counts, 0)
    entry: dict[str, Any] = {"name": coding.name, "dtype": coding.dtype, "kind": coding.kind,
                             "count": count,
                             "nulls": {"value": int(shown[-1]), "accuracy": cell_accuracy}}
    if coding.kind == "nulls":
        return entry
    labels = coding.cells
    if coding.kind == "categorical":
        entry["domain"] = list(coding.keys)
        entry["histogram"] = [{"value": labels[i], "count": int(shown[i]),
                               "accuracy": cell_accuracy} for i in range(len(coding.keys))]
        entry["outside_domain"] = {"value": int(shown[len(coding.keys)]),
                                   "accuracy": cell_accuracy, "label": OTHER}
    else:
        entry["range"] = [coding.display(coding.lo), coding.display(coding.hi)]
        entry["histogram"] = [{"bin": labels[i], "count": int(shown[i]),
                               "accuracy": cell_accuracy} for i in range(coding.bins)]
    return entry


def _numeric_entry(coding: Coding, counts: np.ndarray, total: dict[str, Any], units_sum: int,
                   sum_accuracy: float, cell_error: float) -> dict[str, Any]:
    """Mean (the sum of clamped values over the non-null count) and quartiles (read off the
    histogram). `total` and `sum_accuracy` hold at ALPHA/2 each, `cell_error` per cell at
    ALPHA/k, so each interval holds with probability >= 1 - ALPHA."""
    k = coding.bins
    bins = np.asarray(counts[:k], dtype=np.float64)
    q = coding.quantum
    count, count_accuracy = float(total["value"]), float(total["accuracy"])
    if count > 0:
        mean = coding.lo + q * units_sum / count
        low = coding.lo + q * max(0.0, units_sum - sum_accuracy) / (count + count_accuracy)
        high = (coding.lo + q * (units_sum + sum_accuracy) / (count - count_accuracy)
                if count > count_accuracy else coding.hi)
        mean, low, high = (min(max(v, coding.lo), coding.hi) for v in (mean, low, high))
    else:
        mean, low, high = None, coding.lo, coding.hi
    quantiles = {}
    for name, level in (("p25", 0.25), ("p50", 0.5), ("p75", 0.75)):
        value, interval = _quantile(coding, bins, level, cell_error)
        quantiles[name] = {"value": value, "interval": interval}
    return {"mean": {"value": _show(coding, mean) if mean is not None else None,
                     "interval": [_show(coding, low), _show(coding, high)]},
            "quantiles": quantiles}


def _quantile(coding: Coding, bins: np.ndarray, level: float, error: float
              ) -> tuple[Any, list[Any]]:
    """The `level` quantile read off the histogram (linear within a bin), and the bin edges
    between which the true one lies when every cell is within `error` of its count."""
    assert coding.edges is not None
    shown = np.maximum(bins, 0)
    total = shown.sum()
    edges = coding.edges.astype(np.float64)
    if total <= 0:
        return None, [_show(coding, coding.lo), _show(coding, coding.hi)]
    cumulative = np.concatenate([[0.0], np.cumsum(shown)])
    target = level * total
    j = int(np.searchsorted(cumulative[1:], target, side="left"))
    j = min(j, len(shown) - 1)
    inside = (target - cumulative[j]) / shown[j] if shown[j] > 0 else 0.5
    value = edges[j] + inside * (edges[j + 1] - edges[j])
    if coding.integral:
        value = min(math.floor(value), edges[-1] - 1)
    noisy_cum = np.concatenate([[0.0], np.cumsum(bins)])
    k = len(bins)
    steps = np.arange(k + 1)
    most = (noisy_cum + steps * error) / max(noisy_cum[-1] - k * error, 1e-12)
    least = (noisy_cum - steps * error) / (noisy_cum[-1] + k * error)
    below = [i for i in range(k + 1) if most[i] < level and noisy_cum[-1] - k * error > 0]
    above = [i for i in range(k + 1) if least[i] >= level]
    low = edges[below[-1]] if below else edges[0]
    high = edges[above[0]] if above else edges[-1]
    if coding.integral:
        high = max(low, high - 1)
    return _show(coding, value), [_show(coding, low), _show(coding, high)]


def _keys_entry(coding: Coding, released: dict[str, Any], key_accuracy: float,
                threshold: int | None) -> dict[str, Any]:
    ranked = sorted(released.items(), key=lambda kv: (-kv[1], str(kv[0])))
    entry: dict[str, Any] = {"name": coding.name, "dtype": coding.dtype, "kind": "keys",
                             "values": [{"value": v, "count": max(0, int(c)),
                                         "accuracy": key_accuracy} for v, c in ranked]}
    if threshold is not None:
        entry["threshold"] = threshold
    return entry


def _show(coding: Coding, value: float | None) -> Any:
    if value is None:
        return None
    if coding.dtype in ("date", "timestamp"):
        return coding.display(value)
    if coding.integral:
        return round(float(value), 3)
    return round(float(value), 6)


# --- the command ------------------------------------------------------------------------------

def run_stats(project: Any, res: Any, dataset: str, columns: list[str] | None,
              epsilon: float, bins: int = 20) -> dict[str, Any]:
    """`buildenv stats`: exact figures of a public dataset, private ones of a restricted one
    (checks, read, spend, release and audit in the order `access.policy` describes)."""
    policy.require_dataset(res, dataset)
    check_bins(bins)
    env = res.env
    codings, notes = plan_codings(dataset, env.datasets[dataset].columns, columns, bins, res)
    restricted = env.restricted(dataset)
    if not restricted:
        lock = read_lock(project, res.name)
        pinned = lock.datasets.get(dataset) if lock else None
        if pinned is not None and pinned.uri != env.datasets[dataset].uri:
            pinned = None
        pins = {dataset: pinned.digest} if pinned else {}
        gate = Gate(project, env, "stats", pins=pins, where=res,
                    manifests=pinned.manifests_for(dataset) if pinned else {})
        try:
            with gate.open(dataset, expect=True if pins else None) as read:
                exact = collect(read, codings, None)
                digest = read.digest
        except GateError as exc:
            raise DiagnosticError([exc.diagnostic], 1) from None
        report = exact_report(exact, codings)
    else:
        dp = backend.opendp("`buildenv stats` of a restricted dataset")
        req = policy.request(project, res, dataset, epsilon, "stats")
        d_in = contributions(env, dataset)
        plan = plan_release(dp, codings, req.epsilon, d_in)
        gate = Gate(project, env, "stats", pins={dataset: req.pinned.digest},
                    manifests=req.pinned.manifests_for(dataset), where=res)
        try:
            with gate.open(dataset) as read:
                exact = collect(read, codings, truncation_for(env, dataset))
                digest = read.digest
        except GateError as exc:
            raise DiagnosticError([exc.diagnostic], 1) from None
        names = [c.name for c in codings]
        entry = req.spend(delta=plan.delta, columns=names)
        report = release(plan, exact, codings)
        policy.audit_release(req, names, plan.delta, entry)
        spent = req.ledger.spent(req.scope)
        report["budget"] = {"scope": req.scope, "total": req.budget, "spent": spent,
                            "left": max(0.0, req.budget - spent)}
        if env.privacy.units.get(dataset):
            report["rows_per_person"] = d_in
            report["person_key"] = env.privacy.units[dataset].key
    report.update({"environment": res.name, "dataset": dataset, "digest": digest,
                   "notes": notes})
    return report


def check_bins(bins: int) -> None:
    if not 1 <= bins <= 1000:
        raise DiagnosticError([Diagnostic("BE826", f"--bins must be between 1 and 1000 (got "
                                          f"{bins})", hints=("e.g. --bins 20",))], 2)
