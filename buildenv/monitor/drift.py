"""Drift (SPEC §6, `buildenv drift`): the locked version of a dataset against a candidate; and
training/serving skew (`buildenv skew`, `run_skew`): the locked version, as training saw it,
against serving data, with `monitoring.skew`'s thresholds, on served columns only, optionally
joined on a key (`feature_skew`). Both are one `analyse`, told apart by a `Comparison`.

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
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import format_of, type_accepts
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.lockfile import lock_path, read_lock
from buildenv.data.validate.serving import serving_columns, training_only_present
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
from buildenv.monitor.comparison import DRIFT, SKEW, Comparison
from buildenv.monitor.feature_skew import RTOL, Mismatches, count_mismatches
from buildenv.monitor.label_shares import share_alerts
from buildenv.monitor.public_view import public_column
from buildenv.monitor.skew_alerts import mismatch_alerts, mismatch_view
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

__all__ = ["DriftResult", "analyse", "drift_check", "run_drift", "run_skew", "write_stats"]

STATS_VERSION = 1


def _check_schema(schema: pa.Schema, columns: dict[str, Column], source: Source, res: Resolved,
                  ds_name: str, what: str, comparison: Comparison = DRIFT,
                  serving: bool = False) -> tuple[dict[str, Column], list[Diagnostic]]:
    """The columns both versions can be compared on; a column one lacks is BE206 (`serving`:
    `source` is serving data, BE212), nothing when it is `required: false`."""
    usable, problems = {}, []
    report = f"{comparison.kind} report"
    for name, col in columns.items():
        where = ("datasets", ds_name, "columns", name)
        if name not in schema.names:
            if not col.required:  # may be absent: nothing to compare
                continue
            hint = did_you_mean(name, schema.names)
            problems.append(res.diag("BE212" if serving else "BE206",
                                     f"{ds_name}.{name}: the {what} ({source.uri}) has no such "
                                     f"column; it is left out of the {report}", *where,
                                     hints=(hint,) if hint else ()))
        elif not type_accepts(col.dtype, schema.field(name).type):
            problems.append(res.diag("BE201", f"{ds_name}.{name}: declared {col.dtype}, stored "
                                     f"as {schema.field(name).type} in the {what} "
                                     f"({source.uri}); it is left out of the {report}",
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
    comparison: Comparison = DRIFT  # drift, or training/serving skew

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
    problem = None if gate.env.datasets[ds_name].is_table else uri_problem(uri, project)
    if problem and problem[0] in ("BE018", "BE066"):
        raise _usage_error(problem[0], f"{what}: {problem[1]}", problem[2])
    try:
        read = gate.open(ds_name, uri=uri, fmt=fmt, expect=expect)
    except GateError as exc:
        raise _usage_error("BE053", f"{what}: {exc.diagnostic.message}") from None
    return Source(uri, fmt, None, None, what, read)


def run_drift(project: Project, env: str, dataset: str, *, against: str | None = None,
              against_lock: str | None = None, serving: str | None = None,
              sample_size: int = SAMPLE_SIZE, batch_rows: int = BATCH_ROWS,
              use_cache: bool = True, executor: Any = None) -> DriftResult:
    """Compare the locked version of `dataset` in `env` with a candidate (or, `serving`, with
    serving data: its served columns only); nothing printed."""
    multiverse = Multiverse(project)
    res = multiverse.resolve(env)
    if dataset not in res.env.datasets:
        raise _usage_error("BE009", f"unknown dataset '{dataset}' in environment {env}",
                           did_you_mean(dataset, res.env.datasets))
    if sum(x is not None for x in (against, against_lock, serving)) != 1:
        raise _usage_error("BE004", "drift takes one candidate: --against URI, "
                           "--against-lock ENV or --serving URI")
    if serving is not None:
        return run_skew(project, env, dataset, serving, sample_size=sample_size,
                        batch_rows=batch_rows, use_cache=use_cache, executor=executor,
                        comparison=DRIFT.on_serving_data())
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
                                          format_of(against, declared.format))
            accept = (f"if the new data is expected, accept it: set datasets.{dataset}.uri to "
                      f"'{against}' in {own}, then run `buildenv lock {env}`"
                      if against != declared.uri else
                      f"if the new data is expected, accept it: run `buildenv lock {env}`")
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
                                     format_of(baseline_uri, declared.format), "baseline",
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


def run_skew(project: Project, env: str, dataset: str, serving: str, *,
             key: list[str] | None = None, sample_size: int = SAMPLE_SIZE,
             batch_rows: int = BATCH_ROWS, use_cache: bool = True, executor: Any = None,
             comparison: Comparison = SKEW) -> DriftResult:
    """Training/serving skew: the locked version of `dataset` in `env` against serving data,
    per served column, with `monitoring.skew`'s thresholds (`comparison`: drift's, for
    `drift --serving`); `key` joins the two for feature-value skew. Nothing printed."""
    multiverse = Multiverse(project)
    res = multiverse.resolve(env)
    if dataset not in res.env.datasets:
        raise _usage_error("BE009", f"unknown dataset '{dataset}' in environment {env}",
                           did_you_mean(dataset, res.env.datasets))
    declared = res.env.datasets[dataset]
    for name in key or []:
        if name not in declared.columns:
            raise _usage_error("BE010", f"--key: dataset '{dataset}' declares no column "
                               f"'{name}'", did_you_mean(name, declared.columns))
    gate = Gate(project, res.env, comparison.kind, where=res)
    baseline = _locked_source(project, gate, env, dataset)
    try:
        candidate = _candidate_source(project, gate, dataset, serving,
                                      format_of(serving, "parquet"), "--serving")
    except BaseException:
        baseline.read.close()
        raise
    baseline.origin = f"training data, {baseline.origin}"
    candidate.origin = "serving data (--serving)"
    accept = (f"if serving is right, train on data like it: point datasets.{dataset}.uri in "
              f"{multiverse.display(env)} at such data and run `buildenv lock {env}`")
    return analyse(project, multiverse, res, dataset, baseline, candidate, accept,
                   sample_size=sample_size, batch_rows=batch_rows, use_cache=use_cache,
                   executor=executor, comparison=comparison, key=key)


def analyse(project: Project, multiverse: Multiverse, res: Resolved, dataset: str, baseline: Source,
            candidate: Source, accept: str, *, sample_size: int = SAMPLE_SIZE,
            batch_rows: int = BATCH_ROWS, use_cache: bool = True,
            executor: Any = None, comparison: Comparison = DRIFT,
            key: list[str] | None = None) -> DriftResult:
    """Statistics of both versions, metrics, alerts, triage and the public view."""
    env = res.name
    restricted = res.env.restricted(dataset)
    min_group = res.env.privacy.min_group_size
    columns, not_monitored, problems = _compared_columns(res, dataset, baseline, candidate,
                                                         comparison)
    cache_dir = project.state_dir / "cache" / "drift" if use_cache else None
    if executor is not None and (names_directory(baseline.uri)
                                 or names_directory(candidate.uri)):
        try:
            executor.prepare()  # the two versions are profiled on two threads
        except BaseException:
            _close(baseline, candidate)
            raise
    joined = None
    try:
        base, cand = profile_pair(baseline, candidate, columns, restricted, min_group,
                                  sample_size, batch_rows, cache_dir, executor)
        if key:
            joined = _join(baseline, candidate, key, columns, restricted, batch_rows)
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
        thresholds = thresholds_for(res, dataset, name, kind, comparison.kind)
        public_columns[name] = public_column(view, thresholds, res, uses)
        found_alerts = alerts_for(view, res, multiverse, accept, comparison)
        if joined is not None and name in joined.differ:
            _record_mismatch(public_columns[name], joined, name)
            found_alerts += mismatch_alerts(view, joined, key or [], thresholds.get("mismatch"),
                                            res, multiverse, accept)
        for alert in found_alerts:
            _triage(alert, uses, name, env, min_importance if triage_on else None)
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
    if joined is not None and not joined.joined:
        problems.append(res.diag(
            "BE616", f"{dataset}: no serving row has a key ({', '.join(key or [])}) that the "
            f"training data has ({joined.serving_rows} serving rows); feature-value skew was "
            "not measured", "datasets", dataset, "columns", (key or [""])[0],
            severity=Severity.WARNING))
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
    if comparison != DRIFT:  # drift's statistics files keep their keys
        stats["comparison"] = {"kind": comparison.kind, "baseline": comparison.baseline,
                               "candidate": comparison.candidate}
        if key:
            stats["join"] = {"key": key, "serving_rows": joined.serving_rows if joined else 0,
                             "joined": joined.joined if joined else 0, "rtol": RTOL}
    return DriftResult(env, dataset, baseline, candidate, restricted, alerts, problems, stats,
                       triage, comparison=comparison)


def _compared_columns(res: Resolved, dataset: str, baseline: Source, candidate: Source,
                      comparison: Comparison
                      ) -> tuple[dict[str, Column], dict[str, str], list[Diagnostic]]:
    """The columns both sides can be compared on, why the others are not, and the problems
    of each side's columns. Keys (unique) and `monitor: false` columns are validated, never
    compared; serving data is compared on served columns only."""
    declared = res.env.datasets[dataset]
    entries = serving_columns(res.env, [dataset])
    training_only = {n for n, e in entries.items() if not e.served}
    columns = {n: c for n, c in declared.columns.items() if c.monitor and not c.unique
               and not (comparison.serving and n in training_only)}
    not_monitored = {n: "unique (a key)" if c.unique else "monitor: false" if not c.monitor
                     else "training-only" for n, c in declared.columns.items()
                     if n not in columns}
    problems: list[Diagnostic] = []
    sides = ((baseline, f"{comparison.baseline} version" if comparison.kind == "drift"
              else "training data", False),
             (candidate, "serving data" if comparison.serving else "candidate",
              comparison.serving))
    for source, what, serving in sides:
        try:
            schema = source.read.schema
        except GateError as exc:
            _close(baseline, candidate)
            raise _usage_error("BE053", f"cannot read the {what} of '{dataset}' ({source.uri}): "
                               f"{exc.diagnostic.message}") from None
        columns, found = _check_schema(schema, columns, source, res, dataset, what, comparison,
                                       serving)
        problems.extend(found)
        if serving:
            problems.extend(training_only_present(res, entries[n], source.uri)
                            for n in sorted(training_only) if n in schema.names)
    return columns, not_monitored, problems


def _record_mismatch(public: dict, joined: Mismatches, name: str) -> None:
    """The join's counts in a column's public view, and whether `mismatch` was crossed."""
    seen = public["mismatch"] = mismatch_view(joined, name)
    public["metrics"]["mismatch"] = seen["fraction"]
    limit = public["thresholds"].get("mismatch")
    if limit is not None and seen["fraction"] is not None:
        limit["crossed"] = seen["fraction"] > limit["value"]


def _triage(alert: Alert, uses: list, name: str, env: str, min_importance: float | None
            ) -> None:
    """Rank an alert by the importance of its column; with models built (`min_importance`
    set), suppress it when no model takes the column or it matters too little."""
    alert.usage = uses
    alert.importance = importance_of(uses)
    if min_importance is None:
        return
    if not uses:
        alert.suppressed = "unused"
        alert.suppressed_why = f"no model built against {env} takes {name} as an input"
    elif alert.importance is not None and alert.importance < min_importance:
        alert.suppressed = "unimportant"
        alert.suppressed_why = (f"importance {alert.importance:.3g} < min_importance "
                                f"{min_importance:g}")
    used = "; ".join(u.describe() for u in uses)
    alert.hints = ((f"used by {used}",) if uses else ()) + alert.hints


def _join(baseline: Source, candidate: Source, key: list[str], columns: dict[str, Column],
          restricted: bool, batch_rows: int) -> Mismatches:
    """Feature-value skew: the serving data (key and columns) in memory, joined to the
    training data streamed in batches (verified again as it is read)."""
    compared = {n: c for n, c in columns.items() if n not in key}
    wanted = list(dict.fromkeys([*key, *compared]))
    serving = candidate.read.table(wanted)
    strings = [n for n in wanted if n in columns and columns[n].dtype == "string"]
    batches = baseline.read.batches(wanted, batch_rows=batch_rows, dictionary=strings)
    return count_mismatches(batches, serving, key, compared, keep_examples=not restricted)


def _close(*sources: Source) -> None:
    for source in sources:
        if source.read is not None:
            source.read.close()


def default_stats_path(project: Project, result: DriftResult) -> Path:
    assert result.candidate.digest is not None  # describe() set it once the read ended
    digest12 = result.candidate.digest.split(":", 1)[-1][:12]
    return (project.state_dir / result.comparison.kind / result.environment
            / f"{result.dataset}-{digest12}.json")


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
