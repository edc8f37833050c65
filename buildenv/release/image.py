"""`buildenv image`: a serving image for one artifact, as a Docker build context and/or an OCI
archive built without any daemon.

The context (default `.buildenv/image/<training>/<env>/`) holds:

  Dockerfile          FROM the base, COPY the three directories below, no RUN step
  requirements.txt    `serving.requirements`, for people and for pip-based rebuilds
  image.json          what went in: artifact digest, python version, every vendored package
  app/serve.py        the stdlib HTTP app (buildenv/serving/serve.py), app/model_runtime.py
                      (buildenv/core: loading and predicting, as the build measured them) and
                      app/serving.json, the contract it enforces: the model's inputs as served
                      columns (dtype, nullability, domain, range), its descriptor, the types
                      a skops file may hold (from the environment's serving.ops)
  model/              the artifact from dist/<training>/<env>/ (or, with --champion, the
                      champion's from the registry), verified against its recorded digest
                      before it is copied; the app verifies it again before loading it
  site-packages/      the serving runtime, vendored from the Python environment running
                      buildenv: `serving.requirements` plus what the model's format needs
                      (`RUNTIME`: numpy for an ONNX graph; pandas and skops for a skops file;
                      pandas and cloudpickle for a pickle), closed over their declared
                      dependencies, each checked against the requirement's specifier

Vendoring installed distributions (their RECORD file lists) rather than running pip is what
makes the image buildable offline and reproducibly: no resolver, no index, no compiler, and
the model is served with the very library versions it was trained and verified with. The
limit: the base image must run the same Python minor version (the wheels' ABI) on a glibc at
least as new as the host wheels need; `--base-rootfs` is checked for the interpreter, and the
app refuses to start on another version. `tests` directories, `__pycache__` and scripts
outside site-packages are left out.

`--oci FILE` writes an OCI image archive (oci-layout, index.json, blobs) with two layers: the
base rootfs tarball as given, and the context's app/model/site-packages under /opt/buildenv.
Same inputs, same bytes: tar entries sorted, mtime SOURCE_DATE_EPOCH (default 0), uid/gid 0,
no user names, gzip with mtime 0 and no file name, canonical JSON. The compressed base layer is
cached by the tarball's digest.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildenv.compile.artifact import read_lineage
from buildenv.compile.integrity import model_descriptor, verify_artifact
from buildenv.core.atomic import atomic_dir
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.model_runtime import trusted_patterns
from buildenv.core.project import Project
from buildenv.core.tempdirs import scratch_dir
from buildenv.env.resolve import Resolved
from buildenv.env.spec import SklearnServing

# Deferred imports (docker): the Docker SDK (requests, urllib3) is needed only to build through a
# daemon.

__all__ = ["ImageContext", "build_docker", "docker_client", "host_python", "vendor_closure",
           "write_context"]

PREFIX = "opt/buildenv"
PORT = 8080
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What loading and feeding a model of each format needs besides `serving.requirements`.
RUNTIME = {"onnx": ("numpy",), "skops": ("pandas", "skops"), "pickle": ("pandas", "cloudpickle")}
COPIED = ("app", "model", "site-packages")


@dataclass
class ImageContext:
    path: Path
    training: str
    env: str
    python: str
    packages: dict[str, str]
    config: dict = field(default_factory=dict)  # the OCI image config's `config`


def _mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)


# --- the serving runtime, vendored --------------------------------------------------------------

def vendor_closure(requirements: list[str], runtime: tuple[str, ...] = RUNTIME["pickle"]
                   ) -> tuple[list[Any], list[Diagnostic]]:
    """Installed distributions satisfying `requirements` (and the app's `runtime`) and their
    dependencies."""

    problems: list[Diagnostic] = []
    found: dict[str, Any] = {}
    queue: list[tuple[str, str]] = [(r, "serving.requirements") for r in requirements]
    queue += [(r, "the serving app") for r in runtime]
    while queue:
        text, wanted_by = queue.pop(0)
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(Diagnostic("BE751", f"invalid requirement '{text}' ({wanted_by}): "
                                       f"{exc}"))
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            problems.append(Diagnostic(
                "BE751", f"'{req.name}' ({wanted_by}) is not installed in the Python "
                f"environment running buildenv ({sys.prefix})",
                hints=(f"install it there (pip install '{text}'); the image vendors what is "
                       "installed",)))
            continue
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            problems.append(Diagnostic(
                "BE751", f"installed {dist.metadata['Name']} {dist.version} does not satisfy "
                f"'{text}' ({wanted_by})",
                hints=("install a version that does, or change serving.requirements",)))
            continue
        extras = set(req.extras)
        if name in found and not extras:
            continue
        found[name] = dist
        if dist.files is None:
            problems.append(Diagnostic("BE751", f"{dist.metadata['Name']} {dist.version} has "
                                       "no RECORD file list, so it cannot be vendored"))
        for dep in dist.requires or []:
            dep_req = Requirement(dep)
            envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
            if dep_req.marker is None or any(dep_req.marker.evaluate(e) for e in envs):
                queue.append((dep, f"required by {dist.metadata['Name']}"))
    return sorted(found.values(), key=lambda d: canonicalize_name(d.metadata["Name"])), problems


def _vendor_files(dists: list[Any]) -> Iterator[tuple[str, Path]]:
    for dist in dists:
        for rel, source in dist_files(dist):
            parts = Path(rel).parts
            if "__pycache__" in parts or rel.endswith(".pyc") or "tests" in parts[:-1]:
                continue
            yield rel, source


def dist_files(dist: Any) -> list[tuple[str, Path]]:
    """Every installed file of `dist` as (path relative to site-packages, file).

    Usually its RECORD. A PEX venv (what Pants runs tools and tests in) rewrites RECORD to
    list only the .dist-info files and symlinks each top-level package into the wheel's
    chroot, next to a copy of that .dist-info: those symlinks are the distribution's code.
    """
    listed = [rel for rel in dist.files or [] if rel.parts and rel.parts[0] != ".."]
    out = [(rel.as_posix(), Path(dist.locate_file(rel))) for rel in listed]
    info = {rel.parts[0] for rel in listed if rel.parts[0].endswith(".dist-info")}
    if len(info) != 1 or any(rel.parts[0] not in info for rel in listed):
        return [(rel, path) for rel, path in out if path.is_file()]
    site = Path(dist.locate_file(""))
    name = info.pop()
    for entry in sorted(site.iterdir()):
        if not entry.is_symlink():
            continue
        target = entry.resolve()
        if not (target.parent / name).is_dir():
            continue
        if target.is_file():
            out.append((entry.name, entry))
        elif target.is_dir():
            out += [((Path(entry.name) / f.relative_to(target)).as_posix(), f)
                    for f in sorted(target.rglob("*"))]
    return [(rel, path) for rel, path in out if path.is_file()]


# --- the build context --------------------------------------------------------------------------

def _served_inputs(res: Resolved, inputs: list[str]) -> dict[str, dict]:
    """Each input's contract as the serving app checks it (domain and range when declared);
    `restricted` marks a column of a restricted dataset (the app then refuses to log requests:
    docs/production.md)."""
    out = {}
    for name in inputs:
        for ds_name, ds in res.env.datasets.items():
            col = ds.columns.get(name)
            if col is not None and col.serving:
                spec: dict = {"dtype": col.dtype, "nullable": col.nullable}
                if col.domain is not None:
                    spec["domain"] = list(col.domain)
                if col.range is not None:
                    spec["range"] = list(col.range)
                if res.env.restricted(ds_name):
                    spec["restricted"] = True
                out[name] = spec
                break
    return out


def write_context(project: Project, res: Resolved, training: str, out: Path | None = None,
                  artifact: Path | None = None) -> ImageContext:
    env = res.name
    artifact = artifact or project.root / "dist" / training / env
    lineage = read_lineage(artifact)
    if lineage is None:
        raise DiagnosticError([Diagnostic(
            "BE750", f"no artifact for {training} @ {env} at {project.rel(artifact)}",
            hints=(f"run `buildenv build {training} --env {env}`",))])
    verify_artifact(project, artifact, lineage.get("model_digest"),
                    f"the artifact of {training} @ {env}")  # the label claims this digest
    serving = res.env.serving
    if serving is None:
        raise DiagnosticError([res.diag(
            "BE752", f"`buildenv image` serves a model on the environment's serving stack; "
            f"environment {env} declares none", "serving",
            hints=("declare `serving:` (stack sklearn or onnx)",))])
    descriptor, legacy = model_descriptor(artifact)
    if (descriptor.get("format") == "onnx") != (serving.stack == "onnx"):
        raise DiagnosticError([res.diag(
            "BE752", f"the artifact holds a {descriptor.get('format')} model, but environment "
            f"{env} serves stack '{serving.stack}'",
            "serving", "stack", hints=(f"rebuild: `buildenv build {training} --env {env}`",))])
    inputs = list(lineage.get("inputs") or [])
    served = _served_inputs(res, inputs)
    missing = [c for c in inputs if c not in served]
    if not inputs or missing:
        raise DiagnosticError([Diagnostic(
            "BE752", f"the model's inputs are not all served columns of {env}: "
            f"{', '.join(missing) or '(unknown inputs)'}",
            hints=(f"rebuild: `buildenv build {training} --env {env}` verifies them",))])
    fmt = str(descriptor.get("format"))
    dists, problems = vendor_closure(list(serving.requirements), RUNTIME.get(fmt, ()))
    if any(p.is_error for p in problems):
        raise DiagnosticError(problems)
    python = host_python()
    packages = {d.metadata["Name"]: d.version for d in dists}
    target = out or project.state_dir / "image" / training / env
    sklearn_stack = isinstance(serving, SklearnServing)
    config = {"training": training, "environment": env, "python": python, "port": PORT,
              "model": descriptor, "model_digest": lineage["model_digest"],
              "trusted": trusted_patterns(list(serving.ops)) if sklearn_stack else [],
              "allow_pickle": legacy or (sklearn_stack and serving.format == "pickle"),
              "validate_inputs": serving.validate_inputs,
              "inputs": served, "label": lineage.get("label")}
    with atomic_dir(target, scratch_dir(project.state_dir)) as tmp:
        app = tmp / "app"
        app.mkdir()
        package = Path(__file__).resolve().parents[1]
        shutil.copyfile(package / "serving" / "serve.py", app / "serve.py")
        shutil.copyfile(package / "core" / "model_runtime.py", app / "model_runtime.py")
        (app / "serving.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        shutil.copytree(artifact, tmp / "model")
        site = tmp / "site-packages"
        for rel, source in _vendor_files(dists):
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            if os.access(source, os.X_OK):
                dest.chmod(0o755)
        (tmp / "requirements.txt").write_text("".join(f"{r}\n" for r in serving.requirements))
        (tmp / "image.json").write_text(json.dumps({
            "training": training, "environment": env, "python": python,
            "model_digest": lineage["model_digest"], "cache_key": lineage.get("cache_key"),
            "packages": packages}, indent=2, sort_keys=True) + "\n")
        (tmp / "Dockerfile").write_text(_dockerfile(training, env, python, lineage))
        (tmp / ".dockerignore").write_text("image.json\nrequirements.txt\n")
    return ImageContext(target, training, env, python, packages,
                        _image_config(training, env, lineage))


def _env_vars() -> list[str]:
    return [PATH_ENV, f"PYTHONPATH=/{PREFIX}/site-packages", "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1", f"BUILDENV_MODEL=/{PREFIX}/model", f"PORT={PORT}"]


def _labels(training: str, env: str, lineage: dict) -> dict[str, str]:
    return {"org.opencontainers.image.title": f"{training}@{env}",
            "dev.buildenv.training": training, "dev.buildenv.environment": env,
            "dev.buildenv.model_digest": lineage["model_digest"]}


def _image_config(training: str, env: str, lineage: dict) -> dict:
    return {"Env": _env_vars(), "Cmd": ["python3", f"/{PREFIX}/app/serve.py"],
            "WorkingDir": f"/{PREFIX}", "User": "65534:65534",
            "ExposedPorts": {f"{PORT}/tcp": {}}, "Labels": _labels(training, env, lineage)}


def _dockerfile(training: str, env: str, python: str, lineage: dict) -> str:
    env_lines = " \\\n    ".join(_env_vars()[1:])  # PATH: the base image's own
    labels = " \\\n      ".join(f'{k}="{v}"' for k, v in _labels(training, env, lineage).items())
    return (f"# Generated by `buildenv image {training} --env {env}`; do not edit.\n"
            f"# The base must run Python {python}: site-packages/ is vendored for it.\n"
            f"ARG BASE=python:{python}-slim-bookworm\n"
            "FROM ${BASE}\n"
            f"COPY site-packages /{PREFIX}/site-packages\n"
            f"COPY model /{PREFIX}/model\n"
            f"COPY app /{PREFIX}/app\n"
            f"ENV {env_lines}\n"
            f"LABEL {labels}\n"
            f"WORKDIR /{PREFIX}\n"
            "USER 65534:65534\n"
            f"EXPOSE {PORT}\n"
            f'CMD ["python3", "/{PREFIX}/app/serve.py"]\n')


# --- Docker (SDK) -------------------------------------------------------------------------------

def docker_client(required: bool) -> Any | None:
    """A client for the daemon at DOCKER_HOST (or the default socket), None if unreachable."""
    try:
        import docker

        c = docker.from_env(version="auto", timeout=600)
        c.ping()
        return c
    except Exception as exc:
        if not required:
            return None
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DiagnosticError([Diagnostic(
            "BE753", f"no Docker daemon reachable at {where}: {type(exc).__name__}: {detail}",
            hints=("set DOCKER_HOST, or use --oci FILE, which needs no daemon",))]) from None


def build_docker(client: Any, ctx: ImageContext, tag: str, base: str | None) -> str:
    """Build the context; the image id."""
    from docker.errors import BuildError

    try:
        image, _ = client.images.build(path=str(ctx.path), tag=tag, rm=True, pull=False,
                                       buildargs={"BASE": base} if base else None)
    except BuildError as exc:
        lines = [str(item.get("stream") or item.get("error") or "").strip()
                 for item in exc.build_log]
        raise DiagnosticError([Diagnostic(
            "BE754", f"docker build of {tag} failed: {exc.msg}",
            hints=tuple(line for line in lines if line)[-5:])]) from None
    except Exception as exc:
        raise DiagnosticError([Diagnostic(
            "BE754", f"docker build of {tag} failed: {type(exc).__name__}: {exc}")]) from None
    return str(image.id)


# --- OCI archive, no daemon ---------------------------------------------------------------------


def host_python() -> str:
    return "%d.%d" % sys.version_info[:2]


