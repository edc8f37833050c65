"""Locking: hash every dataset of the environments asked for (each distinct version once),
ask the label-set pinning (`LabelLocker`, implemented by the labels room) for their label sets
and the builder of what code makes (`SourceBuilder`, implemented by the compile room) for
derived datasets and computed label sets, and write each lock when it changed."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from buildenv.core import awake
from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import canonical_json, digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project
from buildenv.data.executor import Executor
from buildenv.data.lock.derived import Pinned
from buildenv.data.lock.digests import ContentDigest, StatCache, digest_location
from buildenv.data.lock.dvc_pins import digest_dvc
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
    restricted_partitions,
)
from buildenv.data.lock.provenance import provenance_problems
from buildenv.data.lock.tables import Previous, column_problems, digest_table
from buildenv.data.storage import locate
from buildenv.data.tables import TableError
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import Dataset, LabelSet
from buildenv.env.uris import names_directory

__all__ = ["DatasetKey", "Digested", "Keeper", "LabelLocker", "SourceBuilder",
           "digest_dataset", "digest_declared",
           "label_declaration", "lock_environments_with"]

# uri, format, partitions as written (None: found in the paths; a table's: its pin), declared
# columns (what inference looks for)
DatasetKey = tuple[str, str, tuple[str, ...] | None, tuple[str, ...]]


@dataclass(frozen=True)
class Digested:
    value: ContentDigest
    manifest: Manifest | None = None
    table: dict[str, Any] | None = None  # a table version's record
    dvc: dict[str, Any] | None = None  # a DVC pin's record


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


def digest_declared(project: Project, ds: Dataset, algorithm: str = "sha256",
                    cache: StatCache | None = None, executor: Executor | None = None,
                    previous: Previous | None = None) -> Digested:
    """The digest of what a dataset declaration selects now: a table's version (its files,
    `lock.tables`; `previous`, what the lock being replaced pins of it), the bytes a `.dvc`
    file pins (`lock.dvc_pins`), or the file or directory at its uri. Raises like
    `digest_dataset`, and TableError for tables and DVC pins."""
    if ds.is_table:
        value, manifest, record = digest_table(project, ds, algorithm, cache, executor,
                                               previous)
        return Digested(value, manifest, table=record)
    if ds.dvc is not None:
        value, record = digest_dvc(project, ds, algorithm, cache)
        return Digested(value, dvc=record)
    return digest_dataset(project, ds.uri, ds.format, ds.partitions, algorithm, cache,
                          executor, sorted(ds.columns))


Problem = tuple[str, str, tuple[str, ...]]  # code, message, hints


SERVE = 0.05  # seconds: how soon a hashing thread that asks for Ray is answered (`serve`)


def _digest_all(project: Project, wanted: dict[DatasetKey, Dataset], algorithm: str,
                cache: StatCache, executor: Executor | None = None,
                previous: dict[DatasetKey, Previous] | None = None
                ) -> tuple[dict[DatasetKey, Digested], dict[DatasetKey, list[Problem]]]:
    """Hash each distinct dataset once, a few in parallel (hashlib releases the GIL)."""
    before = previous or {}
    results: dict[DatasetKey, Digested] = {}
    errors: dict[DatasetKey, list[Problem]] = {}

    def work(item: DatasetKey) -> None:
        uri = item[0]
        try:
            results[item] = digest_declared(project, wanted[item], algorithm, cache, executor,
                                            before.get(item))
        except TableError as exc:
            errors[item] = [(exc.code, exc.message, exc.hints)]
        except ManifestError as exc:
            errors[item] = [(code, text, ()) for code, text in exc.problems]
        except FileNotFoundError:
            errors[item] = [("BE053", f"cannot read '{uri}': file not found", ())]
        except OSError as exc:
            errors[item] = [("BE053", f"cannot read '{uri}': {exc.strerror or exc}", ())]
        except DiagnosticError:
            raise
        except Exception as exc:  # a parse error from pyarrow: bad Parquet/CSV
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors[item] = [("BE053", text if names_directory(item[0])
                             else f"cannot read '{uri}': {text}", ())]

    workers = max(1, min(len(wanted), os.cpu_count() or 1, 4))
    if workers == 1:  # one dataset (its files may still be hashed by the executor's threads)
        try:
            for item in sorted(wanted, key=repr):
                work(item)  # in this thread: the executor connects here if it must
        finally:
            if executor is not None:
                executor.end_deferral()
        return results, errors
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work, item) for item in sorted(wanted, key=repr)]
        try:  # in slices: a thread may ask this one to connect the executor (`serve`)
            awake.results(futures, SERVE, executor.serve if executor is not None else None)
        finally:  # on every way out (a diagnostic, Ctrl-C): no thread waits for an answer
            if executor is not None:
                executor.end_deferral()
    return results, errors


def _key(ds: Dataset) -> DatasetKey:
    if ds.is_table or ds.dvc is not None:
        pin = ds.model_dump(mode="json", include={"version", "as_of", "catalog", "ref",
                                                  "snapshot", "dvc"})
        return (ds.uri, ds.format, (canonical_json(pin).decode(),), ())
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


class Keeper(Protocol):
    """How the lock keeps the bytes it pins: the lock owns this interface, the store room
    implements it (`buildenv.data.store.keeping.keep_lock`). Called before a lock is written;
    a lock is never written for bytes it failed to keep."""

    def __call__(self, project: Project, res: Resolved, lock: Lock, cache: StatCache
                 ) -> list[Diagnostic]:
        """The problems found keeping the pinned bytes of `lock` (none: all kept)."""


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
    # `source` only when set, and its `files` only when some are declared: label sets declared
    # before either existed keep their digest (and their locks stay current)
    exclude: dict[str, Any] = {"description": True}
    if spec.source is None:
        exclude["source"] = True
    elif not spec.source.files:
        exclude["source"] = {"files": True}
    return digest_json(spec.model_dump(mode="json", exclude=exclude))


def lock_environments_with(label_locker: LabelLocker, multiverse: Multiverse, names: list[str],
                           algorithm: str = "sha256", executor: Executor | None = None,
                           keeper: Keeper | None = None, builder: SourceBuilder | None = None,
                           ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment, its label sets by `label_locker`, what code makes by `builder`;
    returns (name, lock, changed) and the problems found; `executor` hashes the files of
    partitioned datasets and tables; `keeper` keeps the pinned bytes. Callers use
    `buildenv.labels.locking.lock_environments`, which passes the labels room's locker and the
    store's keeper (and `buildenv.compile.locking` the builder)."""
    project = multiverse.project
    resolved, problems = multiverse.resolve_all(names)
    wanted = {_key(ds): ds for res in resolved.values() for ds in res.env.datasets.values()
              if ds.source is None}  # derived datasets are built, not hashed from a uri
    if executor is not None and any(names_directory(uri) or ds.is_table
                                    for (uri, *_), ds in wanted.items()):
        # files are hashed from threads, and only files the stat cache cannot vouch for: the
        # executor connects (a Ray started) from this thread only when one needs it
        executor.defer()
    cache = stat_cache(project)
    locks: dict[str, Lock | None] = {}  # the locks being replaced, read once
    digests, errors = _digest_all(project, wanted, algorithm, cache, executor,
                                  _previous_tables(project, resolved, locks))
    out = []
    for name, res in sorted(resolved.items()):
        plain = {n: ds for n, ds in res.env.datasets.items() if ds.source is None}
        found_problems = _dataset_problems(project, res, plain, digests, errors)
        problems.extend(found_problems)
        if found_problems:
            continue
        datasets = {}
        for ds_name, ds in plain.items():
            digested = digests[_key(ds)]
            datasets[ds_name] = LockedDataset(ds.uri, ds.format, digested.value.digest,
                                              digested.value.size, digested.value.rows,
                                              digested.manifest, digested.table, digested.dvc)
        beside = _keep_beside(keeper, builder, project, res, datasets, cache)
        try:
            found = _build_derived(builder, multiverse, res, datasets, cache)
        finally:
            if beside is not None:
                beside.join()
        problems.extend(found)
        if any(p.is_error for p in found):
            continue
        labels: dict[str, LockedLabels] = {}
        if res.env.labels:
            labels, found = label_locker(multiverse, res, _read_previous(project, name, locks),
                                         algorithm, cache)
            found += _build_labels(builder, multiverse, res, datasets, labels, cache)
            problems.extend(found)
            if any(p.is_error for p in found):
                continue
        lock = Lock(name, res.digest, dict(sorted(datasets.items())), labels)
        if keeper is not None:
            failed = keeper(project, res, lock, cache)
            problems.extend(failed)
            if failed:
                continue  # a lock is never written for bytes the store failed to keep
        path = lock_path(project, name)
        text = lock.render()
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write_text(path, text)
        out.append((name, lock, changed))
    cache.save()
    return out, problems


