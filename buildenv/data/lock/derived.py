"""Derived datasets: outputs of a transform, cached per input file and pinned like data.

A derived dataset (`source: {transform, inputs}`) is made one output file per file of its first
input (one file in all when that input is one file). Each output file is an **object** keyed by
everything that determines its bytes: the transform (`path.py:function`), the digests of its
code files (its modules, and the other repository files it read when it last ran:
`read_files`), the declared output columns, the aggregation, the input file's digest and path, the
digests of the other inputs (read whole), and the Parquet writer's version. Objects live under
`<state>/derived/objects/<k[:2]>/<k>.parquet`, read-only, with a small record of their digest,
size, rows and stat beside them; a file whose stat no longer matches its record is a miss.

`plan_derived` computes the keys; the compile room runs the transform for the missing ones and
`DerivedStore.put` stores each output atomically (content-addressed: concurrent builders write
the same bytes, and `os.replace` keeps whichever lands last). `materialize` then lays out the
dataset's uri -- `<state>/derived/<env>/<dataset>/` with the input's relative paths, or one file
-- as hard links to the objects, built aside and swapped in at once (when only one file
differs, that file's link alone is renamed into place), so a reader sees the old files or the
new ones. The lock records the dataset's manifest like any partitioned dataset's, plus
`derived`: the transform, its code files' digests, the files it read (`files_read`) and its
inputs' digests, from which `derived_staleness` says what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildenv.core.atomic import atomic_dir, atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.code import code_files
from buildenv.core.diagnostics import Diagnostic
from buildenv.core.mutex import dir_mutex
from buildenv.core.tempdirs import owned_temp_dir, scratch_dir, sweep
from buildenv.data.lock.digests import ContentDigest, compute_digest
from buildenv.data.lock.manifest import FileEntry, Manifest, describe_diff, partition_values
from buildenv.data.lock.parquet_footer import footer_rows
from buildenv.data.lock.read_files import changes, declared, file_digests, pinnable, recorded_reads
from buildenv.data.storage import Location, locate

if TYPE_CHECKING:  # an annotation only: the hermetic process imports this module, not YAML
    from buildenv.core.project import Project
    from buildenv.env.resolve import Resolved
    from buildenv.env.spec import Dataset, Environment

__all__ = ["DerivedPlan", "DerivedStore", "OutputFile", "OutputMeta", "Pinned", "Staged",
           "bytes_digest", "declared_files", "derived_staleness", "materialize", "narrowed",
           "output_digest",
           "plan_derived", "writer_version"]

FORMAT = 1  # bump when what an object holds changes meaning


def writer_version() -> str:
    """The Parquet writer behind the objects' bytes (part of every key). Read from the
    installed distribution's metadata: importing pyarrow here would delay starting the process
    that runs transforms by that import (it is imported while that process works); its
    metadata reader is imported here, not with the module: that process imports the module
    but never asks."""
    import importlib.metadata  # deferred: the transforms' process imports this module

    try:
        return f"pyarrow {importlib.metadata.version('pyarrow')}"
    except importlib.metadata.PackageNotFoundError:  # no metadata (a vendored copy)
        import pyarrow  # deferred: the lock's start-up path imports this module

        return f"pyarrow {pyarrow.__version__}"


@dataclass(frozen=True)
class Pinned:
    """What the lock pins of an input: its digest and (partitioned) its manifest."""

    digest: str
    manifest: Manifest | None = None


@dataclass(frozen=True)
class OutputMeta:
    digest: str
    size: int
    rows: int
    withheld: int  # aggregation rows dropped below the minimum group size
    mtime_ns: int
    inode: int


@dataclass(frozen=True)
class OutputFile:
    """One output file to have: where it goes in the dataset, and the object it is."""

    path: str  # relative to the dataset's directory; "" for a single-file dataset
    key: str
    input_path: str  # the first input's file (relative to its uri; "" for a single file)
    input_digest: str
    values: tuple[tuple[str, str | None], ...]  # partition values from the path


@dataclass
class DerivedPlan:
    name: str
    ds: Dataset
    code: dict[str, str]  # code file -> digest
    inputs: dict[str, str]  # input dataset -> digest
    files: list[OutputFile]
    partitions: tuple[str, ...]
    reads: dict[str, str | None] = field(default_factory=dict)
    """Repository files the code read when it last ran (not modules) -> digest now."""

    @property
    def partitioned(self) -> bool:
        return self.ds.partitioned

    def record(self) -> dict[str, Any]:
        """The lock's `derived` record."""
        assert self.ds.source is not None
        record = {"transform": self.ds.source.transform,
                  "code": dict(sorted(self.code.items())),
                  "inputs": dict(sorted(self.inputs.items())), "writer": writer_version()}
        if self.reads:  # only then: a lock of code that reads no file stays as it was
            record["files_read"] = dict(sorted(self.reads.items()))
        return record


