"""Which artifact `buildenv image` packages, checked before a byte of it is copied.

By default the artifact in `dist/<training>/<env>/`, verified against its lineage's
`model_digest`; when the registry's `<env>-champion` alias points at another version (after a
rollback, or a build not promoted yet) a BE769 warning says so, since an image is usually
meant to serve the champion. `--champion` packages the champion itself: downloaded from the
registry and verified against its `buildenv.artifact_digest` tag.
"""

from __future__ import annotations

from pathlib import Path

from buildenv.compile.artifact import read_lineage
from buildenv.compile.integrity import verify_artifact
from buildenv.compile.registry import TAG_DIGEST, client, find_version
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.release.gates import alias_name, champion_version, registry_error

# Deferred imports (mlflow): seconds of imports, paid only by what talks to the registry.

__all__ = ["select_artifact"]


def select_artifact(project: Project, training: str, env: str, champion: bool,
                    scratch: Path) -> tuple[Path, list[Diagnostic]]:
    """(directory to package, warnings). `scratch` receives a downloaded champion."""
    if champion:
        return _champion(project, training, env, scratch), []
    artifact = project.root / "dist" / training / env
    lineage = read_lineage(artifact)
    if lineage is None:
        return artifact, []  # write_context reports BE750
    verify_artifact(project, artifact, lineage.get("model_digest"),
                    f"the artifact of {training} @ {env}")
    note = _not_champion(project, training, env, artifact, lineage)
    return artifact, [note] if note else []


def _has_registry(project: Project) -> bool:
    uri = project.tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file()


def _not_champion(project: Project, training: str, env: str, artifact: Path,
                  lineage: dict) -> Diagnostic | None:
    if not _has_registry(project):
        return None
    try:
        c = client(project)
        current = champion_version(c, training, env)
        if current is None or (current.tags or {}).get(TAG_DIGEST) == lineage["model_digest"]:
            return None
        mine = find_version(c, training, lineage["model_digest"], env)
    except Exception:  # the registry is an advisory source here
        return None
    what = f"v{mine.version}" if mine is not None else "an unregistered artifact"
    return Diagnostic(
        "BE769", f"{project.rel(artifact)} holds {training} {what}, but {alias_name(env)} is "
        f"v{current.version}; the image packages {project.rel(artifact)}",
        severity=Severity.WARNING,
        hints=(f"`buildenv image {training} --env {env} --champion` packages the champion",))


def _champion(project: Project, training: str, env: str, scratch: Path) -> Path:
    try:
        import mlflow.artifacts

        c = client(project)
        current = champion_version(c, training, env)
        if current is None:
            raise DiagnosticError([Diagnostic(
                "BE772", f"--champion: {alias_name(env)} of model '{training}' is not set in "
                f"{project.tracking_uri()}",
                hints=(f"`buildenv promote {training} --env {env}` sets it; without "
                       "--champion, the image packages dist/",))])
        version = str(current.version)
        expected = (current.tags or {}).get(TAG_DIGEST)
        uri = c.get_model_version_download_uri(training, version)
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(scratch / f"v{version}"),
            tracking_uri=project.tracking_uri()))
    except Exception as exc:
        raise registry_error(project, exc, f"fetching {alias_name(env)}") from None
    verify_artifact(project, local, expected, f"model '{training}' v{version} "
                    f"({alias_name(env)})")
    return local
