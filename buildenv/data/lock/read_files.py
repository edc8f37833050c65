"""Repository files that code read as it ran: pinned with what it made, like its modules.

The process running a transform or labeling functions notes the repository files the code
opened for reading (`training.code_reads`). Of those, `pinnable` keeps what no other digest
covers -- not a module the code digest holds, nor data (a dataset's or label set's files: they
are inputs, and a restricted one's path or digest is never written as code), nor buildenv's
state or environment files -- and the lock records each kept file's digest (None: the code
tried to open it and it was not there; its appearing is a change too). `changes` says which of
them differ now, in the words `lock --check` uses.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildenv.data.lock.lockfile import read_lock
from buildenv.data.storage import locate

if TYPE_CHECKING:  # annotations only: the hermetic process imports no pydantic
    from buildenv.core.project import Project
    from buildenv.env.spec import Environment

__all__ = ["changes", "declared", "differences", "file_digests", "locked_reads", "pinnable", "recorded_reads"]


def file_digests(root: Path, paths: Iterable[str]) -> dict[str, str | None]:
    """Repository-relative path -> `sha256:` digest of its bytes; None when it is not a file
    that can be read (removed, a directory, unreadable). Streamed: a file declared under
    `source.files` may be large (a lookup table)."""
    found: dict[str, str | None] = {}
    for rel in sorted(set(paths)):
        try:
            with open(root / rel, "rb") as f:
                found[rel] = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            found[rel] = None
    return found


def declared(root: Path, patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """The files (repository-relative, sorted) the globs `patterns` (a source's `files`) match
    under `root`, and the globs that match none."""
    found: set[str] = set()
    unmatched = []
    for pattern in patterns:
        matched = [os.path.normpath(m).replace(os.sep, "/")
                   for m in glob.glob(pattern, root_dir=root, recursive=True)
                   if (root / m).is_file()]
        if not matched:
            unmatched.append(pattern)
        found.update(matched)
    return sorted(found), unmatched


def pinnable(project: Project, env: Environment, code: Iterable[str], paths: Iterable[str]
             ) -> list[str]:
    """The paths (repository-relative) among `paths` that are code to pin: every one but the
    modules in `code`, bytecode, buildenv's state and environment files, and data. When the
    environment restricts a dataset, only files that exist: the path of a missing one may be
    made of restricted values (`open(f"lookup/{value}.txt")`), and the lock is no place for
    them."""
    root = project.root.resolve()
    hidden = any(env.restricted(name) for name in env.datasets)
    skip = set(code)
    trees = [project.state_dir, project.data_state_dir, project.environments_dir]
    holes = [p.resolve() for p in trees if p.resolve() != root]
    for spec in [*env.datasets.values(), *env.labels.values()]:
        uri = getattr(spec, "uri", None)
        if not uri:
            continue
        try:
            local = locate(uri, project).local
        except Exception:  # a uri this machine cannot place: no local file to exclude
            continue
        if local is not None:
            holes.append(Path(local).resolve())
    kept = []
    for rel in sorted(set(paths)):
        if rel in skip or rel.endswith((".pyc", ".pyo")) or "/__pycache__/" in f"/{rel}":
            continue
        full = root / rel
        if any(full == hole or full.is_relative_to(hole) for hole in holes):
            continue
        if hidden and not full.is_file():
            continue
        kept.append(rel)
    return kept


def changes(root: Path, was: Mapping[str, str | None]) -> list[str]:
    """What changed of the files `was` pins (path -> digest), one phrase per file, sorted."""
    return differences(was, file_digests(root, was))


def differences(was: Mapping[str, str | None], now: Mapping[str, str | None]) -> list[str]:
    """`changes` between two digests of the same files (a file `now` lacks: removed)."""
    said = []
    for rel in sorted(was):
        before, after = was[rel], now.get(rel)
        if before == after:
            continue
        if after is None:
            said.append(f"code file {rel} was removed")
        elif before is None:
            said.append(f"code file {rel} now exists")
        else:
            said.append(f"code file {rel} changed")
    return said


def recorded_reads(record: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The repository files a lock's `derived` record (or a label set's `source` record) says
    the code read, with their digests then; {} for a record from before they were recorded."""
    found = (record or {}).get("files_read")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items()
            if isinstance(k, str) and (v is None or isinstance(v, str))}


def locked_reads(project: Project, environment: str) -> dict[tuple[str, str], list[str]]:
    """The files each derived dataset (`("datasets", name)`) and computed label set
    (`("labels", name)`) of `environment`'s lock read when it was written; none without a
    lock, an unreadable one (`lock` writes a new one, and says why if it must), or a record
    from before they were recorded."""
    try:
        lock = read_lock(project, environment)
    except Exception:
        return {}
    if lock is None:
        return {}
    found = {("datasets", n): sorted(recorded_reads(e.derived))
             for n, e in lock.datasets.items() if e.derived is not None}
    found.update({("labels", n): sorted(recorded_reads(e.source))
                  for n, e in lock.labels.items() if e.source is not None})
    return found