class DerivedStore:
    """The objects of every derived dataset of a repository (under its data's state dir)."""

    def __init__(self, project: Project):
        self.root = project.data_state_dir / "derived" / "objects"
        self.scratch = scratch_dir(project.data_state_dir)
        self._seen: dict[str, OutputMeta] = {}
        """Each record this store read, checked or wrote: asked again (the layout after the
        run asks for every file the plan asked for before it), an object whose stat still
        matches is not read and parsed a second time."""

    def path(self, key: str) -> Path:
        hexkey = key.split(":", 1)[1]
        return self.root / hexkey[:2] / f"{hexkey}.parquet"

    def get(self, key: str) -> OutputMeta | None:
        """The object's record, if the object is there and untouched since it was stored.
        The object is stat'ed at every call; its record is read once per store unless that
        stat no longer matches it."""
        path = self.path(key)
        seen = self._seen.get(key)
        if seen is not None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            if (st.st_size, st.st_mtime_ns, st.st_ino) == (seen.size, seen.mtime_ns,
                                                           seen.inode):
                return seen
        try:
            meta = OutputMeta(**json.loads(path.with_suffix(".json").read_text()))
            st = os.stat(path)
        except (OSError, ValueError, TypeError):
            return None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (meta.size, meta.mtime_ns, meta.inode):
            return self._recheck(key, path, meta)
        self._seen[key] = meta
        return meta

    def _recheck(self, key: str, path: Path, meta: OutputMeta) -> OutputMeta | None:
        """An object whose stat changed (a restored cache, a copied checkout) is kept when
        its bytes still hash to its record: hashing an output costs far less than making it."""
        try:
            value = compute_digest(Location(str(path), str(path), str(path), path), "parquet",
                                   "sha256")
            st = os.stat(path)
        except (OSError, ValueError):  # gone, or not Parquet any more (ArrowInvalid)
            return None
        if (value.digest, value.size, value.rows) != (meta.digest, meta.size, meta.rows):
            return None
        fresh = OutputMeta(meta.digest, meta.size, meta.rows, meta.withheld, st.st_mtime_ns,
                           st.st_ino)
        _record(path, fresh, self.scratch)
        self._seen[key] = fresh
        return fresh

    def put(self, key: str, source: Path, withheld: int) -> OutputMeta:
        """Move a freshly written output into the store (same filesystem) and record it."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        value = output_digest(source)
        os.chmod(source, 0o444)  # an object is never edited: a hard link shares its bytes
        os.replace(source, path)
        st = os.stat(path)
        meta = OutputMeta(value.digest, value.size, value.rows, withheld, st.st_mtime_ns,
                          st.st_ino)
        _record(path, meta, self.scratch)
        self._seen[key] = meta
        return meta

    def stage(self, key: str, data: bytes, path: Path, withheld: int) -> Staged | None:
        """The build's own copy of object `key`'s bytes at `path` (a new file in a directory
        of this build's scratch, out of the transform's reach), hashed from `data` itself: the
        object `commit` stores is the bytes its digest was computed from, whatever the
        transform does to its own file afterwards. None when `data` is not a Parquet file this
        parser reads (the output is then stored by `put`). The object's directory is made
        here, while the transform runs (a new directory costs a fresh store about a
        millisecond under load)."""
        value = bytes_digest(data)
        if value is None:
            return None
        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o444)  # as `put`: an object is never edited
            st = os.fstat(fd)
        finally:
            os.close(fd)
        meta = OutputMeta(value.digest, value.size, value.rows, withheld, st.st_mtime_ns,
                          st.st_ino)
        record = path.with_suffix(".json")  # a rename puts it beside its object
        record.write_text(json.dumps(asdict(meta), sort_keys=True))
        return Staged(path, meta)

    def commit(self, key: str, staged: Staged, withheld: int) -> OutputMeta:
        """Store an output `stage` copied: two renames (a rename keeps the inode and mtime
        its record holds), the object before its record, as `put`."""
        path = self.path(key)
        try:
            os.replace(staged.path, path)
        except FileNotFoundError:  # its directory is not there yet (`stage` makes it)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.path, path)
        if withheld == staged.meta.withheld:
            os.replace(staged.path.with_suffix(".json"), path.with_suffix(".json"))
            self._seen[key] = staged.meta
            return staged.meta
        meta = OutputMeta(**{**asdict(staged.meta), "withheld": withheld})
        _record(path, meta, self.scratch)
        self._seen[key] = meta
        return meta

    def alias(self, key: str, other: str) -> OutputMeta | None:
        """Store object `key` under key `other` too (a hard link: the same bytes, inode and
        record), or None when `key` is not stored. The build keys what a run made by the files
        its code read only once it ran (`compile.derive`)."""
        meta = self.get(key)
        if meta is None:
            return None
        if self.get(other) is not None:
            return meta
        target = self.path(other)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.link(self.path(key), tmp)
        os.replace(tmp, target)
        _record(target, meta, self.scratch)
        self._seen[other] = meta
        return meta


@dataclass(frozen=True)
class Staged:
    """An output copied by the build into its scratch, with the record it is stored with."""

    path: Path
    meta: OutputMeta


SMALL_OUTPUT = 1 << 20
"""Outputs up to this size are read once, whole, to hash them and count their rows."""


def output_digest(path: Path) -> ContentDigest:
    """`compute_digest(path, "parquet", "sha256")`, the same value: a small output (most are:
    a transform's per-file result) is read once and its footer parsed from those bytes,
    without the footer thread a large file's hash overlaps (a thread per file cost a full
    build of 100 outputs a tenth of a second)."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(SMALL_OUTPUT + 1) if size <= SMALL_OUTPUT else b""
    if len(data) == size and size <= SMALL_OUTPUT:
        value = bytes_digest(data)
        if value is not None:
            return value
    return compute_digest(Location(str(path), str(path), str(path), path), "parquet", "sha256")


