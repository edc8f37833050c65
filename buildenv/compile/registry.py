"""MLflow tracking and model registry: every build is a run and a model version.

Default store: `sqlite:///<root>/.buildenv/mlflow.db` with artifacts beside it;
any MLflow tracking URI works (`BUILDENV_TRACKING_URI`, `[tool.buildenv]
tracking_uri`). Registration is idempotent: a version is identified by the
artifact's digest, so rebuilding identical inputs never adds a version.
Registration is the last step of a build: a killed build registers nothing.
The run carries the build's phase timings as metrics `timing.<phase>_s`.

Processes sharing a repository serialise registration (and the creation of a new sqlite
store, whose schema migrations are not safe to run twice at once) on a cross-process lock per
tracking store, so one artifact digest is one version however many builds race. A build
remembers what it registered in `.buildenv/registered/`; that marker is written atomically
and re-checked against the store before it is believed, so a lost or reset store means
registering again, never a stale "registered vN".
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.extras import require
from buildenv.core.mutex import mutex, mutex_path, mutex_timeout
from buildenv.core.project import Project

# Deferred imports (mlflow): seconds of imports, which a build overlaps with its training
# (`build._warm_registry`) and which commands that never reach the registry do not pay.

__all__ = ["client", "ensure_registered", "register_artifact", "slice_metrics",
           "store_lock", "ui_command"]

TAG_DIGEST = "buildenv.artifact_digest"
TAG_ENV = "buildenv.environment"
TAG_LIBRARY = "buildenv.library."  # + distribution name: the version the model was trained with
_READY: set[str] = set()  # sqlite stores this process has seen created and migrated


@contextmanager
def store_lock(project: Project) -> Iterator[None]:
    """Exclusive use of the tracking store for a registration or an alias move."""
    uri = project.tracking_uri()
    # Beside an sqlite store: every process using it shares the lock, whatever its root.
    base = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else \
        project.state_dir
    with mutex(mutex_path(base, "registry", uri), f"the MLflow store {uri}",
                   mutex_timeout(300.0)):
        yield


def client(project: Project):
    """An MLflow client of the project's tracking URI (BE026 without the `mlflow` extra)."""
    uri = project.tracking_uri()
    _need_mlflow(uri)
    # MLflow draws a progress bar on stderr while it downloads artifacts (promotion loads the
    # champion) and logs its schema migrations: what a command prints is buildenv's, so
    # `--quiet` stays quiet. Levels are set after the import, which configures its loggers.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)

    if not uri.startswith("sqlite:") or uri in _READY:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    with store_lock(project):  # creates and migrates the schema, one process at a time
        if uri.startswith("sqlite:///"):
            path = Path(uri[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.stat().st_size == 0:
                _create_sqlite_store(path)
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        c.search_experiments(max_results=1)  # migrates an older schema
        c.search_registered_models(max_results=1)
    _READY.add(uri)
    return c


def _need_mlflow(uri: str) -> None:
    """BE026 without the `mlflow` extra: the client, and for sqlite stores SQLAlchemy."""
    require("mlflow", f"the MLflow registry at {uri}", "mlflow")
    if uri.startswith("sqlite:"):
        require("mlflow", f"the MLflow store {uri}", "sqlalchemy", "alembic")


def ui_command(project: Project, host: str, port: int) -> list[str] | None:
    """The `mlflow server` command line that shows this project's store in a browser (the
    embedded sqlite store, created if need be, with the artifacts beside it); None when the
    tracking URI is a server already (it has its own UI)."""
    uri = project.tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    client(project)  # a new store is created and migrated under the store lock, not by the UI
    artifacts = (project.state_dir / "mlartifacts").resolve()
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--default-artifact-root", artifacts.as_uri(), "--host", host, "--port", str(port),
            "--workers", "1"]


def _create_sqlite_store(path: Path) -> None:
    """A new sqlite store, made and migrated in a temporary file and renamed into place (under
    the store lock). MLflow creates its schema in many steps; a build killed between them
    would leave a store MLflow cannot open again ("table ... already exists")."""
    from mlflow.tracking import MlflowClient

    for stale in path.parent.glob(f"{path.name}.init-*"):  # a killed creation's (we hold
        stale.unlink(missing_ok=True)                      # the lock: nobody else's)
    tmp = path.with_name(f"{path.name}.init-{os.getpid()}")
    uri = f"sqlite:///{tmp}"
    made = MlflowClient(tracking_uri=uri, registry_uri=uri)
    made.search_experiments(max_results=1)
    made.search_registered_models(max_results=1)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _experiment(c: Any, project: Project, training: str) -> str:
    name = f"buildenv/{training}"
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    uri = project.tracking_uri()
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = (project.state_dir / "mlartifacts").resolve().as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:
        exp = c.get_experiment_by_name(name)  # created concurrently
        if exp is None:
            raise
        return exp.experiment_id


def register_artifact(project: Project, training: str, env: str, artifact: Path,
                      lineage: dict, timings: dict[str, float] | None = None) -> dict:
    """Log the artifact as a run and register it as a version of model `training`.
    `timings` (phase -> seconds) become metrics; registration times itself."""
    _need_mlflow(project.tracking_uri())
    try:
        with store_lock(project):
            return _register(project, training, env, artifact, lineage, timings or {})
    except DiagnosticError:
        raise
    except Exception as exc:
        raise DiagnosticError([Diagnostic(
            "BE704", f"could not register {training}@{env} in MLflow at "
            f"{project.tracking_uri()}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hints=("the artifact in dist/ is complete; rerun the build to retry registration",)
        )]) from None


def timing_metric(phase: str) -> str:
    return f"timing.{phase}_s"


def find_version(c: Any, training: str, digest: str, env: str):
    from mlflow.exceptions import MlflowException

    try:
        versions = c.search_model_versions(f"name='{training}'")
    except MlflowException:
        return None
    for version in versions:
        tags = version.tags or {}
        if tags.get(TAG_DIGEST) == digest and tags.get(TAG_ENV) == env:
            return version
    return None


def _register(project: Project, training: str, env: str, artifact: Path, lineage: dict,
              timings: dict[str, float]) -> dict:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    started = time.perf_counter()
    c = client(project)
    digest = lineage["model_digest"]
    try:
        c.get_registered_model(training)
    except MlflowException:
        try:
            c.create_registered_model(training, description=f"buildenv training '{training}'")
        except MlflowException:
            pass  # created concurrently
    existing = find_version(c, training, digest, env)
    if existing is not None:
        return {"version": existing.version, "run_id": existing.run_id, "created": False}
    exp_id = _experiment(c, project, training)
    tags = {TAG_ENV: env, TAG_DIGEST: digest,
            "buildenv.environment_digest": lineage["environment_digest"],
            "buildenv.code_digest": lineage["code_digest"],
            "buildenv.cache_key": lineage["cache_key"],
            "buildenv.training": training}
    libraries = lineage.get("libraries") or {}
    tags.update({f"{TAG_LIBRARY}{name}": str(version) for name, version in libraries.items()})
    run = c.create_run(exp_id, run_name=f"{training}@{env}", tags=tags)
    run_id = run.info.run_id
    params = [Param("seed", str(lineage["seed"])), Param("environment", env)]
    params += [Param(f"dataset.{k}", v["digest"][:71]) for k, v in lineage["datasets"].items()]
    params += [Param(k, str(v)[:6000]) for k, v in sorted(lineage.get("params", {}).items())
               if k not in ("seed", "environment")]
    metrics = [Metric(k, float(v), 0, 0) for k, v in sorted(lineage.get("metrics", {}).items())]
    evaluated = ((lineage.get("evaluation") or {}).get("metrics") or {})
    metrics += [Metric(f"evaluation.{k}", float(v), 0, 0) for k, v in sorted(evaluated.items())]
    metrics += [Metric(k, v, 0, 0) for k, v in dict(slice_metrics(
        lineage.get("evaluation"))).items()]
    metrics += [Metric(timing_metric(k), float(v), 0, 0) for k, v in timings.items()
                if k != "register"]
    c.log_batch(run_id, metrics=metrics, params=params,
                tags=[RunTag("mlflow.source.name", lineage.get("entry", training))])
    c.log_artifacts(run_id, str(artifact), "model")
    source = f"{run.info.artifact_uri}/model"
    trained_with = ", ".join(f"{n} {v}" for n, v in sorted(libraries.items()))
    version = c.create_model_version(
        training, source, run_id=run_id, tags=tags,
        description=f"{training} compiled against {env}"
        + (f"; trained with {trained_with}" if trained_with else ""))
    c.log_metric(run_id, timing_metric("register"), round(time.perf_counter() - started, 3), 0, 0)
    c.set_terminated(run_id)
    return {"version": version.version, "run_id": run_id, "created": True}


def slice_metrics(evaluation: dict | None) -> list[tuple[str, float]]:
    """`evaluation.<metric>.<slice>` (and `evaluation.rows.<slice>`) of every slice the
    lineage shows, as released (withheld slices have no figures to log)."""
    out: list[tuple[str, float]] = []
    for family in (evaluation or {}).get("slices") or []:
        for entry in family.get("slices") or []:
            rows = entry.get("rows")
            if isinstance(rows, dict):  # a differentially private release
                rows = rows.get("value")
            if rows is not None:
                out.append((f"evaluation.rows.{entry['key']}", float(rows)))
            for metric, figure in sorted((entry.get("metrics") or {}).items()):
                if figure.get("value") is not None:
                    out.append((f"evaluation.{metric}.{entry['key']}", float(figure["value"])))
    return out


def _marker(project: Project, training: str, env: str, digest: str | None) -> Path:
    key = digest_json([project.tracking_uri(), training, env, digest]).split(":")[1]
    return project.state_dir / "registered" / key


def ensure_registered(project: Project, training: str, env: str, artifact: Path,
                      lineage: dict, timings: dict[str, float] | None = None
                      ) -> tuple[dict, list[Diagnostic]]:
    """Register unless the store still holds this artifact's version: (registration, notes)."""
    digest = lineage.get("model_digest")
    marker = _marker(project, training, env, digest)
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and digest and _still_registered(
            project, training, str(recorded.get("version")), digest):
        return {**recorded, "created": False}, []
    result = register_artifact(project, training, env, artifact, lineage, timings)
    notes = []
    if isinstance(recorded, dict) and result.get("created"):
        notes.append(Diagnostic(
            "BE770", f"{training} v{recorded.get('version')} was registered for this artifact "
            f"before, but {project.tracking_uri()} no longer holds it; registered it again as "
            f"v{result['version']}", severity=Severity.NOTE))
    atomic_write_text(marker, json.dumps({**result, "created": False}))
    return result, notes


_REGISTERED_SQL = (
    "SELECT 1 FROM model_versions v JOIN model_version_tags t "
    "ON t.name = v.name AND t.version = v.version "
    "WHERE v.name = ? AND v.version = ? AND v.current_stage != 'Deleted_Internal' "
    "AND t.key = ? AND t.value = ?")


def _still_registered(project: Project, training: str, version: str, digest: str) -> bool:
    """Does the store hold `training` v`version` with this digest? For the embedded sqlite
    store a read-only query answers without importing MLflow (no-op builds stay fast)."""
    if not version.isdigit():
        return False
    uri = project.tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            return False
        try:
            con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
            try:
                row = con.execute(_REGISTERED_SQL, (training, int(version), TAG_DIGEST,
                                                    digest)).fetchone()
            finally:
                con.close()
            return row is not None
        except sqlite3.Error:
            pass  # another schema: ask MLflow
    try:
        found = client(project).get_model_version(training, version)
    except Exception:
        return False
    return (found.tags or {}).get(TAG_DIGEST) == digest
