"""A reproducible OCI image archive, written without any daemon.

Layers are tarballs with fixed owners, modes and mtimes (SOURCE_DATE_EPOCH), gzipped with a
fixed header, so the same context gives the same manifest digest on every machine. The base
layer (a root filesystem tarball) is cached by its digest.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from buildenv.core import progress
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.release.image import (
    COPIED,
    PREFIX,
    ImageContext,
    _mtime,
)

__all__ = ["check_base_rootfs", "write_oci"]


_GZIP_LEVEL = 6


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


def _gzip(source: IO[bytes], dest: IO[bytes], label: str = "compress layer"
          ) -> tuple[str, str, int]:
    """(diff_id, digest, size): gzip without a timestamp or file name."""
    raw = hashlib.sha256()
    out = _Hashing(dest)
    with progress.task(label, _size(source), "bytes") as bar, \
            gzip.GzipFile(filename="", mode="wb", fileobj=out,
                          compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            raw.update(chunk)
            gz.write(chunk)
            bar.advance(len(chunk))
    return "sha256:" + raw.hexdigest(), "sha256:" + out.sha.hexdigest(), out.size


def _size(handle: IO[bytes]) -> int | None:
    try:
        return os.fstat(handle.fileno()).st_size
    except (OSError, ValueError, AttributeError):  # not a file: no total, still counted
        return None


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
    with tarfile.open(fileobj=dest, mode="w",
                      format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            source = entries[name]
            if source is None:
                tar.addfile(_tarinfo(name + "/", tarfile.DIRTYPE, 0o755))
                continue
            mode = 0o755 if os.access(source, os.X_OK) else 0o644
            info = _tarinfo(name, tarfile.REGTYPE, mode, source.stat().st_size)
            with open(source, "rb") as handle:
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
    with progress.task(f"hash {rootfs.name}", rootfs.stat().st_size, "bytes") as bar, \
            open(rootfs, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
            bar.advance(len(chunk))
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
        diff_id, digest, size = _gzip(src, dst, "layer 1 of 2: compress the base rootfs")
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


def _write_oci(project: Project, ctx: ImageContext, base_rootfs: Path, dest: Path, tag: str,
               scratch: Path) -> dict:
    progress.phase("base layer")
    base_blob, base = _cached_base_layer(project, base_rootfs, scratch)
    progress.phase("app layer")
    app_tar = scratch / "app.tar"
    with open(app_tar, "wb") as handle:
        _app_layer(ctx.path, handle)
    app_blob = scratch / "app.tar.gz"
    with open(app_tar, "rb") as src, open(app_blob, "wb") as dst:
        app_diff, app_digest, app_size = _gzip(src, dst, "layer 2 of 2: compress the app")
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
    progress.phase("archive")
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
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)
