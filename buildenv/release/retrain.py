"""`buildenv retrain ENV`: new data in, gated champion out, or nothing changed at all.

Steps, each one an event (JSON lines with `--events FILE`, and a tag on one MLflow run per
retrain in experiment `buildenv/retrain`):

  detect    which datasets no longer match the lock: new bytes at the same uri, or a new
            uri written into the environment file by `--dataset NAME --uri NEW`
  validate  data validation of the changed datasets against their declared columns
  drift     `buildenv.monitor.drift` on each changed dataset against the locked version, when that
            version is still readable (a new uri); a version replaced in place has no
            baseline left, so drift is skipped with a warning
  lock      the environment is relocked
  build     every training whose `environments` globs match ENV, into a staging directory
  gate      each candidate against `<env>-champion` on the same held-out rows (promote.py)
  swap      staged artifacts replace dist/<training>/<env>/
  promote   with `--promote`: the alias moves

Nothing half-done: before the first write, the lock and the environment file are copied into
`.buildenv/retrain/<id>/` with a journal. Any stop restores them byte for byte and removes
the staging directory; dist/ and the aliases are only written after every gate passed. A
retrain killed midway is rolled back by the next one (the journal says what to restore).
Registered model versions of failed candidates stay in the registry (tagged with the retrain
id); they are never aliased.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildenv.compile.build import BuildOptions, build_pair
from buildenv.compile.locking import lock_environments
from buildenv.compile.plan import pairs
from buildenv.compile.registry import client
from buildenv.core import progress
from buildenv.core.atomic import atomic_write_bytes
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity, did_you_mean
from buildenv.core.project import Project
from buildenv.data.lock.lockfile import lock_path, read_lock, stat_cache
from buildenv.data.lock.locking import digest_dataset, digest_declared
from buildenv.data.store import ObjectStore
from buildenv.data.tables import TableError
from buildenv.data.validate.validate import validate_env
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.monitor.drift import drift_check
from buildenv.release.champion import promote
from buildenv.release.events import EventLog, Tracker
from buildenv.release.gates import alias_name, evaluate, record_check
from buildenv.release.journal import (
    exclusive,
    journal,
    lineage_sha,
    recover,
    restore,
    save,
    swap,
    work_root,
)

__all__ = ["RetrainOptions", "RetrainResult", "retrain"]


@dataclass
class RetrainOptions:
    dataset: str | None = None
    uri: str | None = None
    promote: bool = False
    events: Path | None = None


@dataclass
class RetrainResult:
    retrain_id: str
    env: str
    status: str  # up-to-date | retrained | promoted | stopped
    diagnostics: list[Diagnostic] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    promoted: dict[str, str] = field(default_factory=dict)  # training -> version

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "stopped" else 0


class _Stop(Exception):
    """A step failed: restore and exit 1."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("retrain stopped")


# --- journal: what to restore when a retrain does not finish ------------------------------------


# --- the environment file ----------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+-]+$")


def rewrite_uri(project: Project, multiverse: Multiverse, res: Resolved, dataset: str,
                new_uri: str) -> tuple[Path, str, str]:
    """Point `dataset` at `new_uri` by editing the one line where its uri is written.

    Only the environment's own file is edited (comments and layout are kept); a uri inherited
    from a parent is refused rather than silently changing every sibling of the parent.
    """
    own = multiverse.display(res.name)
    pos = res.origin.get(("datasets", dataset, "uri"))
    if pos is None or pos.path != own:
        where = f"{pos.path}:{pos.line}" if pos else "a parent"
        raise DiagnosticError([res.diag(
            "BE710", f"the uri of dataset '{dataset}' is inherited ({where}); retrain --uri "
            f"edits only {own}", "extends",
            hints=(f"add `datasets: {{{dataset}: {{uri: ...}}}}` to {own}, or create a new "
                   "environment that extends it",))], 2)
    path = multiverse.path(res.name)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    line = lines[pos.line - 1]
    start = pos.col - 1
    match = re.compile(r"uri\s*:\s*").match(line, start)
    if match is None:
        raise DiagnosticError([Diagnostic("BE710", f"cannot find the uri value of dataset "
                                          f"'{dataset}' on this line", own, pos.line, pos.col)], 2)
    value_start = match.end()
    rest = line[value_start:]
    if rest[:1] in ("'", '"'):
        end = rest.index(rest[0], 1) + 1
    else:
        stop = re.search(r"\s+#|[,}]|\s*$", rest)
        end = stop.start() if stop else len(rest.rstrip("\r\n"))
    literal = new_uri if _PLAIN.match(new_uri) else json.dumps(new_uri)
    old = rest[:end].strip("'\"")
    lines[pos.line - 1] = line[:value_start] + literal + rest[end:]
    return path, old, "".join(lines)


