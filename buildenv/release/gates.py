"""Promotion gates (SPEC §6, §7): score a candidate and the champion on the same rows.

The candidate is the registered version of the artifact in `dist/<training>/<env>/` (found by
its artifact digest). Candidate and champion are both loaded from the registry and scored on
the environment's evaluation rows (`evaluation:`), read through the data gate and verified
against the environment's lock: rows the environment chose, not the candidate's code, and
every served column, so either model can be scored whatever columns it reads. Metrics buildenv
computes: see `compile.scoring` (`val_auc`, `val_logloss`, `accuracy`, `rmse`, ...); any other
metric is compared through the values the trainings logged (a warning says the rows may
differ). Moving the alias is `champion`'s job.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from buildenv.compile.artifact import read_lineage
from buildenv.compile.registry import TAG_DIGEST, client, find_version
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.extras import require
from buildenv.core.project import Project
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Promotion
from buildenv.release.slice_gates import SliceVerdict, render_rows, verdict_gates
from buildenv.training.scoring import METRIC_ALIASES, ScoringError, metrics, predict

# Deferred imports (mlflow, buildenv): mlflow is seconds of imports, paid only by what talks to the
# registry; the rooms that read evaluation rows (pyarrow, numpy) only by promotion: `buildenv
# history` and `rollback` import this module and score nothing.

__all__ = ["CHECK_PREFIX", "Evaluation", "Gate", "Scored", "alias_name", "champion_version",
           "evaluate", "record_check", "registry_error"]

CHECK_PREFIX = "buildenv.check."


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
    source: str = "evaluation"  # evaluation | logged
    rows: int | None = None
    rows_text: str | None = None  # which rows, for people
    gates: list[Gate] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    slices: SliceVerdict | None = None  # per slice, when the environment declares slices

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
        where = (f"on {self.rows_text or f'the same {self.rows} evaluation rows'}"
                 if self.source == "evaluation"
                 else "as logged by each training (their rows may differ)")
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
        if self.slices is not None and self.slices.rows:
            lines += ["", *render_rows(self.slices, p.metric, self.champion is not None
                                       and self.champion.value is not None)]
        if self.gates:
            lines.append("")
            gw = max(len(f"{g.name} {g.limit}") for g in self.gates)
            aw = max(len(g.actual) for g in self.gates)
            for g in self.gates:
                lines.append(f"gate {f'{g.name} {g.limit}'.ljust(gw)}  {g.actual.ljust(aw)}  "
                             f"{'pass' if g.passed else 'FAIL'}")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line with the values: the candidate's metric (and the champion's), then each
        gate with its bound, the value it judged and the verdict."""
        champion = (f", champion v{self.champion.version} {_fmt(self.champion.value)}"
                    if self.champion is not None else ", no champion yet")
        gates = "; ".join(f"{g.name} {g.limit}: {g.actual} {'pass' if g.passed else 'FAIL'}"
                          for g in self.gates)
        return (f"{self.metric} {_fmt(self.candidate.value)} (candidate v"
                f"{self.candidate.version}{champion})" + (f"; {gates}" if gates else ""))

    def to_json(self) -> dict:
        def scored(s: Scored | None) -> dict | None:
            return None if s is None else {"version": s.version, "run_id": s.run_id,
                                           "value": s.value}
        return {"training": self.training, "environment": self.env, "metric": self.metric,
                "direction": self.promotion.direction, "source": self.source,
                "rows": self.rows, "candidate": scored(self.candidate),
                "champion": scored(self.champion), "passed": self.passed,
                "gates": [g.__dict__ for g in self.gates],
                "slices": [r.to_json() for r in self.slices.rows] if self.slices else None,
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


def _load_model(c: Any, project: Project, res: Resolved, training: str, version: str,
                scratch: Path) -> tuple[Any, dict]:
    """The registered model (as serving runs it) and its lineage; the model file is loaded
    only after its files matched the version's recorded digest, with the environment's
    trust."""
    import mlflow.artifacts

    from buildenv.compile.integrity import load_verified_model

    expected = (c.get_model_version(training, version).tags or {}).get(TAG_DIGEST)
    uri = c.get_model_version_download_uri(training, version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(
        scratch / f"v{version}"), tracking_uri=project.tracking_uri())
    lineage = read_lineage(Path(local)) or {}
    model = load_verified_model(project, Path(local), expected,
                                f"model '{training}' v{version} in the registry", res.env)
    return model, lineage


def _logged(c: Any, run_id: str | None, metric: str) -> float | None:
    if not run_id:
        return None
    value = c.get_run(run_id).data.metrics.get(metric)
    return None if value is None else float(value)


def evaluate(project: Project, res: Resolved, training: str,
             artifact: Path | None = None) -> Evaluation:
    """Score candidate and champion on the environment's evaluation rows; apply every gate."""
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
    kind = METRIC_ALIASES.get(promotion.metric)
    reason = None
    if res.env.label is None:
        reason = "the environment declares no label, so it has no evaluation rows"
    elif kind is None:
        reason = f"buildenv does not compute '{promotion.metric}'"
    if reason is None and kind is not None:
        _score_on_evaluation_rows(ev, c, project, res, training, kind)
    else:
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
                    "is unavailable: buildenv does not compute it and the training did not "
                    "log it", hints=(f"log it with ctx.log_metric('{promotion.metric}', ...) "
                                     "or gate on a computed metric: "
                                     + ", ".join(sorted(set(METRIC_ALIASES.values()))),)))
    _apply_gates(ev, c, lineage, res)
    return ev


