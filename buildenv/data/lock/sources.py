"""The lock check of datasets pinned by a version rather than by their uri's bytes.

A table version is its pinned files: each must still exist (or be kept in the object store)
and hash to its pin -- checked without the table library. A table that follows its latest
commit or a ref is then asked where it is now, and the check says how far it moved
("version 7, the lock pins 5: 2 commits — WRITE append 3 files, DELETE 1 file"). A DVC pin is
its `.dvc` file: a different md5 there means the pinned data moved.
"""

from __future__ import annotations

from typing import Any

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.lock.digests import StatCache
from buildenv.data.lock.dvc_pins import dvc_moved
from buildenv.data.lock.lockfile import LockedDataset
from buildenv.data.lock.manifest import describe_diff
from buildenv.data.lock.objects import LocalObjects
from buildenv.data.lock.tables import pinned_files_now, table_moved
from buildenv.data.tables import TableError
from buildenv.env.resolve import Resolved

__all__ = ["source_staleness"]


def source_staleness(project: Project, res: Resolved, ds_name: str, pinned: LockedDataset,
                     algorithm: str, cache: StatCache, executor: Any = None
                     ) -> list[Diagnostic]:
    """BE051 (moved, files altered), BE077 (pinned files gone and not kept), BE073/BE072
    (the table cannot be asked); a warning when the table library is missing to ask whether
    a followed table moved (the pinned files are still verified)."""
    ds = res.env.datasets[ds_name]
    if ds.dvc is not None:
        moved = dvc_moved(project, ds, pinned)
        if moved is None:
            return []
        return [res.diag("BE051", f"dataset '{ds_name}' changed since it was locked: {moved}",
                         "datasets", ds_name, "dvc",
                         hints=(f"review `buildenv drift {res.name} --dataset {ds_name} "
                                f"--against {ds.uri}` and run `buildenv lock {res.name}`",))]
    problems: list[Diagnostic] = []
    place = ("datasets", ds_name, "uri")
    label = f"{'Delta' if ds.format == 'delta' else 'Iceberg'} table '{ds.uri}' " \
            f"{pinned.version_label}"
    assert pinned.manifest is not None
    try:
        now, missing = pinned_files_now(project, pinned.manifest, algorithm, cache, executor)
    except ValueError as exc:  # a pinned file that is no longer Parquet: it was altered
        return [res.diag("BE051", f"dataset '{ds_name}' changed since it was locked: {label}: "
                         f"{exc}", *place, hints=("a table's files are never rewritten by its "
                                                  "writers: restore them",))]
    if missing:
        store = LocalObjects.of(project)
        lost = [p for p in missing if not store.has(_digest(pinned, p))]
        if lost:
            shown = ", ".join(f"'{p}'" for p in lost[:3]) + (
                f" and {len(lost) - 3} more" if len(lost) > 3 else "")
            problems.append(res.diag(
                "BE077", f"dataset '{ds_name}': {label}: {shown} no longer exist (vacuumed or "
                "cleaned up) and are not kept in the object store", *place,
                hints=("set `keep: true` on the dataset to keep the files of pinned versions, "
                       f"or pin a version whose files exist and run `buildenv lock "
                       f"{res.name}`",)))
    present = {f.path: f for f in now.files}
    altered = [f.path for f in pinned.manifest.files
               if f.path in present and present[f.path].digest != f.digest]
    if altered:
        problems.append(res.diag(
            "BE051", f"dataset '{ds_name}' changed since it was locked: {label}: "
            f"{describe_diff([], [], altered)}", *place,
            hints=("a table's files are never rewritten by its writers: restore them, or "
                   f"relock with `buildenv lock {res.name}`",)))
    try:
        table_move = table_moved(project, ds, pinned.table or {})
    except TableError as exc:
        if exc.code == "BE071":
            problems.append(res.diag(exc.code, f"dataset '{ds_name}': cannot tell whether the "
                                     f"table moved since it was locked: {exc.message}", *place,
                                     severity=Severity.WARNING, hints=exc.hints))
        else:
            problems.append(res.diag(exc.code, f"dataset '{ds_name}': {exc.message}", *place,
                                     hints=exc.hints))
        return problems
    if table_move is not None:
        where, what = table_move
        problems.append(res.diag(
            "BE051", f"dataset '{ds_name}' moved since it was locked: {where}: {what}",
            *place, hints=(f"review `buildenv drift {res.name} --dataset {ds_name} "
                           f"--against {ds.uri}`, then `buildenv lock {res.name}` (or "
                           f"`buildenv retrain {res.name}`) pins the new version",)))
    return problems


def _digest(pinned: LockedDataset, path: str) -> str:
    assert pinned.manifest is not None
    entry = pinned.manifest.entry(path)
    assert entry is not None
    return entry.digest
