"""Promotion (SPEC §6, §7): gate a candidate against the champion, then move `<env>-champion`.

The candidate is the registered version of the artifact in `dist/<training>/<env>/` (found by
its artifact digest). Candidate and champion are both loaded from the registry and scored on
the same rows: the candidate build's held-out sample (`holdout_file`). Metrics buildenv can
recompute: `val_auc`/`auc`/`roc_auc`, `val_logloss`/`logloss`, `accuracy`/`val_accuracy`;
any other metric, or a candidate whose holdout is not on this machine, is compared through
the values the trainings logged (a warning says the rows may differ).

History is append-only: every alias move adds a registered-model tag
`buildenv.history.<env>.<seq>` holding one JSON entry (version, action, metric values, time,
actor). The alias is the truth about the present; the tags are the past. `rollback` replays
them as a stack (promote pushes, rollback pops) to find the previous champion.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildenv.compile.artifact import read_lineage
from buildenv.compile.launch import holdout_file
from buildenv.compile.registry import TAG_DIGEST, client, find_version
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Promotion

__all__ = ["CHECK_PREFIX", "Evaluation", "Gate", "Scored", "alias_name", "champion_version",
           "compute_metric", "evaluate", "record_check", "registry_error"]

CHECK_PREFIX = "buildenv.check."
_COMPUTED = {
    "val_auc": "roc_auc", "auc": "roc_auc", "roc_auc": "roc_auc", "val_roc_auc": "roc_auc",
    "val_logloss": "logloss", "logloss": "logloss", "log_loss": "logloss",
    "val_log_loss": "logloss", "accuracy": "accuracy", "val_accuracy": "accuracy",
}


def alias_name(env: str) -> str:
    return f"{env}-champion"


@dataclass
class Scored:
    role: str  # candidate | champion
    version: str
    run_id: str | None
    value: float | None = None


@dataclass
class Gate:
    name: str  # min_value | max_regression | required_check:<name>
    limit: str
    actual: str
    passed: bool


@dataclass
class Evaluation:
    training: str
    env: str
    promotion: Promotion
    candidate: Scored
    champion: Scored | None
    source: str = "holdout"  # holdout | logged
    rows: int | None = None
    gates: list[Gate] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.promotion.metric

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and not any(d.is_error for d in
                                                              self.diagnostics)

    @property
    def already_champion(self) -> bool:
        return self.champion is not None and self.champion.version == self.candidate.version

    def table(self) -> str:
        p = self.promotion
        where = (f"on the same {self.rows} held-out rows" if self.source == "holdout"
                 else "as logged by each training (held-out rows may differ)")
        lines = [f"{self.training} @ {self.env}: {p.metric} ({p.direction}), {where}", ""]
        rows = [("", "version", p.metric)]
        rows.append(("candidate", f"v{self.candidate.version}", _fmt(self.candidate.value)))
        if self.champion is not None:
            rows.append(("champion", f"v{self.champion.version}", _fmt(self.champion.value)))
            if self.candidate.value is not None and self.champion.value is not None:
                rows.append(("difference", "",
                             f"{self.candidate.value - self.champion.value:+.4f}"))
        else:
            rows.append(("champion", "-", "(none yet)"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if self.gates:
            lines.append("")
            gw = max(len(f"{g.name} {g.limit}") for g in self.gates)
            for g in self.gates:
                lines.append(f"gate {f'{g.name} {g.limit}'.ljust(gw)}  {g.actual:<10}  "
                             f"{'pass' if g.passed else 'FAIL'}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        def scored(s: Scored | None) -> dict | None:
            return None if s is None else {"version": s.version, "run_id": s.run_id,
                                           "value": s.value}
        return {"training": self.training, "environment": self.env, "metric": self.metric,
                "direction": self.promotion.direction, "source": self.source,
                "rows": self.rows, "candidate": scored(self.candidate),
                "champion": scored(self.champion), "passed": self.passed,
                "gates": [g.__dict__ for g in self.gates],
                "diagnostics": [d.to_json() for d in self.diagnostics]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _promotion(res: Resolved) -> Promotion:
    if res.env.promotion is None:
        raise DiagnosticError([res.diag(
            "BE705", f"environment '{res.name}' has no promotion gates", "name",
            hints=("add a `promotion:` section (metric, min_value, max_regression)",))], 2)
    return res.env.promotion


def registry_error(project: Project, exc: Exception, what: str) -> DiagnosticError:
    if isinstance(exc, DiagnosticError):  # e.g. BE761 from a model that failed verification
        return exc
    return DiagnosticError([Diagnostic(
        "BE704", f"{what} failed at {project.tracking_uri()}: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}")])


def champion_version(c: Any, training: str, env: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(training, alias_name(env))
    except MlflowException:
        return None


def candidate_version(project: Project, c: Any, training: str, env: str,
                      artifact: Path) -> tuple[Any, dict]:
    lineage = read_lineage(artifact)
    if lineage is None:
        raise DiagnosticError([Diagnostic(
            "BE703", f"no artifact for {training} @ {env} at {project.rel(artifact)}",
            hints=(f"run `buildenv build {training} --env {env}`",))])
    version = find_version(c, training, lineage["model_digest"], env)
    if version is None:
        raise DiagnosticError([Diagnostic(
            "BE703", f"the artifact at {project.rel(artifact)} is not registered as a version "
            f"of model '{training}' in {project.tracking_uri()}",
            hints=(f"run `buildenv build {training} --env {env}` (it registers the artifact)",))])
    return version, lineage


def _load_model(c: Any, project: Project, training: str, version: str, scratch: Path):
    """A registered version, unpickled only after its files matched its recorded digest."""
    import mlflow.artifacts

    from buildenv.compile.integrity import load_verified_model

    expected = (c.get_model_version(training, version).tags or {}).get(TAG_DIGEST)
    uri = c.get_model_version_download_uri(training, version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(
        scratch / f"v{version}"), tracking_uri=project.tracking_uri())
    return load_verified_model(project, Path(local), expected,
                               f"model '{training}' v{version} in the registry")


def compute_metric(kind: str, model: Any, X: Any, y: Any, classes: list | None) -> float:
    """roc_auc / logloss / accuracy of `model` on (X, y)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    if kind == "accuracy":
        return float(accuracy_score(y, model.predict(X)))
    proba = model.predict_proba(X)
    model_classes = list(model.classes_)
    if kind == "roc_auc":
        positive = classes[-1] if classes else model_classes[-1]
        if positive not in model_classes:
            raise ValueError(f"the model does not predict class {positive!r}")
        y_true = np.asarray(y) == positive
        if y_true.all() or not y_true.any():
            raise ValueError("the held-out labels hold a single class; AUC is undefined")
        return float(roc_auc_score(y_true, proba[:, model_classes.index(positive)]))
    return float(log_loss(y, proba, labels=model_classes))


