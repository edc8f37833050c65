"""Locking: hash every dataset of the environments asked for (each distinct version once),
ask the label-set pinning (`LabelLocker`, implemented by the labels room) for their label sets
and the builder of what code makes (`SourceBuilder`, implemented by the compile room) for
derived datasets and computed label sets, and write each lock when it changed."""

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
from buildenv.data.lock.derived import Pinned
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

__all__ = ["DatasetKey", "Digested", "LabelLocker", "SourceBuilder", "digest_dataset",
           "label_declaration", "lock_environments_with"]

DatasetKey = tuple[str, str, tuple[str, ...]]  # uri, format, partitions


@dataclass(frozen=True)
class Digested:
    value: ContentDigest
    manifest: Manifest | None = None


def digest_dataset(project: Project, uri: str, fmt: str, partitions: Sequence[str] = (),
                   algorithm: str = "sha256", cache: StatCache | None = None,
                   executor: Executor | None = None) -> Digested:
    """The content digest of a dataset version now: one file's, or a partitioned dataset's
    manifest (a stat per file, a hash per file the stat cache cannot vouch for). Raises
    FileNotFoundError, ManifestError or another exception naming what cannot be read."""
    location = locate(uri, project)
    if not names_directory(uri):
        return Digested(digest_location(location, fmt, algorithm, cache))
    manifest = digest_partitioned(location, partitions, algorithm, cache, executor)
    return Digested(ContentDigest(manifest.digest, manifest.size, manifest.rows), manifest)


def _digest_all(project: Project, wanted: set[DatasetKey], algorithm: str, cache: StatCache,
                executor: Executor | None = None
                ) -> tuple[dict[DatasetKey, Digested], dict[DatasetKey, list[tuple[str, str]]]]:
    """Hash each distinct dataset once, a few in parallel (hashlib releases the GIL)."""
    results: dict[DatasetKey, Digested] = {}
    errors: dict[DatasetKey, list[tuple[str, str]]] = {}

    def work(item: DatasetKey) -> None:
        uri, fmt, partitions = item
        try:
            results[item] = digest_dataset(project, uri, fmt, partitions, algorithm, cache,
                                           executor)
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
        list(pool.map(work, sorted(wanted)))
    return results, errors


def _key(ds: Any) -> DatasetKey:
    return (ds.uri, ds.format, tuple(ds.partition_columns) if ds.partitioned else ())


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


class SourceBuilder(Protocol):
    """How the lock builds what code makes: the lock owns this interface, the compile room
    implements it (it runs user code in the build's hermetic process). A build reuses every
    output whose code and inputs are unchanged, so relocking costs what changed."""

    def derived(self, multiverse: Multiverse, res: Resolved, pins: dict[str, Pinned],
                cache: StatCache) -> tuple[dict[str, LockedDataset], list[Diagnostic]]:
        """Lock entries of the derived datasets of `res`, given the pins of its other
        datasets (built in order: a derived input is pinned before what reads it)."""
        ...

    def labels(self, multiverse: Multiverse, res: Resolved, datasets: dict[str, LockedDataset],
               labels: dict[str, LockedLabels], cache: StatCache
               ) -> tuple[dict[str, LockedLabels], list[Diagnostic]]:
        """Lock entries of the label sets of `res` computed by labeling functions, given the
        lock's datasets and its other label sets (a gold set)."""
        ...


def label_declaration(spec: LabelSet) -> str:
    """Digest of what determines a label set's lock entry (all but its description)."""
    # `source` only when set: label sets declared before it existed keep their digest
    exclude = {"description"} if spec.source is not None else {"description", "source"}
    return digest_json(spec.model_dump(mode="json", exclude=exclude))


