"""The public view of drift statistics: the only form in which they leave the monitor.

For restricted datasets: categorical values seen fewer than `privacy.min_group_size` times in a
version are merged into "(other)"; numeric columns have no min/max, their quantiles (only p10..p90,
and only those with at least min_group_size rows beyond them) are rounded to 2 significant digits
(dates to the month, timestamps to the day), histogram cells below min_group_size are withheld,
and mean/std are omitted below min_group_size values.
"""

from __future__ import annotations

from typing import Any

from buildenv.env.resolve import Resolved
from buildenv.env.spec import TEMPORAL_DTYPES
from buildenv.monitor.alerts import STATS, ColumnView, Threshold, decode, is_small
from buildenv.monitor.formatting import OTHER, bin_label
from buildenv.monitor.statistics import RESTRICTED_QUANTILES, coarse
from buildenv.monitor.triage import Usage, importance_of

__all__ = ["public_column"]

def _public_side(v: ColumnView, which: str) -> dict:
    s = v.base if which == "old" else v.cand
    out: dict[str, Any] = {"rows": s["rows"], "nulls": s["nulls"],
                           "null_fraction": s["nulls"] / s["rows"] if s["rows"] else None,
                           "count": s["count"]}
    dtype = v.col.dtype
    if v.kind == "numeric":
        out["mean"], out["std"] = v.stat(which, "mean"), v.stat(which, "std")
        if v.restricted:
            out["quantiles"] = {
                f"p{round(q * 100):02d}": coarse(val, dtype)
                for q, val in zip(RESTRICTED_QUANTILES, s["restricted_quantiles"].values())
                if s["count"] * min(q, 1 - q) >= v.min_group}
        else:
            out["min"], out["max"] = s["min"], s["max"]
            out["quantiles"] = {f"p{round(float(q) * 100):02d}": val
                                for q, val in s["quantiles"].items()}
        counts = v.metrics["p" if which == "old" else "q"]
        total = counts.sum()
        out["histogram"] = {
            "edges": v.base["edges"],
            "labels": [bin_label(i, v.base["edges"], dtype) for i in range(len(counts))],
            "counts": [None if is_small(int(c), v) else int(c) for c in counts],
            "fractions": [None if is_small(int(c), v) else (float(c / total) if total else 0.0)
                          for c in counts]}
        if dtype in TEMPORAL_DTYPES:
            out["encoding"] = ("days since 1970-01-01" if dtype == "date"
                               else "seconds since 1970-01-01T00:00:00Z")
        if s.get("out_of_domain"):
            out["out_of_domain"] = _public_values(decode(s["out_of_domain"]), s["count"], v)
        return out
    counts = v.counts(which)
    out["distinct"] = len(counts)
    mode = v.mode(which)
    out["mode"] = mode
    out["mode_fraction"] = counts.get(mode, 0) / s["count"] if mode is not None and s["count"] \
        else None
    out.update(_public_values(counts, s["count"], v))
    if s.get("max_count_error"):
        out["max_count_error"] = s["max_count_error"]
    return out


def _public_values(counts: dict[Any, int], n: int, v: ColumnView) -> dict:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    shown = [(k, c) for k, c in ranked if not (v.restricted and c < v.min_group)]
    hidden = [c for _, c in ranked if v.restricted and c < v.min_group]
    out: dict[str, Any] = {"values": [{"value": k, "count": c, "fraction": c / n if n else None}
                                      for k, c in shown]}
    if hidden:
        out["other"] = {"label": OTHER, "count": sum(hidden), "values": len(hidden),
                        "fraction": sum(hidden) / n if n else None}
    return out


def public_column(v: ColumnView, thresholds: dict[str, Threshold], res: Resolved,
                   usage: list[Usage]) -> dict:
    metrics: dict[str, Any] = {k: v.metrics.get(k) for k in STATS}
    at = v.metrics.get("linf_at")
    if at is not None:
        metrics["linf_at"] = (bin_label(at, v.base["edges"], v.col.dtype) if v.kind == "numeric"
                              else (at if v.nameable(at) else OTHER))
    thr = {}
    for stat, t in thresholds.items():
        pos = res.where(*t.path) if t.written else None
        thr[stat] = {"value": t.value, "key": t.key,
                     "location": f"{pos.path}:{pos.line}" if pos else None,
                     "crossed": metrics.get(stat) is not None and metrics[stat] > t.value}
    return {"dataset": v.ds, "dtype": v.col.dtype, "kind": v.kind, "serving": v.col.serving,
            "domain": v.col.domain, "metrics": metrics, "thresholds": thr,
            "importance": importance_of(usage), "used_by": [u.describe() for u in usage],
            "baseline": _public_side(v, "old"), "candidate": _public_side(v, "new")}