def _logged(c: Any, run_id: str | None, metric: str) -> float | None:
    if not run_id:
        return None
    value = c.get_run(run_id).data.metrics.get(metric)
    return None if value is None else float(value)


def evaluate(project: Project, res: Resolved, training: str,
             artifact: Path | None = None) -> Evaluation:
    """Score candidate and champion on the candidate's holdout and apply every gate."""
    env = res.name
    promotion = _promotion(res)
    artifact = artifact or project.root / "dist" / training / env
    try:
        c = client(project)
        cand_v, lineage = candidate_version(project, c, training, env, artifact)
        champ_v = champion_version(c, training, env)
    except DiagnosticError:
        raise
    except Exception as exc:
        raise registry_error(project, exc, "looking up the candidate") from None
    ev = Evaluation(training, env, promotion, Scored("candidate", str(cand_v.version),
                                                      cand_v.run_id),
                    Scored("champion", str(champ_v.version), champ_v.run_id) if champ_v
                    else None)
    kind = _COMPUTED.get(promotion.metric)
    hold = holdout_file(project, lineage["cache_key"])
    label = res.env.label
    reason = None
    if kind is None:
        reason = f"buildenv cannot recompute '{promotion.metric}'"
    elif not hold.is_file():
        reason = "the candidate's held-out sample is not on this machine"
    elif label is None:
        reason = "the environment declares no label"
    if reason is None:
        reason = _score_holdout(ev, c, project, training, kind, hold, label)
    if reason is not None:
        ev.source = "logged"
        ev.diagnostics.append(Diagnostic(
            "BE708", f"{reason}; comparing the '{promotion.metric}' values the trainings "
            "logged", severity=Severity.WARNING))
        ev.candidate.value = _logged(c, ev.candidate.run_id, promotion.metric)
        if ev.champion is not None:
            ev.champion.value = _logged(c, ev.champion.run_id, promotion.metric)
        for s in (ev.candidate, ev.champion):
            if s is not None and s.value is None:
                ev.diagnostics.append(Diagnostic(
                    "BE709", f"metric '{promotion.metric}' of {s.role} {training} v{s.version} "
                    "is unavailable: it cannot be recomputed and the training did not log it",
                    hints=(f"log it with ctx.log_metric('{promotion.metric}', ...) or gate on "
                           "val_auc, val_logloss or accuracy",)))
    _apply_gates(ev, c, lineage, res)
    return ev


