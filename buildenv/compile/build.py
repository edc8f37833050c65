"""Compile one (training, environment) pair: check, lock, validate, train, verify, emit.

The cheapest checks run first: static checks and the lock (a stat per
dataset) decide whether anything changed. The cache key covers everything
that determines the artifact's bytes: code digest (the entry module and the
repository modules it imports), resolved-environment digest, dataset digests,
seed, buildenv and library versions. When `dist/` already holds the artifact
for that key, nothing runs; when the content-addressed cache holds it, it is
copied; otherwise the training runs in a subprocess and the result is
verified, written to a temp dir and renamed into place, then registered.
Each build is a progress task whose phases (`PHASES`) are timed: `BuildOutcome.timings`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from buildenv import __version__
from buildenv.compile.artifact import (
    LINEAGE_FILE,
    UNHASHED,
    build_time_iso,
    card_serial,
    finalize_mlmodel,
    read_lineage,
    write_lineage,
)
from buildenv.compile.cache import (
    CACHED_FAILURE,
    cache_key_parts,
    cached_failure,
    code_files,
    explain_rebuild,
    failure_file,
    intact,
    known_reads,
    remember_failure,
    remember_reads,
    save_to_cache,
    store,
    with_reads,
)
from buildenv.compile.card import card_facts, write_card
from buildenv.compile.check import check_training
from buildenv.compile.integrity import sign_artifact
from buildenv.compile.launch import EarlyTraining, package_parent, run_training
from buildenv.compile.locking import checked_lock
from buildenv.compile.outputs import check_out_dir, pair_mutex, scratch
from buildenv.compile.registry import ensure_registered
from buildenv.compile.remote import RemoteTraining, train_on_ray
from buildenv.compile.sandbox import check_available
from buildenv.compile.sandbox_policy import SandboxPolicy, sandbox_policy
from buildenv.compile.verify import (
    artifact_mib,
    check_toolchain,
    located,
    verify_limits,
    verify_model,
)
from buildenv.core import progress
from buildenv.core.atomic import atomic_dir
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.core.tempdirs import owned_temp_dir, sweep
from buildenv.data.executor import RayExecutor
from buildenv.data.lock.lockfile import RESTRICTED_OUTPUT
from buildenv.data.lock.read_files import file_digests, pinnable, recorded_reads
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.toolchain.toolchain import (
    Interpreter,
    Toolchain,
    environment_ready,
    runner_interpreter,
    training_toolchain,
)

__all__ = ["PHASES", "BuildOptions", "BuildOutcome", "build_pair", "failure_reason",
           "phase_timings"]

PHASES = ("wait", "check", "validate", "toolchain", "precheck", "train", "importance", "verify", "onnx",
          "parity", "save", "register")


@dataclass
class BuildOptions:
    out: Path | None = None  # default dist/<training>/<env>
    register: bool = True
    use_cache: bool = True
    timeout: float | None = None
    ray: RayExecutor | None = None  # trains on Ray (buildenv.compile.remote), else here


@dataclass
class BuildOutcome:
    training: str
    env: str
    status: str  # built | cached | failed
    diagnostics: list[Diagnostic] = field(default_factory=list)
    reason: str = ""
    artifact: Path | None = None
    lineage: dict | None = None
    registered: dict | None = None
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # phase -> seconds (PHASES order)
    exit_code: int = 1  # when failed: 2 for a configuration error (an invalid environment file)

    def first_error(self) -> Diagnostic | None:
        return next((d for d in self.diagnostics if d.is_error), None)

    def to_json(self) -> dict:
        first = self.first_error()
        return {"training": self.training, "environment": self.env, "status": self.status,
                "reason": self.reason, "artifact": str(self.artifact) if self.artifact else None,
                "first_error": first.to_text() if first else None,
                "diagnostics": [d.to_json() for d in self.diagnostics],
                "registered": self.registered, "seconds": round(self.seconds, 3),
                "timings": self.timings,
                "evaluation": (self.lineage or {}).get("evaluation")}


def build_pair(project: Project, multiverse: Multiverse, training: str, env_name: str,
               options: BuildOptions, all_resolved: dict[str, Resolved] | None = None
               ) -> BuildOutcome:
    started = time.monotonic()
    outcome = BuildOutcome(training, env_name, "failed")
    out = options.out or project.root / "dist" / training / env_name
    with progress.task(f"{training} @ {env_name}", keep=True) as task:
        task.phase("check")
        try:
            with pair_mutex(project, training, env_name, out, options.timeout):  # processes
                if options.out is not None:
                    check_out_dir(project, out)
                _build(project, multiverse, training, env_name, options, all_resolved, outcome)
        except _Abort:  # unwound atomic_dir: the temp dir is gone, nothing was emitted
            outcome.status = "failed"
        except DiagnosticError as exc:
            outcome.diagnostics.extend(exc.diagnostics)
            outcome.status = "failed"
            outcome.exit_code = max(outcome.exit_code, exc.exit_code)
        stopped_in = task.phase_name
        task.phase(None)
        outcome.timings = phase_timings(task.timings, outcome.timings)
        task.timings, task.status = dict(outcome.timings), outcome.status
    if outcome.status == "failed":
        outcome.reason = failure_reason(outcome, stopped_in)
    outcome.seconds = time.monotonic() - started
    return outcome


def failure_reason(outcome: BuildOutcome, phase: str | None) -> str:
    """Why a pair failed, for the matrix: the step it stopped in and the first error's code
    (`verify failed (BE401)`), or that the same inputs failed before."""
    first = outcome.first_error()
    code = f" ({first.code})" if first is not None else ""
    if outcome.reason == CACHED_FAILURE:
        return CACHED_FAILURE + code
    return f"{phase or 'check'} failed{code}"


def phase_timings(own: dict[str, float], runner: dict[str, float]) -> dict[str, float]:
    """Seconds per phase, in `PHASES` order. `own` are the phases this process timed;
    `runner` those the training process reports. Its precheck, importance, onnx, parity and
    save come out of the `train` span, which keeps the process start and imports along with
    `train()`. Parity and importance overlap (both from the evaluation rows on; parity's
    comparison once the evaluation is done): the longer of the two is taken out once."""
    merged = dict(own)
    span = merged.get("train")
    if span is not None:
        inner = {k: float(runner[k]) for k in ("precheck", "importance", "onnx", "parity", "save")
                 if k in runner}
        serial = sum(v for k, v in inner.items() if k not in ("importance", "parity"))
        beside = max(inner.get("importance", 0.0), inner.get("parity", 0.0))
        merged["train"] = max(0.0, span - serial - beside)
        for name, seconds in inner.items():
            merged[name] = merged.get(name, 0.0) + seconds
    return {name: round(merged[name], 3) for name in PHASES if name in merged}


def _build(project: Project, multiverse: Multiverse, training: str, env_name: str,
           options: BuildOptions, all_resolved: dict[str, Resolved] | None,
           outcome: BuildOutcome) -> None:
    config = project.training(training)
    res = multiverse.resolve(env_name)
    sweep(scratch(project))  # what killed builds left, whichever way this one goes
    problems = check_training(project, training, config, res)
    lock, lock_problems = checked_lock(multiverse, res)
    problems += lock_problems
    outcome.diagnostics = problems
    if any(p.is_error for p in problems) or lock is None:
        return
    policy = sandbox_policy(project, training, config, res)
    digests = {name: d.digest for name, d in lock.datasets.items()}
    label_pins = lock.label_pins()
    toolchain = _toolchain(project, training, config, res, problems)
    base = cache_key_parts(project, training, config, res, digests, toolchain, label_pins,
                           policy.key())
    files = code_files(project, config)
    hexbase = digest_json(base).split(":", 1)[1]  # every input but the files the code reads
    out = options.out or project.root / "dist" / training / env_name
    previous = read_lineage(out)
    # the files the artifact in dist/ was built reading, as they are now: its key if unchanged
    before = with_reads(base, file_digests(project.root, recorded_reads(previous)))
    if previous and previous.get("cache_key") == digest_json(before) and \
            intact(out, previous):
        outcome.status, outcome.reason, outcome.artifact = "cached", "up to date", out
        outcome.lineage = previous
        _maybe_register(project, training, env_name, out, previous, options, outcome)
        return
    known = known_reads(project, hexbase)  # what the last run with these inputs read
    parts = before if known is None else with_reads(base, file_digests(project.root, known))
    key = digest_json(parts)
    hexkey = key.split(":", 1)[1]
    entry = store(project) / hexkey[:2] / hexkey
    if options.use_cache and (entry / LINEAGE_FILE).is_file():
        cached = read_lineage(entry)
        if cached and cached.get("cache_key") == key and intact(entry, cached):
            progress.phase("save")
            with atomic_dir(out, scratch(project)) as tmp:
                shutil.copytree(entry, tmp, dirs_exist_ok=True)
            outcome.status, outcome.artifact, outcome.lineage = "cached", out, cached
            outcome.reason = "restored from cache"
            _maybe_register(project, training, env_name, out, cached, options, outcome)
            return
    failure = failure_file(project, hexbase)  # its record holds the files the failed run read
    if options.use_cache and failure.is_file():
        all_resolved = all_resolved if all_resolved is not None else multiverse.resolve_all()[0]
        replayed = cached_failure(project, hexbase, _multiverse_digest(all_resolved))
        if replayed is not None:
            outcome.diagnostics = problems + replayed
            outcome.reason = CACHED_FAILURE
            return
    outcome.reason = explain_rebuild(previous, {**before, "_files": files})
    check_available(policy)  # a required sandbox this machine lacks: before any work
    early = _early(project, config, res, options, digests, label_pins, lock, base, policy,
                   toolchain)
    try:
        _validated_build(project, multiverse, training, env_name, options, all_resolved,
                         outcome, res, config, lock, base, files, hexbase, policy,
                         toolchain, problems, out, early)
    finally:
        if early is not None:  # validation failed or was interrupted: nothing of it is kept
            early[0].stop()
            shutil.rmtree(early[1], ignore_errors=True)


def _early(project: Project, config: TrainingConfig, res: Resolved, options: BuildOptions,
           digests: dict[str, str], label_pins: dict, lock, parts: dict,
           policy: SandboxPolicy, toolchain: Toolchain) -> tuple[EarlyTraining, Path] | None:
    """The training process started before validation, so its start and imports overlap it:
    only here (not on Ray), when its toolchain's environment exists (nothing to create, no
    BE352/BE353 before validation's findings) and when the environment declares no
    restricted data (nothing is released from data validation may yet refuse). Its model
    goes to a scratch dir of this process."""
    if options.ray is not None or res.env.privacy.restricted or \
            not environment_ready(project, toolchain):
        return None
    interpreter = runner_interpreter(project, toolchain, package_parent())
    holder = owned_temp_dir(scratch(project), "train")
    model_dir = holder / "model"
    rows = _lock_rows(lock)
    manifests = lock.manifests()
    timeout = options.timeout or config.timeout

    def start(on_start: Callable[[subprocess.Popen], None]) -> dict:
        return run_training(project, config, res, model_dir, timeout, digests, label_pins,
                            manifests, _model_key(parts), rows, policy, interpreter, on_start)

    return EarlyTraining(start), holder


def _validated_build(project: Project, multiverse: Multiverse, training: str, env_name: str,
                     options: BuildOptions, all_resolved: dict[str, Resolved] | None,
                     outcome: BuildOutcome, res: Resolved, config: TrainingConfig, lock,
                     parts: dict, files: dict, hexbase: str,
                     policy: SandboxPolicy, toolchain: Toolchain, problems: list[Diagnostic],
                     out: Path, early: tuple[EarlyTraining, Path] | None) -> None:
    """Validate, then train (or take the result of the training started early), verify and
    emit. `parts` is the key of every input but the files the code reads (`hexbase` its
    digest): the key the artifact is stored under adds those the run read."""
    # validation and the label checks read data (pyarrow, pyarrow.compute): imported here,
    # while a training started early starts, not before it starts
    from buildenv.data.validate.validate import validate_env
    from buildenv.labels.checks import check_labels

    digests = {name: d.digest for name, d in lock.datasets.items()}
    label_pins = lock.label_pins()
    progress.phase("validate")
    problems += validate_env(res, project, digests, manifests=lock.manifests())
    if res.env.labels and not any(p.is_error for p in problems):
        problems += check_labels(project, multiverse, res, lock, all_resolved)
    coverage = None
    if _covered(res) and not any(p.is_error for p in problems):
        coverage, found = _coverage(project, res, digests, lock, label_pins)
        problems += found
    outcome.diagnostics = problems
    if any(p.is_error for p in problems):
        return
    progress.phase("toolchain")
    # BE352/BE353; on Ray, the worker finds or makes the same locked environment where it runs
    interpreter = None if options.ray is not None or early is not None else runner_interpreter(
        project, toolchain, package_parent())
    if options.register:
        _warm_registry()
    with atomic_dir(out, scratch(project)) as tmp:
        progress.phase("train")
        if early is not None:
            model_dir, result = early[1] / "model", early[0].result()
        else:
            model_dir = tmp / "model"
            result = _train(project, config, res, model_dir, options, digests, label_pins,
                            lock.manifests(), _model_key(parts), policy,
                            _lock_rows(lock), toolchain,
                            interpreter)
        outcome.timings = result.get("timings", {})
        read = _files_read(project, res, files, result)
        if options.use_cache:
            remember_reads(project, hexbase, list(read))
        if not result.get("ok"):
            found = [located(res, d) for d in result.get("diagnostics", [])]
            outcome.diagnostics = problems + found
            # an OSError or MemoryError in training may not recur: not remembered
            remember_failure(project, hexbase, found, options.use_cache and not result.get(
                "transient"), files_read=read)
            raise _Abort()
        progress.phase("verify")
        all_resolved = all_resolved if all_resolved is not None else multiverse.resolve_all()[0]
        found = _judge(res, result, all_resolved, config, model_dir)
        outcome.diagnostics = problems + found
        if any(p.is_error for p in found):
            remember_failure(project, hexbase, found, options.use_cache,
                             _multiverse_digest(all_resolved),  # hints name other environments
                             files_read=read)
            raise _Abort()
        problems = outcome.diagnostics
        progress.phase("save")
        for item in model_dir.iterdir():  # the scratch dir may be on another filesystem
            shutil.move(item, tmp / item.name)
        model_dir.rmdir()
        parts = with_reads(parts, read)
        key = digest_json(parts)
        hexkey = key.split(":", 1)[1]
        entry = store(project) / hexkey[:2] / hexkey
        finalize_mlmodel(tmp, _model_key(parts))
        lineage = _lineage(training, env_name, config, res, lock, result, parts, files, key,
                           toolchain)
        lineage["model_mib"] = round(artifact_mib(tmp, UNHASHED), 6)  # before the card
        _write_record(tmp, lineage, coverage, config, res, key)
        sign_artifact(project, tmp)  # buildenv.sig, when a signing key is configured
        outcome.lineage = read_lineage(tmp)
        if options.use_cache:
            save_to_cache(tmp, entry, scratch(project))
    outcome.status, outcome.artifact = "built", out
    _maybe_register(project, training, env_name, out, outcome.lineage or {}, options, outcome)


class _Abort(Exception):
    pass


def _files_read(project: Project, res: Resolved, files: dict, result: dict
                ) -> dict[str, str | None]:
    """The repository files the training read (the runner's record) that are code no other
    digest covers -- not its modules, data or buildenv's state (`read_files.pinnable`) --
    each with its digest now, sorted (with restricted datasets, only files that exist:
    `pinnable` keeps a path that may be made of restricted values out)."""
    paths = [p for p in result.get("code_reads") or [] if isinstance(p, str)]
    return file_digests(project.root, pinnable(project, res.env, files, paths)) if paths else {}


def _judge(res: Resolved, result: dict, all_resolved: dict[str, Resolved],
           config: TrainingConfig, model_dir: Path) -> list[Diagnostic]:
    """The training's result against the environment (and the multiverse, for hints), then
    the saved model against the serving budget on its size."""
    found = verify_model(res, result, all_resolved, config.module_path)
    errors = any(p.is_error for p in found)
    if (result.get("precheck") or {}).get("status") == "refused" and not errors:
        # the pre-check and verification share their rules: this is a bug
        found.append(Diagnostic("BE305", "the pre-check refused the model, but verification "
                                "found nothing to refuse", config.module_path,
                                hints=("set precheck = false for this training and report "
                                       "it",)))
    elif not errors:
        found += verify_limits(res, model_dir, UNHASHED)
    return found


def _train(project: Project, config: TrainingConfig, res: Resolved, model_dir: Path,
           options: BuildOptions, digests: dict[str, str], label_pins: dict,
           manifests: dict, release_key: str, policy: SandboxPolicy,
           rows: dict[str, int], toolchain: Toolchain, interpreter: Interpreter | None) -> dict:
    """The training process's result: here, or as a Ray task whose files come back here (the
    worker finds or creates the same locked toolchain on its machine)."""
    timeout = options.timeout or config.timeout
    if options.ray is not None:
        return train_on_ray(options.ray, RemoteTraining(
            project, config, res, timeout, digests, label_pins, manifests, release_key,
            options.ray.remote, policy, rows, toolchain), model_dir)
    return run_training(project, config, res, model_dir, timeout, digests, label_pins,
                        manifests, release_key, rows, policy, interpreter)


def _write_record(out: Path, lineage: dict, coverage: dict | None, config: TrainingConfig,
                  res: Resolved, key: str) -> None:
    """The model card, then the lineage (whose `model_digest` covers the card)."""
    if coverage is not None:
        lineage["coverage"] = coverage
    write_card(out, card_facts(lineage, config, res), card_serial(key), build_time_iso())
    write_lineage(out, lineage)


def _covered(res: Resolved) -> bool:
    return res.env.label is not None and res.env.label.coverage is not None


def _coverage(project: Project, res: Resolved, digests: dict[str, str], lock,
              label_pins: dict) -> tuple[dict | None, list[Diagnostic]]:
    """`label.coverage` on the training and evaluation rows: (what the lineage records,
    problems)."""
    # label coverage reads the label column (pyarrow): only environments that declare it
    from buildenv.data.gate.errors import GateError
    from buildenv.labels.coverage import check, label_counts, summary
    from buildenv.labels.labelset import LabelError

    try:
        counted, restricted = label_counts(project, res, digests, lock.manifests(), label_pins)
    except GateError as exc:
        return None, [exc.diagnostic]
    except LabelError as exc:
        return None, list(exc.diagnostics)
    return summary(res.env, counted, restricted), check(res, counted, restricted)


def _warm_registry() -> None:
    """Import MLflow's client while the training runs (seconds of imports, off the critical
    path). Registration itself still happens only after the artifact is complete."""
    def work() -> None:
        try:
            import mlflow.tracking  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="buildenv-warm-mlflow", daemon=True).start()


def _lock_rows(lock) -> dict[str, int]:
    """The lock's row counts for the pre-check's choice; withheld ones (a restricted output of
    user code) are left out, so that the choice does not depend on them."""
    return {name: d.rows for name, d in lock.datasets.items() if d.rows is not None}


def _label_lineage(res: Resolved, lock, result: dict) -> dict:
    """Each label set: its export's digest, taxonomy, UI version, mapping files and counts;
    and how the training's labels were obtained (from the training process)."""
    chosen = res.env.label.labels if res.env.label is not None else None
    out = {}
    for name, entry in sorted(lock.labels.items()):
        spec = res.env.labels[name]
        out[name] = {"uri": entry.uri, "format": entry.format, "digest": entry.digest,
                     "taxonomy": {"name": spec.taxonomy.name,
                                  "version": spec.taxonomy.version},
                     "ui_version": spec.ui_version, "mappings": dict(entry.mappings),
                     "reuse": [e.labels for e in spec.reuse],
                     "examples": entry.examples, "annotations": entry.annotations,
                     "annotators": entry.annotators, "label": name == chosen}
        if name == chosen and result.get("labels"):
            out[name]["resolution"] = result["labels"]
            if res.env.computed_over_restricted(name) is not None:
                # the labeling functions' exact figures over restricted data (a differencing
                # channel, like the lock's counts), its own or a reused set's: withheld
                out[name]["resolution"] = {"label_set": name,
                                           "counts_withheld": RESTRICTED_OUTPUT}
    return out


