"""Drift of label distributions: class shares of two label-set versions, as a categorical column.

`buildenv drift ENV --labels NAME` compares the resolved labels (after majority vote and reuse)
of label set NAME, as ENV's lock pins it, with another version: `--against-labels OTHER` (a
label set of the same environment, e.g. the previous taxonomy) and/or `--against-lock ENV2`
(the label set as another environment pins it). The two class-count vectors are judged exactly
like a categorical column's value counts (`alerts`: L-infinity, JSD, PSI against
`monitoring.drift`, thresholds per taxonomy name under `monitoring.drift.columns`), and the
candidate's taxonomy is the domain: classes outside it are reported as new values. The public
view (`public_view`) and every rendering of `drift` apply unchanged; a label set of a restricted
dataset merges classes seen fewer than `min_group_size` times.

A label set computed by labeling functions over a restricted dataset (or one reusing such a
set) is not compared (BE888): its designer chooses which rows it labels, so its exact totals
and class counts would answer "did this row pass my function?". `buildenv labels` releases its
figures under the privacy policy.
"""

from __future__ import annotations

import json

from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.gate import Gate
from buildenv.data.lock.staleness import check_lock
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import Column
from buildenv.labels.labelset import LabelError, LabelSets
from buildenv.labels.resolve import Resolution
from buildenv.monitor.alerts import ColumnView, alerts_for, compare, thresholds_for
from buildenv.monitor.drift import STATS_VERSION, DriftResult
from buildenv.monitor.label_shares import share_alerts
from buildenv.monitor.public_view import public_column
from buildenv.monitor.statistics import Source

__all__ = ["run_label_drift"]


def _usage(code: str, message: str, hint: str | None = None) -> DiagnosticError:
    return DiagnosticError([Diagnostic(code, message, hints=(hint,) if hint else ())], 2)


def _resolved(project: Project, multiverse: Multiverse, res: Resolved, name: str
              ) -> tuple[Resolution, Source]:
    if name not in res.env.labels:
        raise _usage("BE851", f"unknown label set '{name}' in environment {res.name}",
                     did_you_mean(name, res.env.labels))
    computed = res.env.computed_over_restricted(name)
    if computed is not None:  # refused before anything is read: no count, no audit record
        via = "" if computed == name else f" (it reuses '{computed}')"
        raise DiagnosticError([res.diag(
            "BE888", f"label set '{name}'{via} is computed by labeling functions over a "
            f"restricted dataset: its label distribution is not compared", "labels", computed,
            "source", hints=(f"`buildenv labels {res.name}` shows its figures as the privacy "
                             "policy releases them",))], 2)
    lock, problems = check_lock(multiverse, res, verify_data=False)
    if lock is None:
        raise DiagnosticError(problems, 2)
    pins = {n: d.digest for n, d in lock.datasets.items()}
    sets = LabelSets(Gate(project, res.env, "drift", pins=pins, where=res), lock.label_pins(),
                     res)
    try:
        resolution = sets.resolve(name)
    except LabelError as exc:
        raise DiagnosticError(exc.diagnostics, 1) from None
    entry = lock.labels[name]
    source = Source(entry.uri, entry.format, entry.digest, len(resolution.keys),
                    f"label set '{name}' locked in {multiverse.project.rel(multiverse.path(res.name))[:-5]}"
                    ".lock.json")
    return resolution, source


def _summary(resolution: Resolution) -> dict:
    counts = resolution.per_class()
    n = sum(counts.values())
    return {"kind": "categorical", "rows": n, "nulls": 0, "count": n,
            "counts": {json.dumps(k): v for k, v in counts.items()}, "max_count_error": 0}


def run_label_drift(project: Project, env: str, labels: str, *,
                    against_labels: str | None = None,
                    against_lock: str | None = None) -> DriftResult:
    if against_labels is None and against_lock is None:
        raise _usage("BE004", "drift --labels takes a candidate: --against-labels NAME and/or "
                     "--against-lock ENV")
    multiverse = Multiverse(project)
    res = multiverse.resolve(env)
    other_res = multiverse.resolve(against_lock) if against_lock is not None else res
    other_name = against_labels or labels
    base_res, baseline = _resolved(project, multiverse, res, labels)
    cand_res, candidate = _resolved(project, multiverse, other_res, other_name)
    spec = other_res.env.labels[other_name]
    restricted = res.env.restricted(res.env.labels[labels].dataset) or \
        other_res.env.restricted(spec.dataset)
    min_group = max(res.env.privacy.min_group_size, other_res.env.privacy.min_group_size)
    name = spec.taxonomy.name
    ds = f"labels.{labels}"
    col = Column(dtype="string", domain=list(spec.taxonomy.classes))
    base, cand = _summary(base_res), _summary(cand_res)
    view = ColumnView(name, ds, col, "categorical", base, cand, compare(base, cand), restricted,
                      min_group)
    where = ("labels", labels, "taxonomy")
    accept = (f"if the new label distribution is expected, build against it (`label: {{labels: "
              f"{other_name}}}`{f' in {against_lock}' if against_lock else ''})")
    alerts = alerts_for(view, res, multiverse, accept)
    for alert in alerts:
        if alert.threshold_key is None:  # a built-in default: point at the label set
            alert.where = res.diag(alert.code, "", *where)
    if res.env.label is not None and res.env.label.labels == labels:
        alerts += share_alerts(res, f"label set '{labels}'", base_res.per_class(),
                               cand_res.per_class(), restricted, accept)
    problems: list[Diagnostic] = []
    thresholds = thresholds_for(res, ds, name, "categorical")
    public = {name: public_column(view, thresholds, res, [])}
    triage = {"enabled": False, "models": [], "min_importance": res.env.monitoring.min_importance,
              "note": "label distributions are not triaged by feature importance"}
    stats = {
        "format_version": STATS_VERSION, "environment": env, "dataset": ds,
        "labels": {"baseline": labels, "candidate": other_name,
                   "candidate_environment": other_res.name},
        "restricted": restricted, "min_group_size": min_group,
        "baseline": baseline.describe(), "candidate": candidate.describe(),
        "method": {"what": "class shares of the resolved labels (after majority vote and "
                           "reuse)"},
        "triage": triage, "columns": public, "alerts": [a.to_json() for a in alerts],
        "summary": {"alerts": len(alerts), "suppressed": 0},
        "problems": [],
    }
    return DriftResult(env, ds, baseline, candidate, restricted, alerts, problems, stats, triage)
