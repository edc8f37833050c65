"""Compile one (training, environment) pair: check, lock, validate, train, verify, emit.

The cheapest checks run first: static checks and the lock (a stat per
dataset) decide whether anything changed. The cache key covers everything
that determines the artifact's bytes: code digest (the entry module and the
repository modules it imports), resolved-environment digest, dataset digests,
seed, buildenv and library versions. When `dist/` already holds the artifact
for that key, nothing runs; when the content-addressed cache holds it, it is
copied; otherwise the training runs in a subprocess and the result is
verified, written to a temp dir and renamed into place, then registered.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from . import __version__
from .artifact import LINEAGE_FILE, finalize_mlmodel, read_lineage, tree_digest, write_lineage
from .check import check_training, repo_imports
from .diagnostics import Diagnostic, DiagnosticError
from .digest import digest_json
from .fsutil import atomic_dir
from .lock import check_lock
from .project import Project, TrainingConfig
from .resolve import Multiverse, Resolved
from .verify import verify_model

__all__ = ["BuildOptions", "BuildOutcome", "build_pair", "cache_key_parts"]

_KEY_LIBRARIES = ("scikit-learn", "numpy", "pandas", "pyarrow", "mlflow", "scipy", "skl2onnx",
                  "onnx", "onnxruntime")
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "SOURCE_DATE_EPOCH", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV")
_KEEP_PREFIXES = ("AWS_", "GOOGLE_", "GCS_")


@dataclass
class BuildOptions:
    out: Path | None = None  # default dist/<training>/<env>
    register: bool = True
    use_cache: bool = True
    timeout: float | None = None


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
    timings: dict = field(default_factory=dict)

    def first_error(self) -> Diagnostic | None:
        return next((d for d in self.diagnostics if d.is_error), None)

    def to_json(self) -> dict:
        first = self.first_error()
        return {"training": self.training, "environment": self.env, "status": self.status,
                "reason": self.reason, "artifact": str(self.artifact) if self.artifact else None,
                "first_error": first.to_text() if first else None,
                "diagnostics": [d.to_json() for d in self.diagnostics],
                "registered": self.registered, "seconds": round(self.seconds, 3)}


@functools.cache
def _library_versions() -> dict[str, str]:
    out = {}
    for name in _KEY_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def code_files(project: Project, config: TrainingConfig) -> dict[str, str]:
    files = repo_imports(project, config.module_path)
    out = {}
    for path in files:
        out[project.rel(path)] = "sha256:" + __import__("hashlib").sha256(
            path.read_bytes()).hexdigest()
    return out


def cache_key_parts(project: Project, training: str, config: TrainingConfig, res: Resolved,
                    dataset_digests: dict[str, str]) -> dict:
    files = code_files(project, config)
    return {
        "code_digest": digest_json({"files": files, "entry": config.entry}),
        "environment_digest": res.digest,
        "datasets": dict(sorted(dataset_digests.items())),
        "seed": config.seed,
        "threads": config.threads,
        "buildenv": __version__,
        "python": platform.python_version(),
        "libraries": _library_versions(),
    }


def explain_rebuild(previous: dict | None, parts: dict) -> str:
    """Why a pair is rebuilt, by the cheapest difference first."""
    if previous is None:
        return "not built before"
    old = previous.get("cache_parts") or {}
    if old.get("code_digest") != parts["code_digest"]:
        changed = sorted(set((previous.get("code_files") or {}).items()) ^ set(
            (parts.get("_files") or {}).items()))
        names = sorted({name for name, _ in changed})
        return "code changed" + (f" ({', '.join(names)})" if names else "")
    if old.get("datasets") != parts["datasets"]:
        names = sorted(k for k in set(old.get("datasets", {})) | set(parts["datasets"])
                       if old.get("datasets", {}).get(k) != parts["datasets"].get(k))
        return ", ".join(f"dataset '{n}' changed" for n in names)
    if old.get("environment_digest") != parts["environment_digest"]:
        return "environment changed"
    for key in ("seed", "buildenv", "python", "libraries"):
        if old.get(key) != parts[key]:
            return f"{key} changed"
    return "artifact missing or modified"


def _child_env(seed: int, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # The runner must import this very buildenv (a Pants sandbox, a test's PYTHONPATH).
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update({"PYTHONHASHSEED": str(seed % (2**32)), "TZ": "UTC",
                "PYTHONDONTWRITEBYTECODE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true", "MLFLOW_TRACKING_URI": "file:///nonexistent-buildenv"})
    return env


def _die_with_parent() -> None:
    """Linux: the training dies when the build process does (SIGKILL leaves no orphan)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def holdout_file(project: Project, cache_key: str) -> Path:
    """Where a build's held-out sample is kept (local state, not the artifact)."""
    hexkey = cache_key.split(":", 1)[1]
    return project.state_dir / "holdouts" / hexkey[:2] / f"{hexkey}.parquet"