def lock_environments_with(label_locker: LabelLocker, multiverse: Multiverse, names: list[str],
                           algorithm: str = "sha256", executor: Executor | None = None,
                           builder: SourceBuilder | None = None,
                           ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment, its label sets by `label_locker`, what code makes by `builder`;
    returns (name, lock, changed) and the problems found; `executor` hashes the files of
    partitioned datasets. Callers use `buildenv.labels.locking.lock_environments`, which passes
    the labels room's locker (and `buildenv.compile.locking` the builder)."""
    project = multiverse.project
    resolved, problems = multiverse.resolve_all(names)
    wanted = {_key(ds) for res in resolved.values() for ds in res.env.datasets.values()
              if ds.source is None}  # derived datasets are built, not hashed from a uri
    if executor is not None and any(names_directory(uri) for uri, _, _ in wanted):
        executor.prepare()  # datasets are hashed from threads: connect from this one
    cache = stat_cache(project)
    digests, errors = _digest_all(project, wanted, algorithm, cache, executor)
    out = []
    for name, res in sorted(resolved.items()):
        bad = False
        plain = {n: ds for n, ds in res.env.datasets.items() if ds.source is None}
        for ds_name, ds in plain.items():
            for code, text in errors.get(_key(ds), []):
                bad = True
                problems.append(res.diag(code, f"dataset '{ds_name}': {text}", "datasets",
                                         ds_name, "uri"))
        for ds_name, ds in plain.items():
            if ds_name in res.env.privacy.synthetic and _key(ds) in digests:
                found = provenance_problems(project, res, ds_name,
                                            digests[_key(ds)].value.digest)
                problems.extend(found)
                bad = bad or bool(found)
        if bad:
            continue
        datasets = {}
        for ds_name, ds in plain.items():
            digested = digests[_key(ds)]
            datasets[ds_name] = LockedDataset(ds.uri, ds.format, digested.value.digest,
                                              digested.value.size, digested.value.rows,
                                              digested.manifest)
        found = _build_derived(builder, multiverse, res, datasets, cache)
        problems.extend(found)
        if any(p.is_error for p in found):
            continue
        labels: dict[str, LockedLabels] = {}
        if res.env.labels:
            try:
                previous = read_lock(project, name)
            except DiagnosticError:
                previous = None
            labels, found = label_locker(multiverse, res, previous, algorithm, cache)
            found += _build_labels(builder, multiverse, res, datasets, labels, cache)
            problems.extend(found)
            if any(p.is_error for p in found):
                continue
        lock = Lock(name, res.digest, dict(sorted(datasets.items())), labels)
        path = lock_path(project, name)
        text = lock.render()
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write_text(path, text)
        out.append((name, lock, changed))
    cache.save()
    return out, problems




def _build_derived(builder: SourceBuilder | None, multiverse: Multiverse, res: Resolved,
                   datasets: dict[str, LockedDataset], cache: StatCache) -> list[Diagnostic]:
    """Add the derived datasets of `res` to `datasets` (built by `builder`)."""
    derived = [n for n, ds in res.env.datasets.items() if ds.source is not None]
    if not derived:
        return []
    if builder is None:
        return [_unbuilt(res, "datasets", n) for n in derived]
    built, problems = builder.derived(
        multiverse, res, {n: Pinned(d.digest, d.manifest) for n, d in datasets.items()}, cache)
    datasets.update(built)
    return problems


def _build_labels(builder: SourceBuilder | None, multiverse: Multiverse, res: Resolved,
                  datasets: dict[str, LockedDataset], labels: dict[str, LockedLabels],
                  cache: StatCache) -> list[Diagnostic]:
    """Add the label sets of `res` computed by labeling functions to `labels`."""
    computed = [n for n, spec in res.env.labels.items() if spec.source is not None]
    if not computed:
        return []
    if builder is None:
        return [_unbuilt(res, "labels", n) for n in computed]
    built, problems = builder.labels(multiverse, res, datasets, labels, cache)
    labels.update(built)
    return problems


def _unbuilt(res: Resolved, section: str, name: str) -> Diagnostic:
    what = "dataset" if section == "datasets" else "label set"
    return res.diag("BE094", f"{what} '{name}' is made by code, which this command does not "
                    "run", section, name, "source", hints=(f"run `buildenv lock {res.name}`",))