def _read_previous(project: Project, name: str, locks: dict[str, Lock | None]) -> Lock | None:
    """The lock of `name` as it is before this relock (None: absent or unreadable)."""
    if name not in locks:
        try:
            locks[name] = read_lock(project, name)
        except DiagnosticError:
            locks[name] = None
    return locks[name]


def _previous_tables(project: Project, resolved: dict[str, Resolved],
                     locks: dict[str, Lock | None]) -> dict[DatasetKey, Previous]:
    """What the locks being replaced pin of each Delta table that follows its latest commit
    or a `version:`: a relock replays the commits since (`lock.tables`)."""
    out: dict[DatasetKey, Previous] = {}
    for name, res in sorted(resolved.items()):
        for ds_name, ds in res.env.datasets.items():
            if ds.format != "delta" or ds.as_of is not None or ds.source is not None or \
                    _key(ds) in out:
                continue
            lock = _read_previous(project, name, locks)
            entry = lock.datasets.get(ds_name) if lock is not None else None
            if entry is not None and entry.table is not None and entry.manifest is not None \
                    and entry.uri == ds.uri and entry.format == ds.format:
                out[_key(ds)] = (entry.table, entry.manifest)
    return out


def _dataset_problems(project: Project, res: Resolved, plain: dict[str, Dataset],
                      digests: dict[DatasetKey, Digested],
                      errors: dict[DatasetKey, list[Problem]]) -> list[Diagnostic]:
    """Why an environment's datasets cannot be pinned: what hashing them found, what its
    declarations cannot take of a table version, a synthetic file that is not its
    provenance's."""
    problems = []
    for ds_name, ds in plain.items():
        found = list(errors.get(_key(ds), []))
        pinned = digests.get(_key(ds))
        if pinned is not None and pinned.table is not None:
            found += [(c, t, ()) for c, t in
                      _table_problems(ds, pinned, res.env.restricted(ds_name))]
        elif pinned is not None and pinned.manifest is not None and \
                pinned.manifest.partitions and res.env.restricted(ds_name):
            found.append(restricted_partitions(pinned.manifest.partitions))
        problems += [res.diag(code, f"dataset '{ds_name}': {text}", "datasets", ds_name, "uri",
                              hints=hints) for code, text, hints in found]
        if ds_name in res.env.privacy.synthetic and pinned is not None:
            problems += provenance_problems(project, res, ds_name, pinned.value.digest)
    return problems


