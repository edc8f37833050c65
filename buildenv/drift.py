"""Drift (SPEC §6, `buildenv drift`): the locked version of a dataset against a candidate.

The statistics of both versions come from `drift_stats` (streaming, bounded memory). Here they
are compared and judged. Metrics, over the shared bins (numeric) or the values (categorical),
non-null values only (missing values are judged by `null_fraction`):

- `linf`: L-infinity distance, the largest absolute change of one value's (bin's) frequency, each
  distribution normalized by its own total: TFDV's `infinity_norm`.
- `jsd`: Jensen-Shannon divergence with log base 2, in [0, 1]: TFDV's `jensen_shannon_divergence`
  (TFDV bins numeric features into its own histograms and adds NaN as a bucket; here the bins are
  the baseline deciles and NaN is missing).
- `psi`: population stability index, natural log, empty bins floored at `PSI_EPSILON`.
- `null_fraction`: absolute change of the fraction of null rows.

Thresholds: per statistic, `monitoring.drift.columns.<col>.<stat>` when set, else the categorical
(string, bool) or numeric default; every alert is located at the YAML line of the threshold it
crossed (the column declaration for a built-in default). Triage reads the lineage of every model
built against the environment (`dist/*/<env>/buildenv.json`): alerts are ranked by the largest
importance of the column in those models; alerts on columns no model reads, or whose importance
is below `monitoring.min_importance` in every model, are suppressed and counted. With no model
built at all, nothing is suppressed (a note says so).

Privacy (restricted datasets): everything that leaves this module -- alert messages, the
statistics file, text, JSON, SARIF and HTML -- is built from a *public view*: categorical values
seen fewer than `privacy.min_group_size` times in a version are merged into "(other)" (and in
messages named only where they reach that size); numeric columns have no min/max, their
quantiles (only p10..p90, and only those with at least min_group_size rows beyond them) and bin
edges are rounded to 2 significant digits (dates to the month, timestamps to the day), there are
at most count/min_group_size bins, histogram cells below min_group_size are withheld, and
mean/std are omitted below min_group_size values.

Rendering (text, JSON, SARIF, HTML) lives in `drift_report`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .diagnostics import Diagnostic, DiagnosticError, Severity, did_you_mean
from .drift_stats import (
    BATCH_ROWS,
    BINS,
    EPOCH,
    PSI_EPSILON,
    RESTRICTED_QUANTILES,
    SAMPLE_SIZE,
    Source,
    coarse,
    jsd,
    kind_of,
    linf,
    open_batches,
    profile_pair,
    psi,
)
from .fsutil import atomic_write_text
from .project import Project
from .resolve import Multiverse, Resolved
from .spec import TEMPORAL_DTYPES, Column
from .storage import locate

__all__ = ["BATCH_ROWS", "BINS", "SAMPLE_SIZE", "Alert", "DriftResult", "Usage", "analyse",
           "drift_check", "jsd", "linf", "psi", "run_drift", "write_outputs"]

STATS_VERSION = 1
OTHER = "(other)"
_STATS = ("linf", "jsd", "psi", "null_fraction")
STAT_NAMES = {"linf": "L∞", "jsd": "JSD", "psi": "PSI", "null_fraction": "null-fraction change",
              "domain": "values outside the domain"}


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


# --- formatting in the column's own units ----------------------------------------------------

def fmt_number(value: float | None, dtype: str = "float64", decimals: int | None = None) -> str:
    """A value in the column's own units: dates and times as ISO text, numbers with 4
    significant digits (or `decimals` places)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if dtype == "date":
        return (EPOCH + dt.timedelta(days=int(round(value)))).isoformat()
    if dtype == "timestamp":
        moment = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M") + "Z"
    if decimals is not None and abs(value) < 1e9:
        return f"{value:,.{decimals}f}"
    return _plain(value)


def decimals_for(*values: float) -> int:
    """Decimal places that show the largest of `values` with 4 significant digits."""
    peak = max((abs(v) for v in values if v), default=0.0)
    if peak == 0:
        return 0
    return min(6, max(0, 3 - int(math.floor(math.log10(peak)))))


def _plain(value: float, digits: int = 4) -> str:
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


