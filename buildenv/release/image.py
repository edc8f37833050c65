"""`buildenv image`: a serving image for one artifact, as a Docker build context and/or an OCI
archive built without any daemon.

The context (default `.buildenv/image/<training>/<env>/`) holds:

  Dockerfile          FROM the base, COPY the three directories below, no RUN step
  requirements.txt    the serving lock (`serving.requirements` and what the serving app needs
                      for the model's format, at the versions the model was trained with,
                      hashed), for people and pip
  image.json          what went in: artifact digest, python version, every vendored package,
                      the serving lock's digest and the image's size
  app/serve.py        the stdlib HTTP app (buildenv/serving/serve.py), app/model_runtime.py
                      (buildenv/core: loading and predicting, as the build measured them) and
                      app/serving.json, the contract it enforces: the model's inputs as served
                      columns (dtype, nullability, domain, range), its descriptor, the types
                      a skops file may hold (from the environment's serving.ops)
  model/              the artifact from dist/<training>/<env>/ (or, with --champion, the
                      champion's from the registry), verified against its recorded digest
                      before it is copied; the app verifies it again before loading it
  site-packages/      the serving runtime: exactly the distributions of the artifact's
                      locked serving environment (`image_runtime`): `serving.requirements`
                      plus what the model's format needs (`pins.SERVING_APP`: numpy for an
                      ONNX graph; pandas and skops for a skops file; pandas and cloudpickle
                      for a pickle)

Vendoring installed distributions (their RECORD file lists) rather than running pip in the
image is what makes it buildable without a daemon and reproducibly: no resolver, no compiler
at image build time, and the model is served with the very library versions it was trained
and verified with. The limit: the base image must run the same Python minor version (the wheels' ABI) on a glibc at
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from buildenv.compile.artifact import read_lineage
from buildenv.compile.integrity import model_descriptor, verify_artifact
from buildenv.core.atomic import atomic_dir
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.model_runtime import trusted_patterns
from buildenv.core.project import Project
from buildenv.core.tempdirs import scratch_dir
from buildenv.env.resolve import Resolved
from buildenv.env.spec import SklearnServing
from buildenv.release.image_runtime import serving_runtime, vendor_files

# Deferred imports (docker): the Docker SDK (requests, urllib3) is needed only to build through a
# daemon.

__all__ = ["ImageContext", "build_docker", "docker_client", "host_python", "write_context"]

PREFIX = "opt/buildenv"
PORT = 8080
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COPIED = ("app", "model", "site-packages")


@dataclass
class ImageContext:
    path: Path
    training: str
    env: str
    python: str
    packages: dict[str, str]
    config: dict = field(default_factory=dict)  # the OCI image config's `config`
    layer_bytes: int = 0  # what the image adds to its base: app, model, site-packages


def _mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)


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
    runtime = serving_runtime(project, res, lineage, fmt)
    python = host_python()
    packages = {d.metadata["Name"]: d.version for d in runtime.dists}
    target = out or project.state_dir / "image" / training / env
    sklearn_stack = isinstance(serving, SklearnServing)
    config = {"training": training, "environment": env, "python": python, "port": PORT,
              "model": descriptor, "model_digest": lineage["model_digest"],
              "trusted": trusted_patterns(list(serving.ops)) if sklearn_stack else [],
              "allow_pickle": legacy or (sklearn_stack and serving.format == "pickle"),
              "validate_inputs": serving.validate_inputs,
              "inputs": served, "label": lineage.get("label")}
    code = _shipped_code(artifact)
    if code:  # repository code shipped with the model: importable when loading
        config["code_dir"] = code
    with atomic_dir(target, scratch_dir(project.state_dir)) as tmp:
        app = tmp / "app"
        app.mkdir()
        package = Path(__file__).resolve().parents[1]
        shutil.copyfile(package / "serving" / "serve.py", app / "serve.py")
        shutil.copyfile(package / "core" / "model_runtime.py", app / "model_runtime.py")
        (app / "serving.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        shutil.copytree(artifact, tmp / "model")
        site = tmp / "site-packages"
        for rel, source in vendor_files(runtime.dists):
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            if os.access(source, os.X_OK):
                dest.chmod(0o755)
        size = sum(f.stat().st_size for d in COPIED for f in (tmp / d).rglob("*") if f.is_file())
        (tmp / "requirements.txt").write_text(
            runtime.lock or "".join(f"{r}\n" for r in serving.requirements))
        (tmp / "image.json").write_text(json.dumps({
            "training": training, "environment": env, "python": python,
            "model_digest": lineage["model_digest"], "cache_key": lineage.get("cache_key"),
            "packages": packages, "serving_lock": runtime.lock_digest, "layer_bytes": size},
            indent=2, sort_keys=True) + "\n")
        (tmp / "Dockerfile").write_text(_dockerfile(training, env, python, lineage))
        (tmp / ".dockerignore").write_text("image.json\nrequirements.txt\n")
    return ImageContext(target, training, env, python, packages,
                        _image_config(training, env, lineage), size)


def _shipped_code(artifact: Path) -> str | None:
    """The directory of the artifact where MLflow put the repository code shipped with the
    model (`code_paths`), as its MLmodel records it."""
    mlmodel = yaml.safe_load((artifact / "MLmodel").read_text(encoding="utf-8"))
    for flavor in (mlmodel.get("flavors") or {}).values():
        if isinstance(flavor, dict) and flavor.get("code"):
            return str(flavor["code"])
    return None


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