def _lineage(training: str, env_name: str, config: TrainingConfig, res: Resolved, lock,
             result: dict, parts: dict, files: dict, key: str, toolchain: Toolchain) -> dict:
    reads = result.get("reads", {})
    extra = {"labels": _label_lineage(res, lock, result)} if lock.labels else {}
    label = res.env.label.model_dump(mode="json", exclude_none=True) if res.env.label else None
    if label is not None and res.env.label is not None and res.env.label.labels is None:
        label.setdefault("classes", None)  # the form lineage always had for column labels
    return {**extra,
        "training": training,
        "entry": config.entry,
        "environment": env_name,
        "environment_digest": res.digest,
        "environment_chain": res.chain,
        "code_digest": parts["code_digest"],
        "code_files": files,
        "code_modules": result.get("code_modules", []),
        "datasets": {name: {"digest": d.digest, "uri": d.uri, "rows": d.rows,
                            "columns_read": reads.get(name, [])}
                     for name, d in sorted(lock.datasets.items())},
        "seed": config.seed,
        "threads": parts["threads"],
        "buildenv_version": __version__,
        "libraries": _model_libraries(result, toolchain),
        "toolchain": toolchain.lineage(),
        "python": parts["python"],
        "metrics": result.get("metrics", {}),
        "params": result.get("params", {}),
        "inputs": result.get("inputs"),
        "ops": result.get("ops", []),
        "model_class": result.get("model_class"),
        "family": result.get("family"),
        "format": result.get("format"),
        "task": result.get("task"),
        "classes": result.get("classes"),
        "importance": result.get("importance"),
        "evaluation": result.get("evaluation"),
        "onnx": result.get("onnx"),
        "parity": result.get("parity"),
        "precheck": result.get("precheck"),
        **({"latency": result["latency"]} if result.get("latency") else {}),
        "serving": res.env.serving.model_dump(mode="json") if res.env.serving else None,
        "label": label,
        "isolation": result.get("isolation"),
        **({"files_read": parts["files_read"]} if parts.get("files_read") else {}),
        "cache_key": key,
        "cache_parts": parts,
    }