def fmt_delta(value: float, dtype: str, decimals: int | None = None) -> str:
    sign = "+" if value >= 0 else "-"
    size = abs(value)
    if dtype == "date":
        return f"{sign}{_plain(size, 3)} days"
    if dtype == "timestamp":
        for unit, seconds in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if size >= seconds:
                return f"{sign}{_plain(size / seconds, 3)} {unit}"
        return f"{sign}{_plain(size, 3)} s"
    return f"{sign}{fmt_number(size, dtype, decimals)}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:+.1f}%" if abs(ratio) < 0.1 else f"{ratio * 100:+.0f}%"


def fmt_stat(value: float, against: float | None = None) -> str:
    """A statistic, with enough digits to differ visibly from `against` (the threshold)."""
    for digits in range(3, 8):
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


# --- thresholds ------------------------------------------------------------------------------

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


def thresholds_for(res: Resolved, ds_name: str, col_name: str, kind: str
                   ) -> dict[str, Threshold]:
    """Per statistic: the column's override if set, else the categorical/numeric default."""
    drift = res.env.monitoring.drift
    default = drift.categorical if kind == "categorical" else drift.numeric
    override = drift.columns.get(col_name)
    out = {}
    for stat in _STATS:
        if override is not None and getattr(override, stat) is not None:
            path = ("monitoring", "drift", "columns", col_name, stat)
            out[stat] = Threshold(stat, getattr(override, stat), path, True, True)
        elif getattr(default, stat) is not None:
            path = ("monitoring", "drift", kind, stat)
            written = path in res.origin
            if not written:
                path = ("datasets", ds_name, "columns", col_name)
            out[stat] = Threshold(stat, getattr(default, stat), path, written, False)
    return out


# --- comparison ------------------------------------------------------------------------------

def _decode(counts: dict[str, int]) -> dict[Any, int]:
    return {json.loads(k): v for k, v in counts.items()}


def _compare(base: dict, cand: dict) -> dict:
    """Metrics of one column; `vectors` keeps the aligned counts for messages and plots."""
    out: dict[str, Any] = {}
    nf_old = base["nulls"] / base["rows"] if base["rows"] else 0.0
    nf_new = cand["nulls"] / cand["rows"] if cand["rows"] else 0.0
    out["null_fraction"] = abs(nf_new - nf_old)
    if base["kind"] == "categorical":
        old, new = _decode(base["counts"]), _decode(cand["counts"])
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


# --- triage ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """A model built against the environment that reads a column."""

    training: str
    environment: str
    importance: float | None = None
    rank: int | None = None
    of: int = 0
    label: bool = False

    def describe(self) -> str:
        who = f"{self.training}@{self.environment}"
        if self.label:
            return f"{who} (the label)"
        if self.importance is None:
            return f"{who} (importance unknown)"
        return f"{who} (importance {self.importance:.2f}, rank {self.rank} of {self.of})"


def model_usage(project: Project, env: str, ds_name: str
                ) -> tuple[list[str], dict[str, list[Usage]]]:
    """Models in dist/*/<env>/buildenv.json, and per column of `ds_name` those that use it."""
    from .artifact import read_lineage

    models: list[str] = []
    usage: dict[str, list[Usage]] = {}
    for lineage_file in sorted((project.root / "dist").glob(f"*/{env}/buildenv.json")):
        lineage = read_lineage(lineage_file.parent)
        if not lineage or lineage.get("environment", env) != env:
            continue
        training = str(lineage.get("training") or lineage_file.parent.parent.name)
        models.append(f"{training}@{env}")
        read = (lineage.get("datasets") or {}).get(ds_name)
        columns_read = set(read.get("columns_read") or []) if isinstance(read, dict) else None
        features = ((lineage.get("importance") or {}).get("features") or {})
        for column in lineage.get("inputs") or []:
            if columns_read is not None and column not in columns_read:
                continue
            info = features.get(column) or {}
            importance = info.get("importance")
            usage.setdefault(column, []).append(Usage(
                training, env, float(importance) if importance is not None else None,
                info.get("rank"), len(features)))
        label = lineage.get("label") or {}
        if label.get("dataset") == ds_name and label.get("column"):
            usage.setdefault(label["column"], []).append(Usage(training, env, label=True))
    return models, usage


def _importance(usages: list[Usage]) -> float | None:
    """The largest importance among the models (labels count as 1); None when unknown."""
    if any(u.label for u in usages):
        return 1.0
    known = [u.importance for u in usages if u.importance is not None]
    return max(known) if known else None