# --- drift -------------------------------------------------------------------------------------

def _drift(project: Project, res: Resolved, dataset: str, baseline_uri: str,
           baseline_digest: Any) -> tuple[str, list[Diagnostic]]:
    """Drift of the new data against the locked version: (status, diagnostics)."""
    found = drift_check(project, res, dataset, baseline_uri, baseline_digest)
    return ("failed" if any(d.is_error for d in found) else "passed"), found


# --- the run -----------------------------------------------------------------------------------

def retrain(project: Project, env: str, options: RetrainOptions) -> RetrainResult:
    if (options.dataset is None) != (options.uri is None):
        raise DiagnosticError([Diagnostic("BE004", "--dataset and --uri go together")], 2)
    with exclusive(project):
        restored = recover(project)
        retrain_id = uuid.uuid4().hex[:12]
        log = EventLog(retrain_id, env, options.events)
        if restored:
            log.emit("recover", "warning", "rolled back an unfinished retrain: restored "
                     + ", ".join(restored))
        result = RetrainResult(retrain_id, env, "stopped", events=log.events)
        tracker = Tracker(project, env, retrain_id)
        work = work_root(project) / retrain_id
        try:
            with progress.task(f"{env} (retrain)", keep=True) as steps:  # phases: the steps
                _run(project, env, options, log, work, result, tracker)
                steps.status = result.status
        except _Stop as stop:
            result.status = "stopped"
            result.diagnostics = stop.diagnostics
            back = restore(project, work)
            log.emit("finish", "failed", "stopped; " + (
                "restored " + ", ".join(back) if back else "nothing was changed"),
                alert=[d.to_text() for d in stop.diagnostics if d.is_error])
        except BaseException as exc:
            back = restore(project, work)
            if log.events:  # it had started: close the event log and the MLflow run too
                found = exc.diagnostics if isinstance(exc, DiagnosticError) else []
                log.emit("finish", "failed", "stopped by " + (
                    "a configuration error" if found else type(exc).__name__) + "; " + (
                    "restored " + ", ".join(back) if back else "nothing was changed"),
                    alert=[d.to_text() for d in found if d.is_error])
                tracker.finish(log, "stopped")
            raise
        tracker.finish(log, result.status)
        return result


