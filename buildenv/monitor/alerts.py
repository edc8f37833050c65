"""Judging drift: thresholds, per-column metrics and the alerts they raise.

Thresholds: per statistic, `monitoring.<section>.columns.<col>.<stat>` when set, else the
categorical (string, bool) or numeric default of the section (`drift`, or `skew` for
training/serving skew); every alert is located at the YAML line of the threshold it crossed (the
column declaration for a built-in default). Messages are built from `ColumnView`,
the privacy-aware view of a column, so an alert never quotes a value that view withholds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import TEMPORAL_DTYPES, Column
from buildenv.monitor.comparison import DRIFT, Comparison
from buildenv.monitor.formatting import (
    OTHER,
    bin_label,
    decimals_for,
    fmt_delta,
    fmt_number,
    fmt_share,
    fmt_stat,
    percent,
    suggest_threshold,
    value_label,
)
from buildenv.monitor.statistics import coarse, jsd, linf, psi
from buildenv.monitor.triage import Usage

__all__ = ["STATS", "Alert", "ColumnView", "Threshold", "alerts_for", "compare", "decode",
           "is_small", "threshold_hint", "threshold_text", "thresholds_for"]

STATS = ("linf", "jsd", "psi", "null_fraction")


STAT_NAMES = {"linf": "L∞", "jsd": "JSD", "psi": "PSI", "null_fraction": "null-fraction change",
              "domain": "values outside the domain", "mismatch": "share of differing values"}


@dataclass(frozen=True)
class Threshold:
    """One threshold and where it was written (or the column, for a built-in default)."""

    stat: str
    value: float
    path: tuple  # YAML key path of the threshold, or of the column for a built-in default
    written: bool
    per_column: bool

    @property
    def key(self) -> str:
        return ".".join(map(str, self.path)) if self.written else "built-in default"


def thresholds_for(res: Resolved, ds_name: str, col_name: str, kind: str,
                   section: str = "drift") -> dict[str, Threshold]:
    """Per statistic: the column's override if set, else the categorical/numeric default of
    `monitoring.<section>` (skew adds `mismatch`, for joined examples)."""
    drift = getattr(res.env.monitoring, section)
    default = drift.categorical if kind == "categorical" else drift.numeric
    override = drift.columns.get(col_name)
    out = {}
    for stat in STATS + (("mismatch",) if section == "skew" else ()):
        path: tuple[str, ...]
        if override is not None and getattr(override, stat) is not None:
            path = ("monitoring", section, "columns", col_name, stat)
            out[stat] = Threshold(stat, getattr(override, stat), path, True, True)
        elif getattr(default, stat) is not None:
            path = ("monitoring", section, kind, stat)
            written = path in res.origin
            if not written:
                path = ("datasets", ds_name, "columns", col_name)
            out[stat] = Threshold(stat, getattr(default, stat), path, written, False)
    return out


def decode(counts: dict[str, int]) -> dict[Any, int]:
    return {json.loads(k): v for k, v in counts.items()}


def compare(base: dict, cand: dict) -> dict:
    """Metrics of one column; `vectors` keeps the aligned counts for messages and plots."""
    out: dict[str, Any] = {}
    nf_old = base["nulls"] / base["rows"] if base["rows"] else 0.0
    nf_new = cand["nulls"] / cand["rows"] if cand["rows"] else 0.0
    out["null_fraction"] = abs(nf_new - nf_old)
    if base["kind"] == "categorical":
        old, new = decode(base["counts"]), decode(cand["counts"])
        keys = sorted(set(old) | set(new), key=lambda k: (-old.get(k, 0), -new.get(k, 0), str(k)))
        p = np.array([old.get(k, 0) for k in keys], np.float64)
        q = np.array([new.get(k, 0) for k in keys], np.float64)
    else:
        keys = list(range(len(base["edges"]) + 1))
        p = np.array(base["bins"] or [0] * len(keys), np.float64)
        q = np.array(cand["bins"] or [0] * len(keys), np.float64)
    out["keys"] = keys
    out["p"], out["q"] = p, q
    if p.sum() and q.sum():
        out["linf"], at = linf(p, q)
        out["linf_at"] = keys[at]
        out["jsd"] = jsd(p, q)
        out["psi"] = psi(p, q)
    return out


@dataclass
class Alert:
    """One threshold crossed (or out-of-domain values) on one column."""

    code: str
    column: str
    statistic: str
    value: float | None
    threshold: float | None
    threshold_key: str | None
    old: str
    new: str
    message: str
    where: Diagnostic  # location only (path/line/col)
    hints: tuple[str, ...] = ()
    usage: list[Usage] = field(default_factory=list)
    importance: float | None = None
    suppressed: str | None = None  # "unimportant" | "unused"
    suppressed_why: str | None = None

    @property
    def ratio(self) -> float:
        if self.value is None or not self.threshold:
            return math.inf
        return self.value / self.threshold

    @property
    def location(self) -> str | None:
        return self.where.location() if self.where.path else None

    def diagnostic(self) -> Diagnostic:
        message = self.message
        severity = Severity.ERROR
        if self.suppressed:
            severity = Severity.NOTE
            message += f" [suppressed: {self.suppressed_why}]"
        return Diagnostic(self.code, message, self.where.path, self.where.line, self.where.col,
                          severity=severity, hints=self.hints)

    def to_json(self) -> dict:
        return {
            "code": self.code, "column": self.column, "statistic": self.statistic,
            "value": self.value, "threshold": self.threshold,
            "threshold_key": self.threshold_key, "location": self.location,
            "old": self.old, "new": self.new, "message": self.message,
            "hints": list(self.hints), "importance": self.importance,
            "used_by": [u.describe() for u in self.usage],
            "suppressed": self.suppressed, "suppressed_why": self.suppressed_why,
        }


@dataclass
class ColumnView:
    """The privacy-aware view of one column that alert messages may quote."""

    name: str
    ds: str
    col: Column
    kind: str
    base: dict
    cand: dict
    metrics: dict
    restricted: bool
    min_group: int

    @property
    def label(self) -> str:
        return f"{self.ds}.{self.name}"

    def counts(self, which: str) -> dict[Any, int]:
        return decode((self.base if which == "old" else self.cand)["counts"])

    def nameable(self, value: Any) -> bool:
        if not self.restricted:
            return True
        return any(self.counts(w).get(value, 0) >= self.min_group for w in ("old", "new"))

    def share(self, value: Any, which: str) -> str:
        counts = self.counts(which)
        n = (self.base if which == "old" else self.cand)["count"]
        c = counts.get(value, 0)
        if self.restricted and c < self.min_group:
            return f"fewer than {self.min_group} rows"
        return fmt_share(c / n) if n else "n/a"

    def mode(self, which: str) -> Any:
        counts = self.counts(which)
        if not counts:
            return None
        value = max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))[0]
        return value if self.nameable(value) else None

    def stat(self, which: str, key: str) -> float | None:
        """mean/std/median as the public view shows them (None when withheld)."""
        s = self.base if which == "old" else self.cand
        if key in ("mean", "std"):
            if self.restricted and s["count"] < self.min_group:
                return None
            return s[key]
        qs = s["restricted_quantiles"] if self.restricted else s["quantiles"]
        value = qget(qs, 0.5)
        if value is None or (self.restricted and s["count"] * 0.5 < self.min_group):
            return None
        return coarse(value, self.col.dtype) if self.restricted else value


def qget(qs: dict, q: float) -> float | None:
    for k, v in qs.items():
        if abs(float(k) - q) < 1e-9:
            return v
    return None


def _distribution_text(v: ColumnView) -> tuple[str, str, str]:
    """(description, old, new) of how a column's distribution moved, in its own units."""
    m = v.metrics
    if v.kind == "categorical":
        parts = []
        old_mode, new_mode = v.mode("old"), v.mode("new")
        if old_mode is not None and new_mode is not None and old_mode != new_mode:
            parts.append(f"{value_label(new_mode)} is now the most frequent value "
                         f"({v.share(new_mode, 'new')} of rows, was {value_label(old_mode)} at "
                         f"{v.share(old_mode, 'old')})")
        at = m.get("linf_at")
        if at is not None and v.nameable(at):
            old_s, new_s = v.share(at, "old"), v.share(at, "new")
            verb = "rose" if v.counts("new").get(at, 0) / max(v.cand["count"], 1) >= \
                v.counts("old").get(at, 0) / max(v.base["count"], 1) else "fell"
            change = ""
            if "fewer" not in old_s + new_s:
                delta = (v.counts("new").get(at, 0) / v.cand["count"]
                         - v.counts("old").get(at, 0) / v.base["count"]) * 100
                change = f" ({delta:+.1f} points)"
            parts.append(f"largest change: {value_label(at)} {verb} {old_s} → {new_s}{change}")
            return "; ".join(parts), f"{value_label(at)} {old_s}", f"{value_label(at)} {new_s}"
        if at is not None:
            parts.append(f"largest change among values seen in fewer than {v.min_group} rows "
                         f"(merged as {OTHER})")
        old_t = f"mode {value_label(old_mode)}" if old_mode is not None else "n/a"
        new_t = f"mode {value_label(new_mode)}" if new_mode is not None else "n/a"
        return "; ".join(parts) or "value frequencies changed", old_t, new_t
    dtype = v.col.dtype
    old_mean, new_mean = v.stat("old", "mean"), v.stat("new", "mean")
    parts = []
    old_t = new_t = "n/a"
    if old_mean is not None and new_mean is not None:
        delta = new_mean - old_mean
        if dtype in TEMPORAL_DTYPES:
            verb = "moved later" if delta >= 0 else "moved earlier"
            rel = ""
        else:
            verb = "rose" if delta >= 0 else "fell"
            rel = f", {percent(delta / abs(old_mean))}" if old_mean else ""
        places = decimals_for(old_mean, new_mean)
        old_t, new_t = fmt_number(old_mean, dtype, places), fmt_number(new_mean, dtype, places)
        parts.append(f"mean {verb} {old_t} → {new_t} ({fmt_delta(delta, dtype, places)}{rel})")
    old_std, new_std = v.stat("old", "std"), v.stat("new", "std")
    if old_std is not None and new_std is not None and dtype not in TEMPORAL_DTYPES:
        places = decimals_for(old_std, new_std)
        parts.append(f"std {fmt_number(old_std, dtype, places)} → "
                     f"{fmt_number(new_std, dtype, places)}")
    old_med, new_med = v.stat("old", "median"), v.stat("new", "median")
    if old_med is not None and new_med is not None:
        places = decimals_for(old_med, new_med)
        parts.append(f"median {fmt_number(old_med, dtype, places)} → "
                     f"{fmt_number(new_med, dtype, places)}")
    at = m.get("linf_at")
    if at is not None:
        shares = []
        for counts in (m["p"], m["q"]):
            c = int(counts[at])
            shares.append(f"fewer than {v.min_group} rows" if is_small(c, v)
                          else fmt_share(c / counts.sum()))
        parts.append(f"largest change in {bin_label(at, v.base['edges'], dtype)}: "
                     f"{shares[0]} → {shares[1]} of values")
    return "; ".join(parts) or "distribution changed", old_t, new_t