# --- alerts ----------------------------------------------------------------------------------

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
class _View:
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
        return _decode((self.base if which == "old" else self.cand)["counts"])

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
        value = _qget(qs, 0.5)
        if value is None or (self.restricted and s["count"] * 0.5 < self.min_group):
            return None
        return coarse(value, self.col.dtype) if self.restricted else value


def _qget(qs: dict, q: float) -> float | None:
    for k, v in qs.items():
        if abs(float(k) - q) < 1e-9:
            return v
    return None


def _distribution_text(v: _View) -> tuple[str, str, str]:
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
            rel = f", {_percent(delta / abs(old_mean))}" if old_mean else ""
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
            shares.append(f"fewer than {v.min_group} rows" if _small(c, v)
                          else fmt_share(c / counts.sum()))
        parts.append(f"largest change in {bin_label(at, v.base['edges'], dtype)}: "
                     f"{shares[0]} → {shares[1]} of values")
    return "; ".join(parts) or "distribution changed", old_t, new_t


def _threshold_text(res: Resolved, thr: Threshold, value: float, kind: str) -> str:
    head = f"{STAT_NAMES[thr.stat]} {fmt_stat(value, thr.value)} > {fmt_stat(thr.value)}"
    if not thr.written:
        return f"{head} (built-in default for {kind} columns)"
    pos = res.where(*thr.path)
    at = f" at {pos.path}:{pos.line}" if pos else ""
    return f"{head} ({thr.key}{at})"


def _threshold_hint(res: Resolved, mv: Multiverse, thr: Threshold, value: float, column: str
                    ) -> str:
    new = _suggest(value, thr.stat != "psi")
    own = mv.display(res.name)
    pos = res.where(*thr.path) if thr.written else None
    if thr.per_column and pos is not None and pos.path == own:
        return f"or raise the threshold: `{thr.stat}: {new}` at {own}:{pos.line}"
    origin = f", from {pos.path}:{pos.line}" if pos is not None else ", the built-in default"
    return (f"or allow it in {res.name}: set monitoring.drift.columns.{column}.{thr.stat} to "
            f"{new} in {own} (now {fmt_stat(thr.value)}{origin})")


def _alerts_for(v: _View, res: Resolved, mv: Multiverse, accept: str) -> list[Alert]:
    alerts: list[Alert] = []
    where_col = ("datasets", v.ds, "columns", v.name)
    for stat, thr in thresholds_for(res, v.ds, v.name, v.kind).items():
        value = v.metrics.get(stat)
        if value is None or value <= thr.value:
            continue
        if stat == "null_fraction":
            code = "BE604"
            nf_old = v.base["nulls"] / v.base["rows"] if v.base["rows"] else 0.0
            nf_new = v.cand["nulls"] / v.cand["rows"] if v.cand["rows"] else 0.0
            verb = "rose" if nf_new >= nf_old else "fell"
            old, new = fmt_share(nf_old), fmt_share(nf_new)
            text = (f"null fraction {verb} {old} → {new} "
                    f"({(nf_new - nf_old) * 100:+.1f} points)")
        else:
            code = "BE601" if v.kind == "categorical" else "BE602"
            text, old, new = _distribution_text(v)
        message = f"{v.label}: {text}; {_threshold_text(res, thr, value, v.kind)}"
        alerts.append(Alert(code, v.name, stat, value, thr.value,
                            thr.key if thr.written else None, old, new, message,
                            res.diag(code, "", *thr.path),
                            hints=(accept, _threshold_hint(res, mv, thr, value, v.name))))
    bad_new, bad_old = _out_of_domain_counts(v, "new"), _out_of_domain_counts(v, "old")
    if bad_new:
        alerts.append(_domain_alert(v, res, mv, bad_new, bad_old, accept, where_col))
    return alerts


def _out_of_domain_counts(v: _View, which: str) -> dict[Any, int]:
    s = v.base if which == "old" else v.cand
    if v.col.domain is None:
        return {}
    if v.kind == "numeric":
        return _decode(s.get("out_of_domain") or {})
    allowed = set(v.col.domain)
    return {k: c for k, c in _decode(s["counts"]).items() if k not in allowed}