def _table_problems(ds: Dataset, found: Digested, restricted: bool) -> list[tuple[str, str]]:
    """What an environment cannot take of a table version: columns it declares that the
    version lacks (BE076); partition values of a restricted table (BE075: the lock would
    hold them)."""
    assert found.table is not None
    problems = column_problems(ds, found.table)
    if restricted and found.manifest is not None and found.manifest.partitions:
        problems.append(("BE075", f"the table is partitioned by "
                         f"{', '.join(found.manifest.partitions)} and the dataset is "
                         "restricted: partition values would be written in the lock"))
    return problems


def _keep_beside(keeper: Keeper | None, builder: SourceBuilder | None, project: Project,
                 res: Resolved, datasets: dict[str, LockedDataset], cache: StatCache
                 ) -> threading.Thread | None:
    """Keep the bytes of `res`'s plain datasets in a thread while its derived ones are built.

    On a first lock, storing the inputs' bytes would otherwise wait for every transform to
    finish (100 input files: about a tenth of a second after the loop). The lock's own
    keeper call afterwards still decides: it finds these files held (a stat each), keeps
    what this thread could not and reports what cannot be kept, so a lock is still never
    written for bytes the store failed to keep. Nothing to overlap without derived data."""
    if keeper is None or builder is None or \
            not any(ds.source is not None for ds in res.env.datasets.values()):
        return None
    plain = Lock(res.name, res.digest, dict(sorted(datasets.items())), {})

    def keep() -> None:
        try:
            keeper(project, res, plain, cache)
        except Exception:  # the lock's own keeper call keeps it again and reports why not
            pass

    thread = threading.Thread(target=keep, name="buildenv-keep-inputs", daemon=True)
    thread.start()
    return thread


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