def _score_on_evaluation_rows(ev: Evaluation, c: Any, project: Project, res: Resolved,
                              training: str, kind: str) -> None:
    """Both values from the environment's evaluation rows, read through the gate now."""
    require("models", "scoring models for promotion", "pandas", "sklearn")
    from buildenv.data.evaluation import evaluation_rows
    from buildenv.data.gate.errors import GateError
    from buildenv.data.gate.gate import Gate as DataGate
    from buildenv.data.lock.staleness import check_lock
    from buildenv.env.resolve import Multiverse
    from buildenv.training.slice_run import slice_attributes

    lock, problems = check_lock(Multiverse(project), res)
    if lock is None:
        raise DiagnosticError(problems, 1)
    pins = {name: d.digest for name, d in lock.datasets.items()}
    gate = DataGate(project, res.env, "evaluate", pins=pins, where=res,
                    manifests=lock.manifests())
    labels = None
    label = res.env.label
    if label is not None and label.labels is not None and res.env.label_set() is not None:
        from buildenv.labels.labelset import LabelError, LabelSets

        try:
            labels = LabelSets(gate, lock.label_pins(), res).resolve(label.labels).table()
        except LabelError as exc:
            raise DiagnosticError(exc.diagnostics, 1) from None
    try:
        rows = evaluation_rows(gate, res.env, labels, attributes=slice_attributes(res.env))
    except GateError as exc:
        raise DiagnosticError([exc.diagnostic], 1) from None
    ev.rows, ev.rows_text = rows.rows, rows.describe()
    restricted = any(res.env.restricted(d) for d in rows.digests)
    scored: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="buildenv-promote-") as scratch:
        for s in (ev.candidate, ev.champion):
            if s is None:
                continue
            try:
                model, lineage = _load_model(c, project, res, training, s.version,
                                            Path(scratch))
            except DiagnosticError:
                raise
            except Exception as exc:
                raise registry_error(project, exc, "loading the models") from None
            try:
                outputs = predict(model, rows.frame, rows.labels,
                                  SimpleNamespace(classes=res.env.label_classes()),
                                  lineage.get("inputs"), restricted)
            except ScoringError as exc:
                severity = Severity.ERROR if s.role == "candidate" else Severity.WARNING
                ev.diagnostics.append(Diagnostic(
                    "BE709" if s.role == "candidate" else "BE713",
                    f"{s.role} {training} v{s.version} cannot be scored on {rows.describe()}: "
                    f"{exc}", severity=severity,
                    hints=() if s.role == "candidate" else (
                        "it cannot serve this environment either: the regression gate is "
                        "skipped",)))
                continue
            found = metrics(outputs)
            s.value = found.get(kind)
            if s.value is None:
                ev.diagnostics.append(Diagnostic(
                    "BE709", f"'{ev.metric}' ({kind}) is undefined for {s.role} v{s.version} on "
                    f"{rows.describe()} (computed: {', '.join(sorted(found)) or 'nothing'})"))
            scored.append((s, outputs, lineage))
    if res.env.evaluation.slices and scored and scored[0][0].role == "candidate":
        _compare_slices(ev, res, rows, scored, kind, restricted)