def _domain_alert(v: _View, res: Resolved, mv: Multiverse, bad: dict, bad_old: dict, accept: str,
                  where_col: tuple) -> Alert:
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
    message += (f"; the locked version had {old_rows:,} such rows" if old_rows else
                "; the locked version had none")
    pos = res.where(*where_col, "domain")
    at = f" ({pos.path}:{pos.line})" if pos else ""
    hints = [accept]
    if shown:
        add = ", ".join(value_label(k) for k, _ in shown[:5])
        hints.append(f"if they are valid values, add {add} to the domain of {v.label}{at}")
    else:
        hints.append(f"review the values with an approved tool (restricted dataset), then extend "
                     f"the domain of {v.label}{at} if they are valid")
    return Alert("BE603", v.name, "domain", float(rows), None, None,
                 f"{sum(bad_old.values()):,} rows", f"{rows:,} rows", message,
                 res.diag("BE603", "", *where_col, "domain"), hints=tuple(hints))


# --- the public view (privacy-aware; the only thing that leaves this module) -----------------

def _small(count: int, v: _View) -> bool:
    return v.restricted and 0 < count < v.min_group


def _public_side(v: _View, which: str) -> dict:
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
            "counts": [None if _small(int(c), v) else int(c) for c in counts],
            "fractions": [None if _small(int(c), v) else (float(c / total) if total else 0.0)
                          for c in counts]}
        if dtype in TEMPORAL_DTYPES:
            out["encoding"] = ("days since 1970-01-01" if dtype == "date"
                               else "seconds since 1970-01-01T00:00:00Z")
        if s.get("out_of_domain"):
            out["out_of_domain"] = _public_values(_decode(s["out_of_domain"]), s["count"], v)
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


def _public_values(counts: dict[Any, int], n: int, v: _View) -> dict:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    shown = [(k, c) for k, c in ranked if not (v.restricted and c < v.min_group)]
    hidden = [c for _, c in ranked if v.restricted and c < v.min_group]
    out: dict[str, Any] = {"values": [{"value": k, "count": c, "fraction": c / n if n else None}
                                      for k, c in shown]}
    if hidden:
        out["other"] = {"label": OTHER, "count": sum(hidden), "values": len(hidden),
                        "fraction": sum(hidden) / n if n else None}
    return out


def _public_column(v: _View, thresholds: dict[str, Threshold], res: Resolved,
                   usage: list[Usage]) -> dict:
    metrics: dict[str, Any] = {k: v.metrics.get(k) for k in _STATS}
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
            "importance": _importance(usage), "used_by": [u.describe() for u in usage],
            "baseline": _public_side(v, "old"), "candidate": _public_side(v, "new")}


# --- the command -----------------------------------------------------------------------------

@dataclass
class DriftResult:
    environment: str
    dataset: str
    baseline: Source
    candidate: Source
    restricted: bool
    alerts: list[Alert]  # ranked: active first (most important first), then suppressed
    problems: list[Diagnostic]
    stats: dict
    triage: dict
    stats_path: Path | None = None

    @property
    def active(self) -> list[Alert]:
        return [a for a in self.alerts if not a.suppressed]

    @property
    def suppressed(self) -> list[Alert]:
        return [a for a in self.alerts if a.suppressed]

    @property
    def exit_code(self) -> int:
        return 1 if self.active or any(p.is_error for p in self.problems) else 0


def _usage_error(code: str, message: str, hint: str | None = None) -> DiagnosticError:
    return DiagnosticError([Diagnostic(code, message, hints=(hint,) if hint else ())], 2)


def _locked_source(project: Project, mv: Multiverse, env: str, ds_name: str) -> Source:
    from .content import digest_location
    from .lock import lock_path, read_lock, stat_cache

    lock = read_lock(project, env)
    display = project.rel(lock_path(project, env))
    if lock is None:
        raise _usage_error("BE050", f"environment '{env}' has no lock ({display}): drift "
                           "compares against the locked version of a dataset",
                           f"run `buildenv lock {env}`")
    pinned = lock.datasets.get(ds_name)
    if pinned is None:
        raise _usage_error("BE052", f"the lock of '{env}' pins no dataset '{ds_name}' "
                           f"({display})", f"run `buildenv lock {env}`")
    location = locate(pinned.uri, project)
    cache = stat_cache(project)
    try:
        now = digest_location(location, pinned.format, pinned.digest.split(":", 1)[0], cache)
    except (OSError, ValueError) as exc:
        raise _usage_error("BE053", f"dataset '{ds_name}' of '{env}': cannot read the locked "
                           f"version '{pinned.uri}': {exc}") from None
    cache.save()
    if now.digest != pinned.digest:
        raise _usage_error("BE051", f"dataset '{ds_name}' changed since '{env}' was locked: "
                           f"{pinned.digest} -> {now.digest} ({pinned.uri}); the locked version "
                           "is gone, so there is no baseline to compare with",
                           f"restore the pinned file, or run `buildenv lock {env}`")
    return Source(pinned.uri, pinned.format, pinned.digest, pinned.rows,
                  f"locked in {display}", location)