def bytes_digest(data: bytes) -> ContentDigest | None:
    """`compute_digest`'s value for a Parquet file whose bytes are `data`; None when its footer
    is not what `footer_rows` reads (pyarrow then counts the rows)."""
    rows = footer_rows(lambda offset, n: data[offset:offset + n], len(data))
    if rows is None:
        return None
    return ContentDigest(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), rows)


def _record(path: Path, meta: OutputMeta, scratch: Path) -> None:
    """The object's record, not synced to disk: an empty or lost record (a machine that lost
    power) is a miss for `get`, and a record that outlived its object fails the stat check.
    Written through the scratch directory, which every derived build sweeps: a build killed
    mid-write leaves nothing among the objects."""
    atomic_write_text(path.with_suffix(".json"), json.dumps(asdict(meta), sort_keys=True),
                      durable=False, scratch=scratch)


def narrowed(env: Environment, inputs: list[str]) -> Environment:
    """The environment user code sees: only `inputs`, no label or label sets, its restricted
    datasets named explicitly (what a derived input inherits included)."""
    restricted = sorted(n for n in inputs if env.restricted(n))
    return env.model_copy(update={
        "datasets": {n: env.datasets[n] for n in inputs}, "labels": {}, "label": None,
        "evaluation": type(env.evaluation)(),  # the default (its class: no pydantic import)
        "privacy": env.privacy.model_copy(update={"restricted": restricted})})


def code_record(project: Project, ds: Dataset) -> dict[str, str]:
    """The transform's module and the repository modules it imports, by digest."""
    assert ds.source is not None
    return code_files(project, ds.source.module_path)


def declared_files(project: Project, env: Environment, name: str, code: Iterable[str]
                   ) -> list[str]:
    """The files derived dataset `name` declares it reads (`source.files`' matches), but
    modules of `code`, data and state (`read_files.pinnable`)."""
    source = env.datasets[name].source
    assert source is not None
    if not source.files:
        return []
    return pinnable(project, env, code, declared(project.root, source.files)[0])


