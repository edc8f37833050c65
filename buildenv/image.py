"""`buildenv image`: a serving image for one artifact, as a Docker build context and/or an OCI
archive built without any daemon.

The context (default `.buildenv/image/<training>/<env>/`) holds:

  Dockerfile          FROM the base, COPY the three directories below, no RUN step
  requirements.txt    `serving.requirements`, for people and for pip-based rebuilds
  image.json          what went in: artifact digest, python version, every vendored package
  app/serve.py        the stdlib HTTP app (buildenv/serving/serve.py) and app/serving.json,
                      the contract it enforces: the model's inputs as served columns
  model/              the artifact from dist/<training>/<env>/
  site-packages/      the serving runtime, vendored from the Python environment running
                      buildenv: `serving.requirements` plus pandas and cloudpickle (the model
                      is a cloudpickled pipeline fed DataFrames), closed over their declared
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

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from .artifact import read_lineage
from .diagnostics import Diagnostic, DiagnosticError
from .fsutil import atomic_dir
from .project import Project
from .resolve import Resolved

__all__ = ["ImageContext", "build_docker", "check_base_rootfs", "docker_client", "host_python",
           "vendor_closure", "write_context", "write_oci"]

PREFIX = "opt/buildenv"
PORT = 8080
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNTIME = ("pandas", "cloudpickle")  # what unpickling and feeding the model needs
COPIED = ("app", "model", "site-packages")
_GZIP_LEVEL = 6


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

def vendor_closure(requirements: list[str]) -> tuple[list[Any], list[Diagnostic]]:
    """Installed distributions satisfying `requirements` and their dependencies."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    problems: list[Diagnostic] = []
    found: dict[str, Any] = {}
    queue: list[tuple[str, str]] = [(r, "serving.requirements") for r in requirements]
    queue += [(r, "the serving app") for r in RUNTIME]
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
        for rel in dist.files or []:
            parts = rel.parts
            if not parts or parts[0] == ".." or "__pycache__" in parts or \
                    rel.name.endswith(".pyc") or "tests" in parts[:-1]:
                continue
            source = Path(dist.locate_file(rel))
            if source.is_file():
                yield rel.as_posix(), source


# --- the build context --------------------------------------------------------------------------

def _served_inputs(res: Resolved, inputs: list[str]) -> dict[str, dict]:
    out = {}
    for name in inputs:
        for ds in res.env.datasets.values():
            col = ds.columns.get(name)
            if col is not None and col.serving:
                out[name] = {"dtype": col.dtype, "nullable": col.nullable}
                break
    return out


def write_context(project: Project, res: Resolved, training: str, out: Path | None = None
                  ) -> ImageContext:
    env = res.name
    artifact = project.root / "dist" / training / env
    lineage = read_lineage(artifact)
    if lineage is None:
        raise DiagnosticError([Diagnostic(
            "BE750", f"no artifact for {training} @ {env} at {project.rel(artifact)}",
            hints=(f"run `buildenv build {training} --env {env}`",))])
    serving = res.env.serving
    if serving is None or serving.stack != "sklearn":
        stack = serving.stack if serving else "none"
        raise DiagnosticError([res.diag(
            "BE752", f"`buildenv image` serves the sklearn stack; environment {env} has "
            f"serving stack '{stack}'", "serving",
            hints=("the ONNX stack's model.onnx is in the artifact for your own runtime",))])
    inputs = list(lineage.get("inputs") or [])
    served = _served_inputs(res, inputs)
    missing = [c for c in inputs if c not in served]
    if not inputs or missing:
        raise DiagnosticError([Diagnostic(
            "BE752", f"the model's inputs are not all served columns of {env}: "
            f"{', '.join(missing) or '(unknown inputs)'}",
            hints=(f"rebuild: `buildenv build {training} --env {env}` verifies them",))])
    dists, problems = vendor_closure(list(serving.requirements))
    if any(p.is_error for p in problems):
        raise DiagnosticError(problems)
    python = host_python()
    import yaml

    mlmodel = yaml.safe_load((artifact / "MLmodel").read_text(encoding="utf-8"))
    model_file = mlmodel["flavors"]["sklearn"]["pickled_model"]
    packages = {d.metadata["Name"]: d.version for d in dists}
    target = out or project.state_dir / "image" / training / env
    config = {"training": training, "environment": env, "python": python, "port": PORT,
              "model_file": model_file, "model_digest": lineage["model_digest"],
              "inputs": served, "label": lineage.get("label")}
    with atomic_dir(target) as tmp:
        app = tmp / "app"
        app.mkdir()
        shutil.copyfile(Path(__file__).parent / "serving" / "serve.py", app / "serve.py")
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

