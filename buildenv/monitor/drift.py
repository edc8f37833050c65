"""Drift (SPEC §6, `buildenv drift`): the locked version of a dataset against a candidate.

The statistics of both versions come from `statistics` (streaming, bounded memory); `alerts`
compares and judges them, `triage` ranks alerts by the importance of the column in the models
built against the environment, and `public_view` is the only form in which statistics leave the
monitor (restricted datasets: aggregates only). Metrics, over the shared bins (numeric) or the
values (categorical), non-null values only (missing values are judged by `null_fraction`):

- `linf`: L-infinity distance, the largest absolute change of one value's (bin's) frequency, each
  distribution normalized by its own total: TFDV's `infinity_norm`.
- `jsd`: Jensen-Shannon divergence with log base 2, in [0, 1]: TFDV's `jensen_shannon_divergence`
  (TFDV bins numeric features into its own histograms and adds NaN as a bucket; here the bins are
  the baseline deciles and NaN is missing).
- `psi`: population stability index, natural log, empty bins floored at `PSI_EPSILON`.
- `null_fraction`: absolute change of the fraction of null rows.

Alerts on columns no model reads, or whose importance is below `monitoring.min_importance` in
every model, are suppressed and counted. With no model built at all, nothing is suppressed (a
note says so). Rendering (text, JSON, SARIF, HTML) lives in `report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import type_accepts
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import lock_path, read_lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import Column
from buildenv.env.uris import names_directory, uri_problem
from buildenv.monitor.alerts import (
    Alert,
    ColumnView,
    alerts_for,
    compare,
    decode,
    thresholds_for,
)
from buildenv.monitor.label_shares import share_alerts
from buildenv.monitor.public_view import public_column
from buildenv.monitor.statistics import (
    BATCH_ROWS,
    BINS,
    PSI_EPSILON,
    SAMPLE_SIZE,
    Source,
    kind_of,
    profile_pair,
)
from buildenv.monitor.triage import importance_of, model_usage

__all__ = ["DriftResult", "analyse", "drift_check", "run_drift", "write_stats"]

STATS_VERSION = 1


def _check_schema(schema: pa.Schema, columns: dict[str, Column], source: Source, res: Resolved,
                  ds_name: str, what: str) -> tuple[dict[str, Column], list[Diagnostic]]:
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


def _locked_source(project: Project, gate: Gate, env: str, ds_name: str) -> Source:
    """The version of `ds_name` that `env`'s lock pins, opened through the gate (verified
    against the pin as it is read)."""
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
    try:
        read = gate.open(ds_name, uri=pinned.uri, fmt=pinned.format, expect=pinned.pin)
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 2) from None
    return Source(pinned.uri, pinned.format, pinned.digest, pinned.rows,
                  f"locked in {display}", read)


def _candidate_source(project: Project, gate: Gate, ds_name: str, uri: str, fmt: str,
                      what: str = "--against", expect: Any = None) -> Source:
    """Data that no lock pins yet: read as it is, its digest is what the read found (or,
    with `expect`, verified against that pin)."""
    problem = uri_problem(uri, project)
    if problem and problem[0] in ("BE018", "BE066"):
        raise _usage_error(problem[0], f"{what}: {problem[1]}", problem[2])
    try:
        read = gate.open(ds_name, uri=uri, fmt=fmt, expect=expect)
    except GateError as exc:
        raise _usage_error("BE053", f"{what}: {exc.diagnostic.message}") from None
    return Source(uri, fmt, None, None, what, read)


def _format_of(uri: str, default: str) -> str:
    lower = uri.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return default


def run_drift(project: Project, env: str, dataset: str, *, against: str | None = None,
              against_lock: str | None = None, sample_size: int = SAMPLE_SIZE,
              batch_rows: int = BATCH_ROWS, use_cache: bool = True,
              executor: Any = None) -> DriftResult:
    """Compare the locked version of `dataset` in `env` with a candidate; nothing printed."""
    multiverse = Multiverse(project)
    res = multiverse.resolve(env)
    if dataset not in res.env.datasets:
        raise _usage_error("BE009", f"unknown dataset '{dataset}' in environment {env}",
                           did_you_mean(dataset, res.env.datasets))
    if (against is None) == (against_lock is None):
        raise _usage_error("BE004", "drift takes one candidate: --against URI or "
                           "--against-lock ENV")
    declared = res.env.datasets[dataset]
    gate = Gate(project, res.env, "drift", where=res)
    own = multiverse.display(env)
    if against_lock is not None:
        multiverse.require(against_lock)
    baseline = _locked_source(project, gate, env, dataset)
    try:
        if against_lock is not None:
            candidate = _locked_source(project, gate, against_lock, dataset)
            candidate.origin = f"--against-lock {against_lock}: {candidate.origin}"
            accept = (f"if {against_lock}'s version is expected, adopt it: set datasets."
                      f"{dataset}.uri to '{candidate.uri}' in {own}, then run `buildenv lock "
                      f"{env}`")
        else:
            assert against is not None
            candidate = _candidate_source(project, gate, dataset, against,
                                          _format_of(against, declared.format))
            accept = (f"if the new data is expected, accept it: set datasets.{dataset}.uri to "
                      f"'{against}' in {own}, then run `buildenv lock {env}`")
    except BaseException:
        baseline.read.close()
        raise
    return analyse(project, multiverse, res, dataset, baseline, candidate, accept,
                   sample_size=sample_size, batch_rows=batch_rows, use_cache=use_cache,
                   executor=executor)


def drift_check(project: Project, res: Resolved, dataset: str, baseline_uri: str,
                baseline_digest: Any = None, executor: Any = None) -> list[Diagnostic]:
    """For `buildenv retrain`: the locked version at `baseline_uri` against the uri that `res`
    declares now. Writes the statistics file; returns problems and alerts (suppressed ones as
    notes)."""
    multiverse = Multiverse(project)
    declared = res.env.datasets[dataset]
    gate = Gate(project, res.env, "drift", where=res)
    try:
        baseline = _candidate_source(project, gate, dataset, baseline_uri,
                                     _format_of(baseline_uri, declared.format), "baseline",
                                     expect=baseline_digest)
        baseline.digest = getattr(baseline_digest, "digest", baseline_digest)
        candidate = _candidate_source(project, gate, dataset, declared.uri, declared.format,
                                      f"datasets.{dataset}.uri")
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    baseline.origin = "the locked version"
    candidate.origin = f"datasets.{dataset}.uri"
    accept = (f"if the new data is expected, relock: `buildenv lock {res.name}` "
              f"({multiverse.display(res.name)} already points at '{declared.uri}')")
    try:
        result = analyse(project, multiverse, res, dataset, baseline, candidate, accept,
                         executor=executor)
    except DiagnosticError as exc:
        return list(exc.diagnostics)
    write_stats(result, project)
    return [*result.problems, *(a.diagnostic() for a in result.alerts)]


def analyse(project: Project, multiverse: Multiverse, res: Resolved, dataset: str, baseline: Source,
            candidate: Source, accept: str, *, sample_size: int = SAMPLE_SIZE,
            batch_rows: int = BATCH_ROWS, use_cache: bool = True,
            executor: Any = None) -> DriftResult:
    """Statistics of both versions, metrics, alerts, triage and the public view."""
    env = res.name
    declared = res.env.datasets[dataset]
    restricted = res.env.restricted(dataset)
    min_group = res.env.privacy.min_group_size
    problems: list[Diagnostic] = []
    # keys (unique) and `monitor: false` columns are validated, never drift-compared
    columns = {n: c for n, c in declared.columns.items() if c.monitor and not c.unique}
    not_monitored = {n: "unique (a key)" if c.unique else "monitor: false"
                     for n, c in declared.columns.items() if n not in columns}
    for source, what in ((baseline, "locked version"), (candidate, "candidate")):
        try:
            schema = source.read.schema
        except GateError as exc:
            _close(baseline, candidate)
            raise _usage_error("BE053", f"cannot read the {what} of '{dataset}' ({source.uri}): "
                               f"{exc.diagnostic.message}") from None
        columns, found = _check_schema(schema, columns, source, res, dataset, what)
        problems.extend(found)
    cache_dir = project.state_dir / "cache" / "drift" if use_cache else None
    if executor is not None and (names_directory(baseline.uri)
                                 or names_directory(candidate.uri)):
        try:
            executor.prepare()  # the two versions are profiled on two threads
        except BaseException:
            _close(baseline, candidate)
            raise
    try:
        base, cand = profile_pair(baseline, candidate, columns, restricted, min_group,
                                  sample_size, batch_rows, cache_dir, executor)
    except GateError as exc:  # the bytes are not the ones pinned: nothing is reported on them
        raise DiagnosticError([exc.diagnostic], 1) from None
    finally:
        _close(baseline, candidate)
    models, usage = model_usage(project, env, dataset)
    triage_on = bool(models)
    min_importance = res.env.monitoring.min_importance
    alerts: list[Alert] = []
    public_columns = {}
    for name, col in columns.items():
        kind = kind_of(col)
        view = ColumnView(name, dataset, col, kind, base[name], cand[name],
                     compare(base[name], cand[name]), restricted, min_group)
        uses = usage.get(name, [])
        public_columns[name] = public_column(view, thresholds_for(res, dataset, name, kind), res,
                                              uses)
        for alert in alerts_for(view, res, multiverse, accept):
            alert.usage = uses
            alert.importance = importance_of(uses)
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
    label = res.env.label
    if label is not None and label.dataset == dataset and label.column in columns \
            and base[label.column]["kind"] == "categorical":
        alerts += share_alerts(res, f"{dataset}.{label.column}",
                               decode(base[label.column]["counts"]),
                               decode(cand[label.column]["counts"]), restricted, accept)
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
        "triage": triage, "columns": public_columns, "not_monitored": not_monitored,
        "alerts": [a.to_json() for a in alerts],
        "summary": {"alerts": sum(1 for a in alerts if not a.suppressed),
                    "suppressed": sum(1 for a in alerts if a.suppressed)},
        "problems": [p.to_json() for p in problems],
    }
    return DriftResult(env, dataset, baseline, candidate, restricted, alerts, problems, stats,
                       triage)


def _close(*sources: Source) -> None:
    for source in sources:
        if source.read is not None:
            source.read.close()


def default_stats_path(project: Project, result: DriftResult) -> Path:
    assert result.candidate.digest is not None  # describe() set it once the read ended
    digest12 = result.candidate.digest.split(":", 1)[-1][:12]
    return project.state_dir / "drift" / result.environment / f"{result.dataset}-{digest12}.json"


def write_stats(result: DriftResult, project: Project, stats: Path | None = None) -> Path:
    """The statistics file (always written: it is what dashboards and later runs read)."""
    path = stats or default_stats_path(project, result)
    result.stats_path = path
    result.stats["statistics_file"] = project.rel(path)
    atomic_write_text(path, json.dumps(result.stats, indent=2, sort_keys=True,
                                       ensure_ascii=False, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