def plan_derived(project: Project, env: Environment, name: str,
                 inputs: Mapping[str, Pinned], reads: Iterable[str] = ()) -> DerivedPlan:
    """The output files of derived dataset `name`, given its inputs' pins and the repository
    files (`reads`, besides modules) its code read when it last ran: their digests now are
    part of every output's key, so that a changed file rebuilds like changed code."""
    ds = env.datasets[name]
    source = ds.source
    assert source is not None
    code = code_record(project, ds)
    read = file_digests(project.root, {*reads, *declared_files(project, env, name, code)})
    first = inputs[source.inputs[0]]
    others = {i: inputs[i].digest for i in source.inputs[1:]}
    aggregation = None
    if source.aggregation is not None:
        aggregation = [source.aggregation.count,
                       source.aggregation.min_group_size or env.privacy.min_group_size]
    partitions = tuple(ds.partition_columns)
    common = {"derived": FORMAT, "transform": source.transform, "code": digest_json(code),
              "columns": [[c, col.dtype] for c, col in ds.columns.items()],
              "partitions": list(partitions), "aggregation": aggregation, "others": others,
              "writer": writer_version()}
    if read:  # absent otherwise: the keys of code that reads no file are as they were
        common["files_read"] = read
    sources = ([(f.path, f.digest) for f in first.manifest.files]
               if first.manifest is not None else [("", first.digest)])
    files = []
    for path, digest in sources:
        values = tuple(partition_values(path, partitions).items()) if path else ()
        key = digest_json({**common, "input": digest, "path": path})
        files.append(OutputFile(path if ds.partitioned else "", key, path, digest, values))
    return DerivedPlan(name, ds, code, {i: inputs[i].digest for i in source.inputs}, files,
                       partitions, read)


def materialize(project: Project, plan: DerivedPlan, store: DerivedStore
                ) -> tuple[ContentDigest, Manifest | None, int]:
    """Lay the dataset's uri out as links to its objects (every one must be stored) and
    return its digest (a partitioned dataset's: its manifest's) and the aggregate rows its
    objects withheld."""
    metas = {f.path: store.get(f.key) for f in plan.files}
    missing = [p for p, m in metas.items() if m is None]
    if missing:
        raise FileNotFoundError(f"derived dataset '{plan.name}': outputs not built: "
                                f"{', '.join(missing[:3])}")
    withheld = sum(m.withheld for m in metas.values() if m is not None)
    final = locate(plan.ds.uri, project).local
    assert final is not None  # derived datasets live under the state dir
    if not plan.partitioned:
        meta = metas[""]
        assert meta is not None
        if not _linked(final, store.path(plan.files[0].key)):
            _link_file(store.path(plan.files[0].key), final)
        return ContentDigest(meta.digest, meta.size, meta.rows), None, withheld
    entries = []
    for f in plan.files:
        meta = metas[f.path]
        assert meta is not None
        entries.append(FileEntry(f.path, meta.size, meta.digest, meta.rows))
    manifest = Manifest(tuple(entries), plan.partitions)
    unlinked = [f for f in plan.files if not _linked(final / f.path, store.path(f.key))]
    if (unlinked or _extra_files(final, {f.path for f in plan.files})) \
            and not (len(unlinked) == 1 and _replace_one(final, plan, unlinked[0], store)):
        with atomic_dir(final, store.scratch) as tmp:
            for f in plan.files:
                target = tmp.joinpath(*f.path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                _place(store.path(f.key), target)
    return ContentDigest(manifest.digest, manifest.size, manifest.rows), manifest, withheld


def _replace_one(final: Path, plan: DerivedPlan, changed: OutputFile, store: DerivedStore
                 ) -> bool:
    """Lay out a dataset that differs from `final` in one file only (a new or changed day
    of input) by renaming that one link into place: a reader sees the old files or the new
    ones, as with the whole directory swapped, without rebuilding it. False (nothing done)
    when `final` holds any other difference, or the scratch directory is on another
    filesystem."""
    target = final.joinpath(*changed.path.split("/"))
    obj = store.path(changed.key)
    if not final.is_dir():
        return False
    store.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    if store.scratch.stat().st_dev != final.stat().st_dev:
        return False
    sweep(store.scratch)
    with dir_mutex(final.parent):  # as `install_dir`: one layout at a time
        wanted = {f.path for f in plan.files}
        found = _files(final)
        if found - wanted or wanted - found - {changed.path} or any(
                not _linked(final.joinpath(*f.path.split("/")), store.path(f.key))
                for f in plan.files if f is not changed):
            return False
        tmp = owned_temp_dir(store.scratch, "derived-file")
        try:
            _place(obj, tmp / "file")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / "file", target)
            tmp.rmdir()  # empty now: cheaper than a tree walk
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _files(final: Path) -> set[str]:
    """The files under `final`, relative, with `/` (a walk of the tree: one scandir per
    directory, no stat per entry beyond its type)."""
    found: set[str] = set()
    for top, _dirs, names in os.walk(final):
        rel = os.path.relpath(top, final)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(prefix + n for n in names)
    return found