def _candidate_source(project: Project, uri: str, fmt: str, algorithm: str) -> Source:
    from .content import digest_location
    from .lock import stat_cache
    from .storage import uri_problem

    problem = uri_problem(uri, project)
    if problem and problem[0] == "BE018":
        raise _usage_error(problem[0], f"--against: {problem[1]}", problem[2])
    location = locate(uri, project)
    cache = stat_cache(project)
    try:
        found = digest_location(location, fmt, algorithm, cache)
    except FileNotFoundError:
        raise _usage_error("BE053", f"--against: '{uri}' not found") from None
    except (OSError, ValueError) as exc:
        raise _usage_error("BE053", f"--against: cannot read '{uri}' as {fmt}: "
                           f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
    cache.save()
    return Source(uri, fmt, found.digest, found.rows, "--against", location)


def _format_of(uri: str, default: str) -> str:
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return default


def run_drift(project: Project, env: str, dataset: str, *, against: str | None = None,
              against_lock: str | None = None, sample_size: int = SAMPLE_SIZE,
              batch_rows: int = BATCH_ROWS, use_cache: bool = True) -> DriftResult:
    """Compare the locked version of `dataset` in `env` with a candidate; nothing printed."""
    mv = Multiverse(project)
    res = mv.resolve(env)
    if dataset not in res.env.datasets:
        raise _usage_error("BE009", f"unknown dataset '{dataset}' in environment {env}",
                           did_you_mean(dataset, res.env.datasets))
    if (against is None) == (against_lock is None):
        raise _usage_error("BE004", "drift takes one candidate: --against URI or "
                           "--against-lock ENV")
    declared = res.env.datasets[dataset]
    baseline = _locked_source(project, mv, env, dataset)
    algorithm = baseline.digest.split(":", 1)[0]
    own = mv.display(env)
    if against_lock is not None:
        mv.require(against_lock)
        candidate = _locked_source(project, mv, against_lock, dataset)
        candidate.origin = f"--against-lock {against_lock}: {candidate.origin}"
        accept = (f"if {against_lock}'s version is expected, adopt it: set datasets.{dataset}.uri "
                  f"to '{candidate.uri}' in {own}, then run `buildenv lock {env}`")
    else:
        assert against is not None
        candidate = _candidate_source(project, against, _format_of(against, declared.format),
                                      algorithm)
        accept = (f"if the new data is expected, accept it: set datasets.{dataset}.uri to "
                  f"'{against}' in {own}, then run `buildenv lock {env}`")
    return analyse(project, mv, res, dataset, baseline, candidate, accept,
                   sample_size=sample_size, batch_rows=batch_rows, use_cache=use_cache)


def drift_check(project: Project, res: Resolved, dataset: str, baseline_uri: str
                ) -> list[Diagnostic]:
    """For `buildenv retrain`: the locked version at `baseline_uri` against the uri that `res`
    declares now. Writes the statistics file; returns problems and alerts (suppressed ones as
    notes)."""
    mv = Multiverse(project)
    declared = res.env.datasets[dataset]
    try:
        baseline = _candidate_source(project, baseline_uri,
                                     _format_of(baseline_uri, declared.format), "sha256")
        candidate = _candidate_source(project, declared.uri, declared.format, "sha256")
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    baseline.origin = "the locked version"
    candidate.origin = f"datasets.{dataset}.uri"
    accept = (f"if the new data is expected, relock: `buildenv lock {res.name}` "
              f"({mv.display(res.name)} already points at '{declared.uri}')")
    try:
        result = analyse(project, mv, res, dataset, baseline, candidate, accept)
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    write_outputs(result, project)
    return [*result.problems, *(a.diagnostic() for a in result.alerts)]


def analyse(project: Project, mv: Multiverse, res: Resolved, dataset: str, baseline: Source,
            candidate: Source, accept: str, *, sample_size: int = SAMPLE_SIZE,
            batch_rows: int = BATCH_ROWS, use_cache: bool = True) -> DriftResult:
    """Statistics of both versions, metrics, alerts, triage and the public view."""
    env = res.name
    declared = res.env.datasets[dataset]
    restricted = res.env.restricted(dataset)
    min_group = res.env.privacy.min_group_size
    problems: list[Diagnostic] = []
    columns = dict(declared.columns)
    for source, what in ((baseline, "locked version"), (candidate, "candidate")):
        try:
            schema, _ = open_batches(source, columns, batch_rows)
        except (OSError, pa.ArrowInvalid) as exc:
            raise _usage_error("BE053", f"cannot read the {what} of '{dataset}' ({source.uri}): "
                               f"{str(exc).splitlines()[0]}") from None
        columns, found = _check_schema(schema, columns, source, res, dataset, what)
        problems.extend(found)
    cache_dir = project.state_dir / "cache" / "drift" if use_cache else None
    base, cand = profile_pair(baseline, candidate, columns, restricted, min_group, sample_size,
                               batch_rows, cache_dir)
    models, usage = model_usage(project, env, dataset)
    triage_on = bool(models)
    min_importance = res.env.monitoring.min_importance
    alerts: list[Alert] = []
    public_columns = {}
    for name, col in columns.items():
        kind = kind_of(col)
        view = _View(name, dataset, col, kind, base[name], cand[name],
                     _compare(base[name], cand[name]), restricted, min_group)
        uses = usage.get(name, [])
        public_columns[name] = _public_column(view, thresholds_for(res, dataset, name, kind), res,
                                              uses)
        for alert in _alerts_for(view, res, mv, accept):
            alert.usage = uses
            alert.importance = _importance(uses)
            if triage_on:
                if not uses:
                    alert.suppressed = "unused"
                    alert.suppressed_why = (f"no model built against {env} takes {name} as "
                                            "an input")
                elif alert.importance is not None and alert.importance < min_importance:
                    alert.suppressed = "unimportant"
                    alert.suppressed_why = (f"importance {alert.importance:.3g} < min_importance "
                                            f"{min_importance:g}")
                used = "; ".join(u.describe() for u in uses)
                alert.hints = ((f"used by {used}",) if uses else ()) + alert.hints
            alerts.append(alert)
    alerts.sort(key=lambda a: (a.suppressed is not None,
                               -(a.importance if a.importance is not None else min_importance),
                               -a.ratio, a.column, a.statistic))
    triage = {"enabled": triage_on, "models": models, "min_importance": min_importance,
              "note": None if triage_on else
              f"no model is built against {env} (dist/*/{env}/buildenv.json): alerts are not "
              "triaged by importance"}
    stats = {
        "format_version": STATS_VERSION, "environment": env, "dataset": dataset,
        "restricted": restricted, "min_group_size": min_group,
        "baseline": baseline.describe(), "candidate": candidate.describe(),
        "method": {"bins": f"baseline deciles (at most {BINS} bins, open-ended)",
                   "sample_size": sample_size, "jsd_log_base": 2, "psi_log": "natural",
                   "psi_epsilon": PSI_EPSILON, "batch_rows": batch_rows,
                   "quantiles": "from a uniform sample (exact when every value fits in it)"},
        "triage": triage, "columns": public_columns,
        "alerts": [a.to_json() for a in alerts],
        "summary": {"alerts": sum(1 for a in alerts if not a.suppressed),
                    "suppressed": sum(1 for a in alerts if a.suppressed)},
        "problems": [p.to_json() for p in problems],
    }
    return DriftResult(env, dataset, baseline, candidate, restricted, alerts, problems, stats,
                       triage)


def default_stats_path(project: Project, result: DriftResult) -> Path:
    digest12 = result.candidate.digest.split(":", 1)[-1][:12]
    return project.state_dir / "drift" / result.environment / f"{result.dataset}-{digest12}.json"


def write_outputs(result: DriftResult, project: Project, stats: Path | None = None,
                  html: Path | None = None) -> None:
    """Always the statistics file; the HTML page when asked."""
    path = stats or default_stats_path(project, result)
    result.stats_path = path
    result.stats["statistics_file"] = project.rel(path)
    atomic_write_text(path, json.dumps(result.stats, indent=2, sort_keys=True,
                                       ensure_ascii=False, default=_json_default) + "\n")
    if html is not None:
        from .drift_report import render_html

        atomic_write_text(html, render_html(result))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
