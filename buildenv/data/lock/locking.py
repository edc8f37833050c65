"""Locking: hash every dataset of the environments asked for (each distinct version once),
ask the label-set pinning (`LabelLocker`, implemented by the labels room) for their label sets,
and write each lock when it changed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.data.executor import Executor
from buildenv.data.lock.digests import ContentDigest, StatCache, digest_location
from buildenv.data.lock.lockfile import (
    Lock,
    LockedDataset,
    LockedLabels,
    lock_path,
    read_lock,
    stat_cache,
)
from buildenv.data.lock.manifest import (
    Manifest,
    ManifestError,
    digest_partitioned,
)
from buildenv.data.lock.provenance import provenance_problems
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import LabelSet
from buildenv.env.uris import names_directory

__all__ = ["DatasetKey", "Digested", "LabelLocker", "digest_dataset", "label_declaration",
           "lock_environments_with"]

# uri, format, partitions as written (None: found in the paths), declared columns
DatasetKey = tuple[str, str, tuple[str, ...] | None, tuple[str, ...]]


@dataclass(frozen=True)
class Digested:
    value: ContentDigest
    manifest: Manifest | None = None


def digest_dataset(project: Project, uri: str, fmt: str, partitions: Sequence[str] | None = (),
                   algorithm: str = "sha256", cache: StatCache | None = None,
                   executor: Executor | None = None, columns: Sequence[str] = ()) -> Digested:
    """The content digest of a dataset version now: one file's, or a partitioned dataset's
    manifest (a stat per file, a hash per file the stat cache cannot vouch for; partitions as
    written, or None: those of `columns` the paths show). Raises FileNotFoundError,
    ManifestError or another exception naming what cannot be read."""
    location = locate(uri, project)
    if not names_directory(uri):
        return Digested(digest_location(location, fmt, algorithm, cache))
    manifest = digest_partitioned(location, partitions, algorithm, cache, executor, columns)
    return Digested(ContentDigest(manifest.digest, manifest.size, manifest.rows), manifest)


def _digest_all(project: Project, wanted: set[DatasetKey], algorithm: str, cache: StatCache,
                executor: Executor | None = None
                ) -> tuple[dict[DatasetKey, Digested], dict[DatasetKey, list[tuple[str, str]]]]:
    """Hash each distinct dataset once, a few in parallel (hashlib releases the GIL)."""
    results: dict[DatasetKey, Digested] = {}
    errors: dict[DatasetKey, list[tuple[str, str]]] = {}

    def work(item: DatasetKey) -> None:
        uri, fmt, partitions, columns = item
        try:
            results[item] = digest_dataset(project, uri, fmt, partitions, algorithm, cache,
                                           executor, columns)
        except ManifestError as exc:
            errors[item] = exc.problems
        except FileNotFoundError:
            errors[item] = [("BE053", f"cannot read '{uri}': file not found")]
        except OSError as exc:
            errors[item] = [("BE053", f"cannot read '{uri}': {exc.strerror or exc}")]
        except DiagnosticError:
            raise
        except Exception as exc:  # a parse error from pyarrow: bad Parquet/CSV
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors[item] = [("BE053", text if names_directory(item[0])
                             else f"cannot read '{uri}': {text}")]

    workers = max(1, min(len(wanted), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, sorted(wanted, key=repr)))
    return results, errors


def _key(ds: Any) -> DatasetKey:
    if not ds.partitioned:
        return (ds.uri, ds.format, (), ())
    if ds.partitions is not None:
        return (ds.uri, ds.format, tuple(ds.partitions), ())
    return (ds.uri, ds.format, None, tuple(sorted(ds.columns)))


class LabelLocker(Protocol):
    """How the lock pins an environment's label sets: the lock owns this interface, the labels
    room implements it (it reads and counts the exports, which the data room cannot import).
    `buildenv.labels.locking.lock_environments` is the one place the two meet: every caller
    locks through it, so no lock leaves the label sets out."""

    def __call__(self, multiverse: Multiverse, res: Resolved, previous: Lock | None,
                 algorithm: str, cache: StatCache
                 ) -> tuple[dict[str, LockedLabels], list[Diagnostic]]:
        """The label sets' lock entries (an unchanged one reused from `previous`), and the
        problems found."""
        ...


def label_declaration(spec: LabelSet) -> str:
    """Digest of what determines a label set's lock entry (all but its description)."""
    return digest_json(spec.model_dump(mode="json", exclude={"description"}))


def lock_environments_with(label_locker: LabelLocker, multiverse: Multiverse, names: list[str],
                           algorithm: str = "sha256", executor: Executor | None = None,
                           ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment, its label sets by `label_locker`; returns (name, lock, changed)
    and the problems found; `executor` hashes the files of partitioned datasets. Callers use
    `buildenv.labels.locking.lock_environments`, which passes the labels room's locker."""
    project = multiverse.project
    resolved, problems = multiverse.resolve_all(names)
    wanted = {_key(ds) for res in resolved.values() for ds in res.env.datasets.values()}
    if executor is not None and any(names_directory(key[0]) for key in wanted):
        executor.prepare()  # datasets are hashed from threads: connect from this one
    cache = stat_cache(project)
    digests, errors = _digest_all(project, wanted, algorithm, cache, executor)
    out = []
    for name, res in sorted(resolved.items()):
        bad = False
        for ds_name, ds in res.env.datasets.items():
            for code, text in errors.get(_key(ds), []):
                bad = True
                problems.append(res.diag(code, f"dataset '{ds_name}': {text}", "datasets",
                                         ds_name, "uri"))
        for ds_name, ds in res.env.datasets.items():
            if ds_name in res.env.privacy.synthetic and _key(ds) in digests:
                found = provenance_problems(project, res, ds_name,
                                            digests[_key(ds)].value.digest)
                problems.extend(found)
                bad = bad or bool(found)
        if bad:
            continue
        labels: dict[str, LockedLabels] = {}
        if res.env.labels:
            try:
                previous = read_lock(project, name)
            except DiagnosticError:
                previous = None
            labels, found = label_locker(multiverse, res, previous, algorithm, cache)
            problems.extend(found)
            if any(p.is_error for p in found):
                continue
        datasets = {}
        for ds_name, ds in res.env.datasets.items():
            digested = digests[_key(ds)]
            datasets[ds_name] = LockedDataset(ds.uri, ds.format, digested.value.digest,
                                              digested.value.size, digested.value.rows,
                                              digested.manifest)
        lock = Lock(name, res.digest, datasets, labels)
        path = lock_path(project, name)
        text = lock.render()
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write_text(path, text)
        out.append((name, lock, changed))
    cache.save()
    return out, problems