def threshold_text(res: Resolved, thr: Threshold, value: float, kind: str) -> str:
    head = f"{STAT_NAMES[thr.stat]} {fmt_stat(value, thr.value)} > {fmt_stat(thr.value)}"
    if not thr.written:
        return f"{head} (built-in default for {kind} columns)"
    pos = res.where(*thr.path)
    at = f" at {pos.path}:{pos.line}" if pos else ""
    return f"{head} ({thr.key}{at})"


def threshold_hint(res: Resolved, multiverse: Multiverse, thr: Threshold, value: float,
                   column: str, section: str = "drift") -> str:
    new = suggest_threshold(value, thr.stat != "psi")
    own = multiverse.display(res.name)
    pos = res.where(*thr.path) if thr.written else None
    if thr.per_column and pos is not None and pos.path == own:
        return f"or raise the threshold: `{thr.stat}: {new}` at {own}:{pos.line}"
    origin = f", from {pos.path}:{pos.line}" if pos is not None else ", the built-in default"
    return (f"or allow it in {res.name}: set monitoring.{section}.columns.{column}.{thr.stat} "
            f"to {new} in {own} (now {fmt_stat(thr.value)}{origin})")


def alerts_for(v: ColumnView, res: Resolved, multiverse: Multiverse, accept: str,
               comparison: Comparison = DRIFT) -> list[Alert]:
    alerts: list[Alert] = []
    where_col = ("datasets", v.ds, "columns", v.name)
    section = comparison.kind
    for stat, thr in thresholds_for(res, v.ds, v.name, v.kind, section).items():
        value = v.metrics.get(stat)
        if value is None or value <= thr.value:
            continue
        if stat == "null_fraction":
            code = comparison.null_fraction
            nf_old = v.base["nulls"] / v.base["rows"] if v.base["rows"] else 0.0
            nf_new = v.cand["nulls"] / v.cand["rows"] if v.cand["rows"] else 0.0
            verb = "rose" if nf_new >= nf_old else "fell"
            old, new = fmt_share(nf_old), fmt_share(nf_new)
            text = (f"null fraction {verb} {old} → {new} "
                    f"({(nf_new - nf_old) * 100:+.1f} points)")
        else:
            code = comparison.categorical if v.kind == "categorical" else comparison.numeric
            text, old, new = _distribution_text(v)
        message = f"{v.label}: {text}; {threshold_text(res, thr, value, v.kind)}"
        alerts.append(Alert(code, v.name, stat, value, thr.value,
                            thr.key if thr.written else None, old, new, message,
                            res.diag(code, "", *thr.path),
                            hints=(accept, threshold_hint(res, multiverse, thr, value, v.name,
                                                          section))))
    bad_new, bad_old = _out_of_domain_counts(v, "new"), _out_of_domain_counts(v, "old")
    if bad_new:
        alerts.append(_domain_alert(v, res, bad_new, bad_old, accept, where_col, comparison))
    return alerts