class _Hashing:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, target: IO[bytes]):
        self.target, self.sha, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _gzip(source: IO[bytes], dest: IO[bytes]) -> tuple[str, str, int]:
    """(diff_id, digest, size): gzip without a timestamp or file name."""
    raw = hashlib.sha256()
    out = _Hashing(dest)
    with gzip.GzipFile(filename="", mode="wb", fileobj=out,  # type: ignore[arg-type]
                       compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            raw.update(chunk)
            gz.write(chunk)
    return "sha256:" + raw.hexdigest(), "sha256:" + out.sha.hexdigest(), out.size


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime, info.uid, info.gid, info.uname, info.gname = _mtime(), 0, 0, "", ""
    return info


def _app_layer(context: Path, dest: IO[bytes]) -> None:
    """The context's app/, model/ and site-packages/ under /opt/buildenv, normalized."""
    entries: dict[str, Path | None] = {}
    parts = PREFIX.split("/")
    for i in range(1, len(parts) + 1):
        entries["/".join(parts[:i])] = None
    for top in COPIED:
        base = context / top
        entries[f"{PREFIX}/{top}"] = None
        for path in base.rglob("*"):
            rel = f"{PREFIX}/{top}/{path.relative_to(base).as_posix()}"
            entries[rel] = path if path.is_file() else None
    with tarfile.open(fileobj=dest, mode="w",  # type: ignore[call-overload]
                      format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            path = entries[name]
            if path is None:
                tar.addfile(_tarinfo(name + "/", tarfile.DIRTYPE, 0o755))
                continue
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info = _tarinfo(name, tarfile.REGTYPE, mode, path.stat().st_size)
            with open(path, "rb") as handle:
                tar.addfile(info, handle)


def _base_python(rootfs: Path, python: str) -> bool:
    wanted = {f"usr/bin/python{python}", f"usr/local/bin/python{python}"}
    with tarfile.open(rootfs) as tar:
        for member in tar:
            if member.name.lstrip("./") in wanted:
                return True
    return False


def _cached_base_layer(project: Project, rootfs: Path, scratch: Path) -> tuple[Path, dict]:
    h = hashlib.sha256()
    with open(rootfs, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    key = h.hexdigest()
    folder = project.state_dir / "cache" / "oci-base"
    blob, meta = folder / f"{key}.{_GZIP_LEVEL}.tar.gz", folder / f"{key}.{_GZIP_LEVEL}.json"
    if blob.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            if blob.stat().st_size == info["size"]:
                return blob, info
        except (OSError, ValueError, KeyError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = scratch / "base.tar.gz"
    with open(rootfs, "rb") as src, open(tmp, "wb") as dst:
        diff_id, digest, size = _gzip(src, dst)
    info = {"diff_id": diff_id, "digest": digest, "size": size}
    try:
        os.replace(tmp, blob)
        meta.write_text(json.dumps(info))
        return blob, info
    except OSError:
        return tmp, info


def _canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_oci(project: Project, ctx: ImageContext, base_rootfs: Path, dest: Path,
              tag: str) -> dict:
    """Write an OCI image archive; returns the manifest digest and layer digests."""
    check_base_rootfs(base_rootfs, ctx.python)
    with tempfile.TemporaryDirectory(prefix="buildenv-oci-", dir=project.state_dir
                                     if project.state_dir.is_dir() else None) as scratch_dir:
        return _write_oci(project, ctx, base_rootfs, dest, tag, Path(scratch_dir))


def check_base_rootfs(base_rootfs: Path, python: str) -> None:
    """BE755 unless `base_rootfs` is a readable tarball holding python<X.Y>."""
    if not base_rootfs.is_file():
        raise DiagnosticError([Diagnostic("BE755", f"base rootfs '{base_rootfs}' not found",
                                          hints=("pass a tarball of a root filesystem, e.g. "
                                                 "from `debootstrap` + `tar -C DIR -c .`",))], 2)
    try:
        has_python = _base_python(base_rootfs, python)
    except (tarfile.TarError, OSError) as exc:
        raise DiagnosticError([Diagnostic("BE755", f"base rootfs '{base_rootfs}' is not a "
                                          f"readable tar archive: {exc}")], 2) from None
    if not has_python:
        raise DiagnosticError([Diagnostic(
            "BE755", f"base rootfs '{base_rootfs}' has no /usr/bin/python{python} or "
            f"/usr/local/bin/python{python}: the vendored packages need Python {python}",
            hints=(f"use a base with Python {python} (Debian bookworm's python3 is 3.11)",))],
            2)


def host_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def _write_oci(project: Project, ctx: ImageContext, base_rootfs: Path, dest: Path, tag: str,
               scratch: Path) -> dict:
    base_blob, base = _cached_base_layer(project, base_rootfs, scratch)
    app_tar = scratch / "app.tar"
    with open(app_tar, "wb") as handle:
        _app_layer(ctx.path, handle)
    app_blob = scratch / "app.tar.gz"
    with open(app_tar, "rb") as src, open(app_blob, "wb") as dst:
        app_diff, app_digest, app_size = _gzip(src, dst)
    app_tar.unlink()
    created = _iso(_mtime())
    config = {
        "architecture": _arch(), "os": "linux", "created": created,
        "config": ctx.config,
        "rootfs": {"type": "layers", "diff_ids": [base["diff_id"], app_diff]},
        "history": [
            {"created": created, "created_by": f"buildenv image: base rootfs "
             f"{base_rootfs.name}"},
            {"created": created, "created_by": f"buildenv image {ctx.training} --env "
             f"{ctx.env}: app, model, site-packages ({len(ctx.packages)} packages)"}],
    }
    config_bytes = _canonical(config)
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": layer_type, "digest": base["digest"], "size": base["size"]},
                   {"mediaType": layer_type, "digest": app_digest, "size": app_size}],
        "annotations": {"org.opencontainers.image.title": f"{ctx.training}@{ctx.env}"},
    }
    manifest_bytes = _canonical(manifest)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"],
                            "digest": _sha(manifest_bytes), "size": len(manifest_bytes),
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    blobs: dict[str, Path | bytes] = {
        base["digest"]: base_blob, app_digest: app_blob,
        _sha(config_bytes): config_bytes, _sha(manifest_bytes): manifest_bytes}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest.parent / f".{dest.name}.tmp"
    with tarfile.open(tmp_dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs/", "blobs/sha256/"):
            tar.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755))
        for digest in sorted(blobs):
            item = blobs[digest]
            name = "blobs/sha256/" + digest.split(":", 1)[1]
            if isinstance(item, bytes):
                tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(item)),
                            io.BytesIO(item))
            else:
                with open(item, "rb") as handle:
                    tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644,
                                         item.stat().st_size), handle)
        index_bytes = _canonical(index)
        tar.addfile(_tarinfo("index.json", tarfile.REGTYPE, 0o644, len(index_bytes)),
                    io.BytesIO(index_bytes))
        layout = _canonical({"imageLayoutVersion": "1.0.0"})
        tar.addfile(_tarinfo("oci-layout", tarfile.REGTYPE, 0o644, len(layout)),
                    io.BytesIO(layout))
    os.replace(tmp_dest, dest)
    return {"manifest": _sha(manifest_bytes), "config": _sha(config_bytes),
            "layers": [base["digest"], app_digest], "tag": tag,
            "archive": _file_sha(dest)}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _iso(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)
