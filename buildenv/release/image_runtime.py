"""The serving runtime an image vendors: which installed distributions, from where.

Normally the artifact's serving environment (`toolchain.serving`): `serving.requirements` and
what the serving app imports, locked with the versions the model was trained with, installed
once in the toolchain store. The image copies exactly that environment's distributions (their
RECORD file lists), so it carries what serving runs and nothing of the training's toolchain,
and `requirements.txt` in the context is that lock, with hashes. In interpreter mode (no
environment of buildenv's own) the runtime is taken from the interpreter running buildenv,
closed over the requirements' declared dependencies, each checked against its specifier.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.env.resolve import Resolved
from buildenv.toolchain.pins import SERVING_APP
from buildenv.toolchain.serving import serving_toolchain
from buildenv.toolchain.toolchain import ensure_environment

__all__ = ["Runtime", "dist_files", "serving_runtime", "vendor_closure", "vendor_files"]


@dataclass(frozen=True)
class Runtime:
    dists: list[Any]  # importlib.metadata distributions, by name
    lock: str | None  # the serving lock (None: taken from buildenv's interpreter)
    lock_digest: str | None = None


def serving_runtime(project: Project, res: Resolved, lineage: dict, fmt: str) -> Runtime:
    """The distributions the image of this artifact (model format `fmt`) vendors
    (BE751/BE756 when it cannot)."""
    serving = res.env.serving
    assert serving is not None
    runtime = SERVING_APP.get(fmt, ())
    if project.config.toolchains.mode == "interpreter":
        dists, problems = vendor_closure(list(serving.requirements), runtime)
        if any(p.is_error for p in problems):
            raise DiagnosticError(problems)
        return Runtime(dists, None)
    trained = (lineage.get("toolchain") or {}).get("packages") or lineage.get("libraries") or {}
    toolchain = serving_toolchain(project, res, dict(trained), runtime)
    env, _ = ensure_environment(project, toolchain)
    site = env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    found: dict[str, Any] = {}
    for dist in metadata.distributions(path=[str(site)]):
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    assert toolchain.lock is not None
    return Runtime([found[k] for k in sorted(found)], toolchain.lock.text, toolchain.digest)


def vendor_closure(requirements: list[str], runtime: tuple[str, ...] = SERVING_APP["pickle"]
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


def vendor_files(dists: list[Any]) -> Iterator[tuple[str, Path]]:
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