def run_training(project: Project, config: TrainingConfig, res: Resolved, out_dir: Path,
                 timeout: float, holdout_path: Path | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="buildenv-train-"))
    try:
        request = {
            "root": str(project.root), "data_root": str(project.data_root or project.root),
            "module_path": config.module_path, "function": config.function,
            "seed": config.seed, "env": res.env.model_dump(mode="json", by_alias=True),
            "out_dir": str(out_dir), "result": str(work / "result.json"),
            "holdout_path": str(holdout_path) if holdout_path else None,
        }
        (work / "request.json").write_text(json.dumps(request))
        log_path = work / "output.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "buildenv.runner", str(work / "request.json")],
                cwd=project.root, env=_child_env(config.seed, config.threads), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return {"ok": False, "diagnostics": [{
                    "code": "BE302", "message": f"training exceeded its time limit of "
                    f"{timeout:g} s", "path": config.module_path, "line": None, "col": None,
                    "severity": "error", "hints": ["raise `timeout` in the training's "
                                                   "[tool.buildenv.trainings] table"]}]}
        output = log_path.read_text(errors="replace")
        result_file = work / "result.json"
        if not result_file.is_file():
            tail = [line for line in output.strip().splitlines()[-5:]]
            return {"ok": False, "output": output, "diagnostics": [{
                "code": "BE305", "message": f"training process exited with code "
                f"{proc.returncode} and no result", "path": config.module_path, "line": None,
                "col": None, "severity": "error", "hints": tail}]}
        result = json.loads(result_file.read_text())
        result["output"] = output
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _store(project: Project) -> Path:
    return project.state_dir / "cache" / "builds"


def build_pair(project: Project, mv: Multiverse, training: str, env_name: str,
               options: BuildOptions, everything: dict[str, Resolved] | None = None
               ) -> BuildOutcome:
    started = time.monotonic()
    outcome = BuildOutcome(training, env_name, "failed")
    try:
        _build(project, mv, training, env_name, options, everything, outcome)
    except _Abort:  # unwound atomic_dir: the temp dir is gone, nothing was emitted
        outcome.status = "failed"
    except DiagnosticError as exc:
        outcome.diagnostics.extend(exc.diagnostics)
        outcome.status = "failed"
    if outcome.status == "failed" and outcome.reason != CACHED_FAILURE:
        outcome.reason = ""  # "why it rebuilt" means nothing for a build that did not finish
    outcome.seconds = time.monotonic() - started
    return outcome


def _build(project: Project, mv: Multiverse, training: str, env_name: str,
           options: BuildOptions, everything: dict[str, Resolved] | None,
           outcome: BuildOutcome) -> None:
    config = project.training(training)
    res = mv.resolve(env_name)
    problems = check_training(project, training, config, res)
    lock, lock_problems = check_lock(mv, res)
    problems += lock_problems
    outcome.diagnostics = problems
    if any(p.is_error for p in problems) or lock is None:
        return
    digests = {name: d.digest for name, d in lock.datasets.items()}
    parts = cache_key_parts(project, training, config, res, digests)
    files = code_files(project, config)
    key = digest_json(parts)
    out = options.out or project.root / "dist" / training / env_name
    previous = read_lineage(out)
    if previous and previous.get("cache_key") == key and _intact(out, previous):
        outcome.status, outcome.reason, outcome.artifact = "cached", "up to date", out
        outcome.lineage = previous
        _maybe_register(project, training, env_name, out, previous, options, outcome)
        return
    hexkey = key.split(":", 1)[1]
    entry = _store(project) / hexkey[:2] / hexkey
    if options.use_cache and (entry / LINEAGE_FILE).is_file():
        cached = read_lineage(entry)
        if cached and cached.get("cache_key") == key and _intact(entry, cached):
            with atomic_dir(out) as tmp:
                shutil.copytree(entry, tmp, dirs_exist_ok=True)
            outcome.status, outcome.artifact, outcome.lineage = "cached", out, cached
            outcome.reason = "restored from cache"
            _maybe_register(project, training, env_name, out, cached, options, outcome)
            return
    failure = _failure_file(project, hexkey)
    if options.use_cache and failure.is_file():
        try:
            cached_failure = json.loads(failure.read_text())
            outcome.diagnostics = problems + [Diagnostic.from_json(d) for d in cached_failure]
            outcome.reason = CACHED_FAILURE
            return
        except (OSError, ValueError, KeyError):
            pass
    parts_with_files = {**parts, "_files": files}
    outcome.reason = explain_rebuild(previous, parts_with_files)
    from .validate import validate_env  # pyarrow: only when something is to be built

    problems += validate_env(res, project, digests)
    outcome.diagnostics = problems
    if any(p.is_error for p in problems):
        return
    if options.register:
        _warm_registry()
    with atomic_dir(out) as tmp:
        model_dir = tmp / "model"
        result = run_training(project, config, res, model_dir, options.timeout or config.timeout,
                              holdout_file(project, key))
        outcome.timings = result.get("timings", {})
        if not result.get("ok"):
            found = [Diagnostic.from_json(d) for d in result.get("diagnostics", [])]
            outcome.diagnostics = problems + found
            _remember_failure(project, hexkey, found, options)
            raise _Abort()
        multiverse = everything if everything is not None else mv.resolve_all()[0]
        found = verify_model(res, result, multiverse, config.module_path)
        outcome.diagnostics = problems + found
        if any(p.is_error for p in found):
            _remember_failure(project, hexkey, found, options)
            raise _Abort()
        problems = outcome.diagnostics
        for item in model_dir.iterdir():
            os.replace(item, tmp / item.name)
        model_dir.rmdir()
        finalize_mlmodel(tmp, key)
        lineage = _lineage(training, env_name, config, res, lock, result, parts, files, key)
        write_lineage(tmp, lineage)
        outcome.lineage = read_lineage(tmp)
        if options.use_cache:
            _save_to_cache(tmp, entry)
    outcome.status, outcome.artifact = "built", out
    _maybe_register(project, training, env_name, out, outcome.lineage or {}, options, outcome)


