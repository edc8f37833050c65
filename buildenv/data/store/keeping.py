"""What a lock keeps: the bytes of every file it pins, for datasets that keep theirs.

Called by `buildenv lock` before it writes a lock, so a lock is never written for bytes the
store failed to keep. Files the store already holds cost a `stat`; new ones are cloned (or
copied) a few at a time. A restricted dataset's objects are readable by their owner only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.lock.digests import FILE, StatCache
from buildenv.data.lock.lockfile import Lock, LockedDataset, LockedLabels
from buildenv.data.storage import Location, locate
from buildenv.data.store import ObjectStore
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Environment

__all__ = ["PinnedFile", "dataset_files", "keep_lock", "keep_pinned", "pinned_files"]


@dataclass(frozen=True)
class PinnedFile:
    dataset: str  # the dataset the bytes are rows or labels of (restricted: audited)
    base: Location  # the file, or (with `rel`) the directory it is under
    digest: str
    fmt: str  # how the stat cache knows the file ("parquet", "csv", "file")
    restricted: bool
    what: str  # how messages name it: "dataset 'movies'", "label set 'genre-v2'"
    place: tuple[str, ...]  # the YAML key its diagnostics point at
    rel: str | None = None  # the file's path under `base` (a manifest's file)

    @functools.cached_property
    def location(self) -> Location:
        """Where the bytes are: built when asked, as a relock asks only for the files the
        store does not hold yet (a path object per file of a year of data cost a tenth of
        the relock)."""
        return self.base if self.rel is None else self.base.child(self.rel)


def dataset_files(project: Project, name: str, pinned: LockedDataset, restricted: bool,
                  held: Callable[[list[str]], set[str]] | None = None) -> list[PinnedFile]:
    """The files one lock entry pins, where they are expected to be; with `held` (those of
    some digests the store holds), a manifest's files of an unrestricted dataset that it
    holds are left out (nothing to keep: a relock of a year of files builds a `PinnedFile`
    only for the new ones)."""
    what, place = f"dataset '{name}'", ("datasets", name, "uri")
    if pinned.manifest is not None:
        base = locate(pinned.manifest.base or pinned.uri, project)
        files = pinned.manifest.files
        if held is not None and not restricted:
            kept = held([f.digest for f in files])
            files = tuple(f for f in files if f.digest not in kept)
        return [PinnedFile(name, base, f.digest, "parquet", restricted, what, place, f.path)
                for f in files]
    return [PinnedFile(name, locate(pinned.uri, project), pinned.digest, pinned.format,
                       restricted, what, place)]


def label_files(project: Project, env: Environment, name: str, pinned: LockedLabels
                ) -> list[PinnedFile]:
    """The export and mapping files a label set's lock entry pins (local ones: kept)."""
    spec = env.labels.get(name)
    if spec is None:
        return []
    restricted = env.restricted(spec.dataset)
    out = []
    for uri, digest in [(pinned.uri, pinned.digest), *sorted(pinned.mappings.items())]:
        location = locate(uri, project)
        if location.local is not None:
            out.append(PinnedFile(spec.dataset, location, digest, FILE, restricted,
                                  f"label set '{name}'", ("labels", name, "uri")))
    return out


def pinned_files(project: Project, env: Environment, lock: Lock, every: bool = False,
                 held: Callable[[list[str]], set[str]] | None = None) -> list[PinnedFile]:
    """The files of `lock` that the store keeps (`every`: all files it pins, kept or not):
    datasets' and label sets'; a DVC pin's bytes live in DVC's cache, not here. `held`: as
    for `dataset_files`."""
    out = []
    for name, pinned in sorted(lock.datasets.items()):
        ds = env.datasets.get(name)
        if ds is None or pinned.dvc is not None or not (every or ds.keeps):
            continue
        out.extend(dataset_files(project, name, pinned, env.restricted(name), held))
    for label_set, entry in sorted(lock.labels.items()):
        out.extend(label_files(project, env, label_set, entry))
    return out


def keep_pinned(project: Project, files: list[PinnedFile], cache: StatCache | None
                ) -> list[tuple[PinnedFile, str]]:
    """Keep every file's bytes in the local store; returns (file, problem) for those that
    could not be kept (changed since they were hashed, unreadable)."""
    store = ObjectStore.of(project)
    problems: list[tuple[PinnedFile, str]] = []

    def keep(item: PinnedFile, held: bool = False) -> None:
        try:
            if held:
                store.keep(item.location, item.digest, item.restricted)  # restricted: 0400
                return
            vouched = False
            if cache is not None and item.location.local is not None:
                hit = cache.get(item.location.key, item.location.stat(),
                                item.digest.split(":", 1)[0], item.fmt)
                vouched = hit is not None and hit.digest == item.digest
            store.keep(item.location, item.digest, item.restricted, vouched)
        except FileNotFoundError:
            problems.append((item, f"'{item.location.uri}' disappeared before it was kept"))
        except (OSError, ValueError) as exc:
            text = getattr(exc, "strerror", None) or str(exc)
            problems.append((item, f"cannot keep '{item.location.uri}': {text}"))
        except Exception as exc:  # a StoreError from a remote copy
            problems.append((item, getattr(exc, "message", str(exc))))

    # Files the store holds cost a stat: kept here, in order. A thread per file would cost
    # more than the stat (a relock of 365 files: ~60% of its time in the pool's bookkeeping).
    todo = []
    for item in files:
        if not store.has(item.digest):
            todo.append(item)
        elif item.restricted:  # held: only a restricted file's object needs its mode set
            keep(item, held=True)
    if todo:
        workers = max(1, min(len(todo), os.cpu_count() or 1, 4))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(keep, todo))
    return problems


def keep_lock(project: Project, res: Resolved, lock: Lock, cache: StatCache
              ) -> list[Diagnostic]:
    """The store's `Keeper` (buildenv.data.lock.locking): keep the pinned bytes of `lock`'s
    datasets that keep theirs; a diagnostic per file that could not be kept."""
    store = ObjectStore.of(project)
    failed = keep_pinned(project, pinned_files(project, res.env, lock, held=store.held), cache)
    return [res.diag("BE053", f"{item.what}: {text}", *item.place,
                     hints=(f"run `buildenv lock {res.name}` again",))
            for item, text in failed]
