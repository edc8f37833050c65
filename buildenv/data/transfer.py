"""`buildenv push`, `pull` and `checkout`: share the store, and put pinned bytes back in place.

`push` copies the objects the locks keep to the shared store (`[tool.buildenv] store`),
`pull` fetches the ones missing here (each verified against its name), `checkout ENV` writes
the bytes an environment's lock pins back to the dataset's local paths -- only the files that
differ, each replaced in one rename, so a file is never half restored. Moving bytes of a
restricted dataset is audited (purpose push, pull or checkout), like a read.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.data.lock.digests import StatCache, digest_location
from buildenv.data.lock.lockfile import Lock, read_lock, stat_cache
from buildenv.data.lock.objects import clone_file
from buildenv.data.store import ObjectStore, StoreError
from buildenv.data.store.keeping import PinnedFile, dataset_files, label_files, pinned_files
from buildenv.data.store.remote import RemoteObjects
from buildenv.env.resolve import Multiverse, Resolved

__all__ = ["Transfer", "checkout", "pull", "push"]


@dataclass
class Transfer:
    """What a push, pull or checkout did, and what it could not do."""

    moved: int = 0  # objects (files) transferred or restored
    present: int = 0  # already where they should be
    size: int = 0  # bytes moved
    problems: list[Diagnostic] = field(default_factory=list)


def _locked(multiverse: Multiverse, names: list[str] | None
            ) -> list[tuple[Resolved, Lock]]:
    """The resolved environments asked for (default: all) that have a lock."""
    project = multiverse.project
    out = []
    for name in names or multiverse.names():
        res = multiverse.resolve(name)
        lock = read_lock(project, name)
        if lock is not None:
            out.append((res, lock))
        elif names:
            raise DiagnosticError([res.diag("BE050", f"environment '{name}' has no lock",
                                            "name", hints=(f"run `buildenv lock {name}`",))], 1)
    return out


def _shared(project: Project) -> tuple[ObjectStore, RemoteObjects]:
    store = ObjectStore.of(project)
    if store.remote is None:
        raise DiagnosticError([Diagnostic(
            "BE081", "no shared store is configured", "pyproject.toml",
            hints=("set `store = \"s3://bucket/prefix\"` (or a directory) under "
                   "[tool.buildenv]",))], 2)
    return store, store.remote


def _wanted(multiverse: Multiverse, names: list[str] | None
            ) -> dict[str, tuple[Resolved, PinnedFile]]:
    """Each kept digest once, with an environment and file that pins it (restricted wins)."""
    wanted: dict[str, tuple[Resolved, PinnedFile]] = {}
    for res, lock in _locked(multiverse, names):
        for item in pinned_files(multiverse.project, res.env, lock):
            if item.digest not in wanted or item.restricted:
                wanted[item.digest] = (res, item)
    return wanted


def _audit(project: Project, purpose: str, res: Resolved, item: PinnedFile) -> None:
    if item.restricted:
        AuditLog(project.data_state_dir).append(
            purpose=purpose, environment=res.name, dataset=item.dataset, digest=item.digest,
            columns=[], rows=None, file=item.location.uri, outcome="transferred")


def push(multiverse: Multiverse, names: list[str] | None = None) -> Transfer:
    """Copy the objects the locks keep to the shared store (those it lacks)."""
    project = multiverse.project
    store, remote = _shared(project)
    result = Transfer()
    for digest, (res, item) in sorted(_wanted(multiverse, names).items()):
        try:
            if remote.has(digest):
                result.present += 1
                continue
            if not store.local.has(digest):
                result.problems.append(res.diag(
                    "BE080", f"{item.what}: {item.location.uri} ({digest}) is not "
                    "in the local store, so it cannot be pushed", *item.place, hints=(f"run `buildenv lock {res.name}` where the data is, or "
                                  "`buildenv pull` where it was pushed",)))
                continue
            _audit(project, "push", res, item)
            path = store.local.path(digest)
            remote.upload(path, digest)
            result.moved += 1
            result.size += path.stat().st_size
        except StoreError as exc:
            result.problems.append(Diagnostic(exc.code, exc.message, hints=exc.hints))
            break  # the store is unreachable: the rest would fail alike
    return result


def pull(multiverse: Multiverse, names: list[str] | None = None) -> Transfer:
    """Fetch the objects the locks keep that the local store lacks, each verified."""
    project = multiverse.project
    store, remote = _shared(project)
    result = Transfer()
    for digest, (res, item) in sorted(_wanted(multiverse, names).items()):
        if store.local.has(digest):
            result.present += 1
            continue
        try:
            if not remote.has(digest):
                raise StoreError("BE080", f"store '{remote.uri}' has no object {digest}")
            _audit(project, "pull", res, item)
            remote.download(digest, store.local, item.restricted)
            result.moved += 1
            result.size += store.local.path(digest).stat().st_size
        except StoreError as exc:
            result.problems.append(res.diag(
                exc.code, f"{item.what}: {item.location.uri}: {exc.message}",
                *item.place, hints=exc.hints or (
                    "run `buildenv push` where the data was locked",)))
            if exc.code == "BE081":
                break
    return result


def checkout(multiverse: Multiverse, name: str) -> Transfer:
    """Write the bytes `name`'s lock pins back to the datasets' local paths."""
    project = multiverse.project
    [(res, lock)] = _locked(multiverse, [name])
    store = ObjectStore.of(project)
    cache = stat_cache(project)
    result = Transfer()
    for ds_name, pinned in sorted(lock.datasets.items()):
        ds = res.env.datasets.get(ds_name)
        if ds is None:
            continue
        if pinned.dvc is not None:
            result.problems.append(res.diag(
                "BE083", f"dataset '{ds_name}' is pinned by DVC: its bytes are DVC's to check "
                "out", "datasets", ds_name, "dvc", hints=("run `dvc checkout`",)))
            continue
        for item in dataset_files(project, ds_name, pinned, res.env.restricted(ds_name)):
            problem = _restore(project, store, cache, res, item, result)
            if problem is not None:
                result.problems.append(problem)
    for name, entry in sorted(lock.labels.items()):
        for item in label_files(project, res.env, name, entry):
            problem = _restore(project, store, cache, res, item, result)
            if problem is not None:
                result.problems.append(problem)
    cache.save()
    return result


def _restore(project: Project, store: ObjectStore, cache: StatCache, res: Resolved,
             item: PinnedFile, result: Transfer) -> Diagnostic | None:
    place = item.place
    target = item.location.local
    if target is None:
        return res.diag("BE083", f"{item.what}: {item.location.uri} is not a local path; "
                        "checkout restores local files only", *place)
    algorithm = item.digest.split(":", 1)[0]
    try:
        if digest_location(item.location, item.fmt, algorithm, cache).digest == item.digest:
            result.present += 1
            return None
    except (OSError, ValueError):
        pass  # missing or unreadable: restored below
    try:
        source = store.find(item.digest, item.restricted)
    except StoreError as exc:
        return res.diag(exc.code, f"{item.what}: {exc.message}", *place)
    if source is None:
        return res.diag("BE080", f"{item.what}: the bytes {item.location.uri} "
                        f"is pinned to ({item.digest}) are not in the store", *place,
                        hints=("`buildenv pull` fetches them where they were pushed; a "
                               "dataset with `keep: false` is not kept",))
    _audit(project, "checkout", res, item)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        clone_file(source, temporary)
        os.chmod(temporary, 0o600 if item.restricted else 0o644)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    result.moved += 1
    result.size += target.stat().st_size
    return None