def _score_holdout(ev: Evaluation, c: Any, project: Project, training: str, kind: str,
                   hold: Path, label: Any) -> str | None:
    """Fill in both values from the holdout; a reason string when that is not possible."""
    import pandas as pd

    frame = pd.read_parquet(hold)
    target = f"__label__{label.column}"
    if target not in frame.columns:
        return "the held-out sample has no label column"
    y = frame.pop(target).to_numpy()
    ev.rows = len(frame)
    with tempfile.TemporaryDirectory(prefix="buildenv-promote-") as scratch:
        try:
            models = {s.role: _load_model(c, project, training, s.version, Path(scratch))
                      for s in (ev.candidate, ev.champion) if s is not None}
        except Exception as exc:
            raise registry_error(project, exc, "loading the models") from None
        for s in (ev.candidate, ev.champion):
            if s is None:
                continue
            model = models[s.role]
            needed = list(getattr(model, "feature_names_in_", frame.columns))
            missing = [col for col in needed if col not in frame.columns]
            if missing:
                return (f"{s.role} v{s.version} reads column(s) {', '.join(missing)} that the "
                        "candidate's held-out sample lacks")
            try:
                s.value = compute_metric(kind, model, frame[needed], y, label.classes)
            except ValueError as exc:
                ev.diagnostics.append(Diagnostic(
                    "BE709", f"cannot compute '{ev.metric}' of {s.role} v{s.version} on the "
                    f"held-out sample: {exc}"))
                return None
    return None


def _apply_gates(ev: Evaluation, c: Any, lineage: dict, res: Resolved) -> None:
    p = ev.promotion
    cand = ev.candidate.value
    sense = 1.0 if p.direction == "maximize" else -1.0
    if p.min_value is not None and cand is not None:
        ok = sense * (cand - p.min_value) >= 0
        op = ">=" if sense > 0 else "<="
        ev.gates.append(Gate("min_value", f"{op} {p.min_value:g}", _fmt(cand), ok))
        if not ok:
            bound = "below the minimum" if sense > 0 else "above the maximum"
            ev.diagnostics.append(res.diag(
                "BE701", f"{p.metric} {cand:.4f} of candidate {ev.training} v"
                f"{ev.candidate.version} is {bound} {p.min_value:g} "
                f"(promotion.min_value of {ev.env})", "promotion", "min_value",
                hints=(f"the champion stays {_champ_text(ev)}",)))
    champ = ev.champion.value if ev.champion else None
    if (p.max_regression is not None and cand is not None and champ is not None
            and not ev.already_champion):
        worse_by = sense * (champ - cand)
        ok = worse_by <= p.max_regression + 1e-12
        ev.gates.append(Gate("max_regression", f"<= {p.max_regression:g}",
                             f"{max(worse_by, 0.0):.4f}", ok))
        if not ok:
            rows = f"the same {ev.rows} held-out rows" if ev.source == "holdout" else \
                "their logged values"
            ev.diagnostics.append(res.diag(
                "BE702", f"{p.metric} regressed by {worse_by:.4f}: candidate {ev.training} v"
                f"{ev.candidate.version} has {cand:.4f}, champion v{ev.champion.version} has "
                f"{champ:.4f} on {rows}; promotion.max_regression of {ev.env} is "
                f"{p.max_regression:g}", "promotion", "max_regression",
                hints=(f"the champion stays {_champ_text(ev)}",)))
    tags = _version_tags(c, ev.training, ev.candidate.version)
    for check in p.required_checks:
        if check in ("validate", "verify"):
            # An artifact exists only if data validation and serving verification passed.
            ok = bool(lineage.get("model_digest"))
            actual = "passed (build)" if ok else "missing"
        else:
            actual = tags.get(CHECK_PREFIX + check, "not run")
            ok = actual == "passed"
        ev.gates.append(Gate(f"required_check:{check}", "passed", actual, ok))
        if not ok:
            ev.diagnostics.append(res.diag(
                "BE707", f"required check '{check}' has not passed for candidate "
                f"{ev.training} v{ev.candidate.version} ({actual})", "promotion",
                "required_checks",
                hints=(f"`buildenv retrain {ev.env}` runs and records the {check} check",)))


def _champ_text(ev: Evaluation) -> str:
    return f"v{ev.champion.version}" if ev.champion else "unset"


def _version_tags(c: Any, training: str, version: str) -> dict:
    try:
        return dict(c.get_model_version(training, version).tags or {})
    except Exception:
        return {}


def record_check(project: Project, training: str, version: str, check: str,
                 status: str) -> None:
    """Mark a check's outcome on a model version (read by `required_checks`)."""
    client(project).set_model_version_tag(training, version, CHECK_PREFIX + check, status)


# --- moving the alias -------------------------------------------------------------------------