def _toolchain(project: Project, training: str, config: TrainingConfig, res: Resolved,
               problems: list[Diagnostic]) -> Toolchain:
    """The training's locked toolchain, known before anything runs (BE350-BE355), whose
    every library must satisfy `serving.requirements` (BE408): a configuration error, exit 2."""
    toolchain = training_toolchain(project, training, config, res)
    forbidden = check_toolchain(res, toolchain, training)
    if forbidden:
        raise DiagnosticError(problems + forbidden, 2)
    return toolchain


def _model_libraries(result: dict, toolchain: Toolchain) -> dict[str, str]:
    """The distributions the model's classes and operators come from, at the versions of the
    toolchain (the runner names them; the lock knows their exact versions)."""
    out = {}
    for name, version in (result.get("libraries") or {}).items():
        out[canonicalize_name(name)] = toolchain.packages.get(canonicalize_name(name), version)
    return dict(sorted(out.items()))


def _maybe_register(project: Project, training: str, env_name: str, artifact: Path,
                    lineage: dict, options: BuildOptions, outcome: BuildOutcome) -> None:
    if not options.register or not lineage:
        return
    progress.phase("register")
    task = progress.current()
    so_far = phase_timings(task.timings if task else {}, outcome.timings)  # for the run

    outcome.registered, notes = ensure_registered(project, training, env_name, artifact,
                                                  lineage, timings=so_far)
    outcome.diagnostics = outcome.diagnostics + notes


def _model_key(parts: dict) -> str:
    """What MLmodel's uuid derives from: the cache key without the sandbox policy, which
    decides where a training may reach, not what it builds (the model's files are the same
    with and without a sandbox)."""
    return digest_json({k: v for k, v in parts.items() if k != "sandbox"})


def _multiverse_digest(all_resolved: dict[str, Resolved]) -> str:
    return digest_json({name: res.digest for name, res in sorted(all_resolved.items())})