def _compare_slices(ev: Evaluation, res: Resolved, rows: Any, scored: list, kind: str,
                    restricted: bool) -> None:
    """Candidate and champion on every slice, on the same rows and bootstrap weights."""
    from buildenv.release.slice_gates import judge_slices
    from buildenv.training.scoring import labelled
    from buildenv.training.slice_scores import score_slices
    from buildenv.training.slicing import MissingColumn

    env = res.env
    paired = len(scored) == 2 and not ev.already_champion
    if paired and not ((scored[1][2].get("evaluation") or {}).get("slices")):
        ev.diagnostics.append(res.diag(
            "BE512", f"champion {ev.training} v{scored[1][0].version} was built before slices "
            "were declared (its lineage has no slice figures): it was scored on every slice "
            "now, on the same rows as the candidate", "evaluation", "slices",
            severity=Severity.NOTE))
    models = [o for _, o, _ in (scored if paired else scored[:1])]
    private = restricted and env.privacy.release == "dp"
    try:
        scores = score_slices(env, rows.attributes, models, labelled(rows.labels),
                              public_keys=private)
    except MissingColumn as exc:
        spec = env.evaluation.slices[exc.index]
        raise DiagnosticError([res.diag(
            "BE501", f"evaluation.slices[{exc.index}]: column '{exc.column}' is not among the "
            "evaluation rows: its dataset was not joined", "evaluation", "slices", exc.index,
            "by" if spec.by is not None else "where")], 1) from None
    ev.slices = judge_slices(scores, kind, env, restricted, paired,
                             ev.promotion.direction)


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
            and ev.champion is not None and not ev.already_champion):
        worse_by = sense * (champ - cand)
        ok = worse_by <= p.max_regression + 1e-12
        ev.gates.append(Gate("max_regression", f"<= {p.max_regression:g}",
                             f"{max(worse_by, 0.0):.4f}", ok))
        if not ok:
            rows = ((ev.rows_text or f"the same {ev.rows} evaluation rows")
                    if ev.source == "evaluation" else "their logged values")
            ev.diagnostics.append(res.diag(
                "BE702", f"{p.metric} regressed by {worse_by:.4f}: candidate {ev.training} v"
                f"{ev.candidate.version} has {cand:.4f}, champion v{ev.champion.version} has "
                f"{champ:.4f} on {rows}; promotion.max_regression of {ev.env} is "
                f"{p.max_regression:g}", "promotion", "max_regression",
                hints=(f"the champion stays {_champ_text(ev)}",)))
    if ev.slices is not None:
        paired = ev.champion is not None and ev.champion.value is not None \
            and not ev.already_champion
        found, failures = verdict_gates(ev.slices, res.env, p.metric, paired)
        ev.gates += [Gate(*g) for g in found]
        ev.diagnostics += [res.diag(code, message, *where,
                                    hints=(f"the champion stays {_champ_text(ev)}",))
                           for code, message, where in failures]
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