def _run(project: Project, env: str, options: RetrainOptions, log: EventLog, work: Path,
         result: RetrainResult, tracker: Tracker) -> None:
    multiverse = Multiverse(project)
    res = multiverse.resolve(env)  # configuration errors stop here (exit 2), nothing written yet
    log.emit("start", "started", f"retrain {env}", promote=options.promote,
             dataset=options.dataset, uri=options.uri)
    tracker.start(log)
    old_lock = read_lock(project, env)
    if old_lock is None:
        raise _Stop([res.diag("BE050", f"environment '{env}' has no lock: retrain needs the "
                              "locked version to compare against", "name",
                              hints=(f"run `buildenv lock {env}` first",))])
    saved = [lock_path(project, env)]
    if options.dataset is not None:
        if options.dataset not in res.env.datasets:
            hint = did_you_mean(options.dataset, res.env.datasets)
            raise DiagnosticError([Diagnostic("BE009", f"unknown dataset '{options.dataset}' "
                                              f"in environment {env}",
                                              hints=(hint,) if hint else ())], 2)
        env_file, old_uri, new_text = rewrite_uri(project, multiverse, res, options.dataset,
                                                  str(options.uri))
        saved.append(env_file)
    entries = save(project, work, saved)
    if options.dataset is not None:
        atomic_write_bytes(env_file, new_text.encode("utf-8"))
        log.emit("dataset", "changed", f"dataset '{options.dataset}': {old_uri} -> "
                 f"{options.uri}", dataset=options.dataset, old_uri=old_uri, uri=options.uri)
        multiverse = Multiverse(project)
        try:
            res = multiverse.resolve(env)
        except DiagnosticError as exc:
            raise _Stop(exc.diagnostics) from None

    # detect
    progress.phase("detect")
    changed, unreadable = _changed(project, res, old_lock)
    if unreadable:
        log.emit("detect", "failed", "; ".join(d.message for d in unreadable))
        raise _Stop(unreadable)
    if not changed:
        log.emit("detect", "unchanged", "every dataset matches the lock; nothing to retrain")
        result.status = "up-to-date"
        restore(project, work)
        return
    log.emit("detect", "changed", ", ".join(f"{n} ({why})" for n, why in changed.items()),
             datasets=changed)

    # validate
    progress.phase("validate")

    found = validate_env(res, project, datasets=sorted(changed))
    errors = [d for d in found if d.is_error]
    log.emit("validate", "failed" if errors else "passed",
             f"{len(errors)} error(s)" if errors else f"{len(changed)} dataset(s) valid",
             codes=sorted({d.code for d in found}))
    if errors:
        raise _Stop(found)

    # drift
    progress.phase("drift")
    drift_status = _drift_step(project, res, old_lock, changed, log)

    # lock
    progress.phase("lock")
    journal(work, {"phase": "locking", "saved": entries})
    locked, problems = lock_environments(multiverse, [env])
    if problems or not locked:
        log.emit("lock", "failed", "; ".join(p.message for p in problems))
        raise _Stop(problems)
    new_lock = locked[0][1]
    log.emit("lock", "passed", "relocked", datasets={
        n: d.digest for n, d in sorted(new_lock.datasets.items()) if n in changed})

    # build
    progress.phase("build")
    staged = _build_step(project, multiverse, env, work, log, result.retrain_id, drift_status)

    # gate
    progress.phase("gate")
    evaluations = _gate_step(project, res, staged, log)

    # swap
    progress.phase("swap")
    journal(work, {"phase": "swapping", "saved": entries, "staged": [
        {"staged": out.relative_to(work).as_posix(), "final": f"dist/{training}/{env}",
         "digest": lineage_sha(out)}  # tells a swap done
        for training, out in staged.items()]})
    for training, out in staged.items():
        swap(out, project.root / "dist" / training / env)
    log.emit("swap", "passed", f"{len(staged)} artifact(s) in dist/",
             artifacts=[f"dist/{t}/{env}" for t in staged])
    result.status = "retrained"

    # promote
    progress.phase("promote")
    if not options.promote:
        log.emit("promote", "skipped", "run with --promote to move the alias")
    else:
        for training, ev in evaluations.items():
            if ev is None:
                log.emit("promote", "skipped", "no promotion gates", training=training)
                continue
            seq = promote(project, ev)
            before = f"v{ev.champion.version}" if ev.champion else "unset"
            log.emit("promote", "passed" if seq else "unchanged",
                     f"{alias_name(env)}: {before} -> v{ev.candidate.version}" if seq else
                     f"v{ev.candidate.version} is already {alias_name(env)}",
                     training=training, version=ev.candidate.version, history=seq)
            result.promoted[training] = ev.candidate.version
        result.status = "promoted"
    shutil.rmtree(work, ignore_errors=True)
    log.emit("finish", "passed", result.status)


def _build_step(project: Project, multiverse: Multiverse, env: str, work: Path, log: EventLog,
                retrain_id: str, drift_status: str) -> dict[str, Path]:
    """Every training targeting the environment, built into the work directory (not dist/
    yet) and registered as a candidate: training -> its staged artifact."""
    targets = [t for t, _ in pairs(project.trainings, [env])]
    if not targets:
        log.emit("build", "skipped", f"no training targets environment {env}")
    staged: dict[str, Path] = {}
    for training in targets:
        out = work / "dist" / training
        outcome = build_pair(project, multiverse, training, env, BuildOptions(out=out))
        if outcome.status == "failed":
            first = outcome.first_error()
            log.emit("build", "failed", first.to_text() if first else "build failed",
                     training=training)
            raise _Stop(outcome.diagnostics)
        version = (outcome.registered or {}).get("version")
        log.emit("build", "passed", f"{training}: {outcome.status} ({outcome.reason}), "
                 f"registered v{version}", training=training, version=str(version),
                 cache_key=(outcome.lineage or {}).get("cache_key"), timings=outcome.timings)
        staged[training] = out
        if version is not None:
            _tag_candidate(project, training, str(version), retrain_id, drift_status)
    return staged