class _Abort(Exception):
    pass


def _warm_registry() -> None:
    """Import MLflow's client while the training runs (seconds of imports, off the critical
    path). Registration itself still happens only after the artifact is complete."""
    import threading

    def work() -> None:
        try:
            import mlflow.tracking  # noqa: F401
        except Exception:
            pass

    threading.Thread(target=work, name="buildenv-warm-mlflow", daemon=True).start()


CACHED_FAILURE = "failed before with the same inputs"


# Failures that depend only on the inputs; a timeout or a crash may not recur, so is retried.
_DETERMINISTIC = ("BE301", "BE303", "BE304", "BE401", "BE402", "BE403", "BE404", "BE405",
                  "BE406", "BE407", "BE408", "BE409")


def _failure_file(project: Project, hexkey: str) -> Path:
    return project.state_dir / "cache" / "failures" / hexkey[:2] / f"{hexkey}.json"


def _remember_failure(project: Project, hexkey: str, found: list[Diagnostic],
                      options: BuildOptions) -> None:
    errors = [d for d in found if d.is_error]
    if not options.use_cache or not errors or any(d.code not in _DETERMINISTIC for d in errors):
        return
    from .fsutil import atomic_write_text

    try:
        atomic_write_text(_failure_file(project, hexkey), json.dumps([d.to_json() for d in found]))
    except OSError:
        pass


def _intact(directory: Path, lineage: dict) -> bool:
    return tree_digest(directory, exclude=(LINEAGE_FILE,)) == lineage.get("model_digest")


def _save_to_cache(source: Path, entry: Path) -> None:
    try:
        with atomic_dir(entry) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    except OSError:
        pass  # a cache that cannot be written is only slower


def _lineage(training: str, env_name: str, config: TrainingConfig, res: Resolved, lock,
             result: dict, parts: dict, files: dict, key: str) -> dict:
    reads = result.get("reads", {})
    return {
        "training": training,
        "entry": config.entry,
        "environment": env_name,
        "environment_digest": res.digest,
        "environment_chain": res.chain,
        "code_digest": parts["code_digest"],
        "code_files": files,
        "datasets": {name: {"digest": d.digest, "uri": d.uri, "rows": d.rows,
                            "columns_read": reads.get(name, [])}
                     for name, d in sorted(lock.datasets.items())},
        "seed": config.seed,
        "buildenv_version": __version__,
        "libraries": {**parts["libraries"], **result.get("libraries", {})},
        "python": parts["python"],
        "metrics": result.get("metrics", {}),
        "params": result.get("params", {}),
        "inputs": result.get("inputs"),
        "ops": result.get("ops", []),
        "model_class": result.get("model_class"),
        "importance": result.get("importance"),
        "holdout": result.get("holdout"),
        "onnx": result.get("onnx"),
        "serving": res.env.serving.model_dump(mode="json") if res.env.serving else None,
        "label": res.env.label.model_dump(mode="json") if res.env.label else None,
        "cache_key": key,
        "cache_parts": parts,
    }


def _maybe_register(project: Project, training: str, env_name: str, artifact: Path,
                    lineage: dict, options: BuildOptions, outcome: BuildOutcome) -> None:
    if not options.register or not lineage:
        return
    marker = project.state_dir / "registered" / digest_json(
        [project.tracking_uri(), training, env_name, lineage.get("model_digest")]).split(":")[1]
    if marker.is_file():
        outcome.registered = json.loads(marker.read_text())
        return
    from .registry import register_artifact

    outcome.registered = register_artifact(project, training, env_name, artifact, lineage)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**outcome.registered, "created": False}))
