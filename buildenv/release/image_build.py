"""`buildenv image`: a serving image from a built artifact, as a Docker build context, an image
built by the Docker daemon, and/or a reproducible OCI archive.

The command line parses options and shows the outcome; this module decides what is built and
in which order: the artifact is chosen and verified (`image_source`), the context written
(`image`), then the OCI archive (`oci`) and the daemon build, each a phase of one progress task.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from buildenv.core import progress
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.release.image import build_docker, docker_client, host_python, write_context
from buildenv.release.image_source import select_artifact
from buildenv.release.oci import check_base_rootfs, write_oci

__all__ = ["ImageOptions", "ImageOutcome", "Said", "build_image", "check_size"]


@dataclass(frozen=True)
class ImageOptions:
    out: Path | None = None  # build context directory (default .buildenv/image/<training>/<env>)
    oci: Path | None = None  # OCI archive to write (needs base_rootfs)
    base_rootfs: Path | None = None
    base_image: str | None = None  # FROM image of the Docker build
    tag: str | None = None  # default buildenv/<training>:<env>
    docker: bool | None = None  # None: when a daemon is reachable and no --oci
    champion: bool = False  # package `<env>-champion` from the registry


@dataclass(frozen=True)
class Said:
    """A line of the outcome: `final` lines are shown even with --quiet."""

    text: str
    final: bool
    to_stderr: bool = False


@dataclass
class ImageOutcome:
    said: list[Said] = field(default_factory=list)
    notes: list[Diagnostic] = field(default_factory=list)  # from choosing the artifact


def build_image(project: Project, training: str, env: str, options: ImageOptions,
                outcome: ImageOutcome) -> None:
    """Build what `options` ask for, appending to `outcome` as each step completes (so a
    failure still leaves what was done before it to report)."""
    project.training(training)
    res = Multiverse(project).resolve(env)
    if options.oci is not None and options.base_rootfs is None:
        raise DiagnosticError([Diagnostic("BE004", "--oci needs --base-rootfs TAR (the base "
                                          "layer)")], 2)
    if options.base_rootfs is not None:
        check_base_rootfs(options.base_rootfs, host_python())  # before minutes of copying
    name = options.tag or f"buildenv/{training}:{env}"
    want_docker = options.docker if options.docker is not None else options.oci is None
    with progress.task(f"{training} @ {env} (image)", keep=True) as steps:
        steps.phase("context")
        with tempfile.TemporaryDirectory(prefix="buildenv-image-") as scratch:
            artifact, notes = select_artifact(project, training, env, options.champion,
                                              Path(scratch))  # verified; BE769 if stale
            outcome.notes.extend(notes)
            ctx = write_context(project, res, training, options.out, artifact)
        outcome.said.append(Said(f"context: {project.rel(ctx.path)} (python {ctx.python}, "
                                 f"{len(ctx.packages)} vendored packages, "
                                 f"{_mb(ctx.layer_bytes)} over the base)",
                                 options.oci is None and not want_docker))
        limit = _limit(res)
        check_size(res, ctx.layer_bytes, "the image's own layer", limit)  # a lower bound
        if options.oci is not None:
            assert options.base_rootfs is not None
            total = ctx.layer_bytes + options.base_rootfs.stat().st_size
            check_size(res, total, f"base rootfs {options.base_rootfs.name} + the layer", limit)
            outcome.said.append(Said(f"size: {_mb(total)} (base rootfs "
                                     f"{_mb(total - ctx.layer_bytes)} + {_mb(ctx.layer_bytes)})",
                                     False))  # --quiet: the archive's line only
            steps.phase("oci")
            result = write_oci(project, ctx, options.base_rootfs, options.oci,
                               name.rsplit(":", 1)[-1])
            outcome.said.append(Said(f"oci: {options.oci} manifest {result['manifest']}", True))
        if want_docker:
            client = docker_client(required=options.docker is True)
            if client is None:
                outcome.said.append(Said("docker: no daemon reachable; wrote the context only "
                                         "(`docker build` it, or use --oci)", True, True))
            else:
                base = options.base_image or f"python:{ctx.python}-slim-bookworm"
                base_bytes = _image_bytes(client, base)
                if base_bytes is not None:
                    check_size(res, base_bytes + ctx.layer_bytes, f"base image {base} + the "
                               "layer", limit)
                steps.phase("docker build")
                image_id = build_docker(client, ctx, name, options.base_image)
                built = _image_bytes(client, image_id)
                size = f" ({_mb(built)})" if built is not None else ""
                outcome.said.append(Said(f"docker: {name} {image_id}{size}", True))
                if built is not None:
                    check_size(res, built, f"image {name}", limit)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _limit(res: Resolved) -> float | None:
    serving = res.env.serving
    return serving.limits.max_image_mb if serving is not None else None


def check_size(res: Resolved, size: int, what: str, limit: float | None) -> None:
    """BE757 when `size` bytes exceed `serving.limits.max_image_mb`."""
    if limit is None or size <= limit * 1e6:
        return
    raise DiagnosticError([res.diag(
        "BE757", f"{what} is {_mb(size)}, over serving.limits.max_image_mb ({limit:g} MB) of "
        f"environment {res.name}", "serving", "limits", "max_image_mb",
        hints=("trim serving.requirements (each vendored package is listed in the context's "
               "image.json), use a smaller base, or raise the limit",))])


def _image_bytes(client: object, ref: str) -> int | None:
    """An image's size as the daemon reports it; None when it does not know the image."""
    try:
        return int(client.images.get(ref).attrs["Size"])  # type: ignore[attr-defined]
    except Exception:
        return None