def _linked(path: Path, obj: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.stat(obj).st_ino
    except OSError:
        return False


def _extra_files(final: Path, wanted: set[str]) -> bool:
    if not final.is_dir():
        return True
    return _files(final) != wanted


def _place(obj: Path, target: Path) -> None:
    """A hard link to the object (a copy across filesystems)."""
    try:
        os.link(obj, target)
    except OSError:
        shutil.copyfile(obj, target)


def _link_file(obj: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    _place(obj, tmp)
    os.replace(tmp, final)


def derived_staleness(project: Project, res: Resolved, name: str, pinned: Any,
                      current: Mapping[str, Pinned], locked: Mapping[str, Any]
                      ) -> list[Diagnostic]:
    """Why derived dataset `name` is no longer what the lock pins: BE092 naming the code
    files that changed, BE093 naming the inputs (and their files) that changed. `pinned` is
    its lock entry, `current` the inputs' digests now, `locked` the lock's entries."""
    ds = res.env.datasets[name]
    assert ds.source is not None
    record = pinned.derived or {}
    hint = (f"run `buildenv lock {res.name}` to rebuild it (only the files whose inputs or "
            "code changed run again)",)
    problems = []
    if record.get("transform") != ds.source.transform:
        problems.append(res.diag("BE092", f"dataset '{name}': its transform is now "
                                 f"{ds.source.transform}, the lock has "
                                 f"{record.get('transform')}", "datasets", name, "source",
                                 "transform", hints=hint))
    else:
        now = code_record(project, ds)
        was = record.get("code") or {}
        changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
        if changed:
            problems.append(res.diag(
                "BE092", f"dataset '{name}' is stale: its transform's code changed since it was "
                f"locked ({', '.join(changed)})", "datasets", name, "source", "transform",
                hints=hint))
        was_read = recorded_reads(record)
        read = changes(project.root, was_read) + [
            f"code file {p} now exists" for p in declared_files(project, res.env, name, now)
            if p not in was_read]
        if read:
            problems.append(res.diag(
                "BE092", f"dataset '{name}' is stale: {', '.join(read)} since it was locked "
                "(its transform read it)", "datasets", name, "source", "transform",
                hints=hint))
    for other, digest in sorted((record.get("inputs") or {}).items()):
        now_pin = current.get(other)
        if now_pin is None or now_pin.digest == digest:
            continue
        was_pin = locked.get(other)
        what = ""
        if was_pin is not None and was_pin.digest == digest and was_pin.manifest is not None \
                and now_pin.manifest is not None:
            what = f": {describe_diff(*was_pin.manifest.diff(now_pin.manifest))}"
        problems.append(res.diag(
            "BE093", f"dataset '{name}' is stale: its input '{other}' changed since it was "
            f"derived{what}", "datasets", name, "source", "inputs", hints=hint))
    inputs = set(ds.source.inputs)
    if set(record.get("inputs") or {}) != inputs:
        problems.append(res.diag("BE093", f"dataset '{name}' now reads {sorted(inputs)}, the "
                                 f"lock derived it from {sorted(record.get('inputs') or {})}",
                                 "datasets", name, "source", "inputs", hints=hint))
    return problems