def _out_of_domain_counts(v: ColumnView, which: str) -> dict[Any, int]:
    s = v.base if which == "old" else v.cand
    if v.col.domain is None:
        return {}
    if v.kind == "numeric":
        return decode(s.get("out_of_domain") or {})
    allowed = set(v.col.domain)
    return {k: c for k, c in decode(s["counts"]).items() if k not in allowed}


def _domain_alert(v: ColumnView, res: Resolved, bad: dict, bad_old: dict, accept: str,
                  where_col: tuple, comparison: Comparison) -> Alert:
    rows = sum(bad.values())
    ranked = sorted(bad.items(), key=lambda kv: (-kv[1], str(kv[0])))
    shown = [(k, c) for k, c in ranked if not v.restricted or c >= v.min_group]
    hidden = [(k, c) for k, c in ranked if v.restricted and c < v.min_group]
    items = [f"{value_label(k)} ({c:,} rows)" for k, c in shown[:5]]
    if len(shown) > 5:
        items.append(f"{len(shown) - 5} more values ({sum(c for _, c in shown[5:]):,} rows)")
    if hidden:
        items.append(f"{len(hidden)} value(s) seen in fewer than {v.min_group} rows each "
                     f"({sum(c for _, c in hidden):,} rows; not shown: restricted dataset)")
    n = v.cand["rows"]
    message = (f"{v.label}: {rows:,} of {n:,} rows ({fmt_share(rows / n if n else 0)}) have values "
               f"outside the declared domain: {', '.join(items)}")
    old_rows = sum(bad_old.values())
    had = "the locked version" if comparison.kind == "drift" else "the training data"
    message += (f"; {had} had {old_rows:,} such rows" if old_rows else f"; {had} had none")
    pos = res.where(*where_col, "domain")
    at = f" ({pos.path}:{pos.line})" if pos else ""
    hints = [accept]
    if shown:
        add = ", ".join(value_label(k) for k, _ in shown[:5])
        hints.append(f"if they are valid values, add {add} to the domain of {v.label}{at}")
    else:
        hints.append(f"review the values with an approved tool (restricted dataset), then extend "
                     f"the domain of {v.label}{at} if they are valid")
    code = comparison.domain
    return Alert(code, v.name, "domain", float(rows), None, None,
                 f"{sum(bad_old.values()):,} rows", f"{rows:,} rows", message,
                 res.diag(code, "", *where_col, "domain"), hints=tuple(hints))



def is_small(count: int, v: ColumnView) -> bool:
    return v.restricted and 0 < count < v.min_group