def _changed(project: Project, res: Resolved, lock: Any) -> tuple[dict[str, str],
                                                                   list[Diagnostic]]:
    changed: dict[str, str] = {}
    problems: list[Diagnostic] = []
    cache = stat_cache(project)
    for name, ds in sorted(res.env.datasets.items()):
        pinned = lock.datasets.get(name)
        if pinned is None:
            changed[name] = "new dataset"
            continue
        if pinned.uri != ds.uri or pinned.format != ds.format:
            changed[name] = f"new uri {ds.uri}"
        algorithm = (pinned.manifest.algorithm if pinned.manifest is not None
                     else pinned.digest.split(":", 1)[0])
        try:
            now = digest_declared(project, ds, algorithm, cache).value  # a table: its newest
        except TableError as exc:
            problems.append(res.diag(exc.code, f"dataset '{name}': {exc.message}", "datasets",
                                     name, "uri", hints=exc.hints))
            continue
        except Exception as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else str(exc)
            problems.append(res.diag("BE053", f"dataset '{name}': cannot read '{ds.uri}': "
                                     f"{reason}", "datasets", name, "uri"))
            continue
        if now.digest != pinned.digest:
            changed.setdefault(name, "a new version of the table" if ds.is_table
                               else "new content at the same uri")
        else:
            changed.pop(name, None)  # a new uri holding the very same bytes is no change
    cache.save()
    return changed, problems


def _drift_step(project: Project, res: Resolved, lock: Any, changed: dict[str, str],
                log: EventLog) -> str:
    statuses = []
    problems: list[Diagnostic] = []
    for name in sorted(changed):
        pinned = lock.datasets.get(name)
        baseline = None
        if pinned is not None and pinned.uri != res.env.datasets[name].uri:
            try:
                algorithm = (pinned.manifest.algorithm if pinned.manifest is not None
                             else pinned.digest.split(":", 1)[0])
                partitions = pinned.manifest.partitions if pinned.manifest else ()
                if digest_dataset(project, pinned.uri, pinned.format, partitions,
                                  algorithm).value.digest == pinned.digest:
                    baseline = pinned.uri
            except Exception:
                baseline = None
        elif pinned is not None and _retrievable(project, pinned):
            baseline = pinned.uri  # replaced in place: the locked bytes are still there
        if baseline is None:
            why = ("the locked version was replaced in place" if pinned is not None and
                   pinned.uri == res.env.datasets[name].uri else
                   "the locked version is no longer readable" if pinned is not None else
                   "the dataset is new")
            log.emit("drift", "skipped", f"dataset '{name}': no baseline ({why})",
                     dataset=name)
            statuses.append("skipped")
            continue
        status, found = _drift(project, res, name, baseline, pinned.pin)
        problems += found
        alerts = [d for d in found if d.severity is not Severity.NOTE]
        log.emit("drift", status, f"dataset '{name}' against {baseline}: {len(alerts)} alert(s)",
                 dataset=name, against=baseline, codes=sorted({d.code for d in found}))
        statuses.append(status)
    if any(s == "failed" for s in statuses):
        raise _Stop(problems)
    return "passed" if statuses and all(s == "passed" for s in statuses) else "skipped"


def _tag_candidate(project: Project, training: str, version: str, retrain_id: str,
                   drift_status: str) -> None:
    c = client(project)
    c.set_model_version_tag(training, version, "buildenv.retrain_id", retrain_id)

    record_check(project, training, version, "drift", drift_status)


def _gate_step(project: Project, res: Resolved, staged: dict[str, Path],
               log: EventLog) -> dict[str, Any]:
    evaluations: dict[str, Any] = {}
    failures: list[Diagnostic] = []
    for training, out in staged.items():
        if res.env.promotion is None:
            log.emit("gate", "skipped", f"environment {res.name} has no promotion gates",
                     training=training)
            evaluations[training] = None
            continue
        try:
            ev = evaluate(project, res, training, artifact=out)
        except DiagnosticError as exc:
            log.emit("gate", "failed", "; ".join(d.message for d in exc.diagnostics),
                     training=training)
            raise _Stop(exc.diagnostics) from None
        evaluations[training] = ev
        log.emit("gate", "passed" if ev.passed else "failed", ev.summary(),
                 training=training, evaluation=ev.to_json())
        if not ev.passed:
            failures += ev.diagnostics
    if failures:
        raise _Stop(failures)
    return evaluations


def _retrievable(project: Project, pinned: Any) -> bool:
    """Whether the locked version can still be read though its uri now holds other data: a
    table version (its pinned files, or their kept copies) or bytes the object store kept."""
    store = ObjectStore.of(project)
    if pinned.manifest is not None:
        if pinned.table is not None:
            return True  # the gate reads its pinned files (or their kept copies), verified
        return all(store.has(f.digest) for f in pinned.manifest.files)
    return pinned.dvc is None and store.has(pinned.digest)
