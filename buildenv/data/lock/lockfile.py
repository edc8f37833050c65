"""The lock file (SPEC §3): `environments/<name>.lock.json` pins each dataset by content.

Intent (the YAML) and lock are separate files, as in dvc.yaml / dvc.lock. The
lock holds, per dataset, the uri as declared, its format, content digest, size
and row count, plus the digest of the resolved environment. A partitioned
dataset (uri ending in `/`) also holds its manifest (`files`: path, size, digest
and rows of every file; `partitions`), and its digest is the manifest's
(`manifest.py`). It is written atomically and carries `lock_version`; a newer
major is refused, older ones are upgraded by small dict -> dict functions in
`LOCK_UPGRADES`. Version 2 added manifests; version 3 versions that are not plain files: table
versions (`table`: the Delta version or Iceberg snapshot, its schema and base, with a manifest
of the version's data files carrying their partition values), DVC pins (`dvc`), and sources
that are code -- a derived dataset's `derived` record (its transform, the digests of its code
files and inputs) and a computed label set's `source` record (its functions' digests, the
data's, the label model's). Version 4 withholds the exact size and counts of what user code
computed from restricted data (`counts_withheld`, `RESTRICTED_OUTPUT`): null, pinned by digest;
a partitioned output's manifest withholds each file's size and rows too (null; its digest is over
the files' paths and digests, `manifest.py`), and only such an entry may hold a null count.
A lock is written with the lowest version that holds it -- without withheld entries as version
3, without any of those as version 2, without a partitioned dataset as version 1 -- byte for
byte as before, so older buildenvs keep reading it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.data.lock.digests import StatCache
from buildenv.data.lock.manifest import (
    FileEntry,
    Manifest,
)

if TYPE_CHECKING:  # the quick lock (`quick.py`) writes locks: keep pydantic out of this module
    from buildenv.core.project import Project

__all__ = ["LOCK_UPGRADES", "LOCK_VERSION", "RESTRICTED_OUTPUT", "Lock", "LockedDataset",
           "LockedLabels", "lock_path",
           "read_lock", "stat_cache", "stat_cache_path"]

LOCK_VERSION = 4


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 only adds manifests: a version 1 lock is a version 2 lock of single files."""
    return {**data, "lock_version": 2}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Version 3 only adds table versions, DVC pins, derived datasets and computed label sets:
    a version 2 lock has none of them."""
    return {**data, "lock_version": 3}


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Version 4 only adds entries that withhold their counts (`counts_withheld`): a version 3
    lock has none; the next lock rewrites its entries of restricted outputs without them."""
    return {**data, "lock_version": 4}


LOCK_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2,
                                                                       2: _v2_to_v3,
                                                                       3: _v3_to_v4}


RESTRICTED_OUTPUT = "computed by user code over restricted data"
"""The `counts_withheld` reason of a lock entry whose exact counts and size are not written:
a derived dataset's restricted output, a label set computed by labeling functions over a
restricted dataset. A designer who changes the code and relocks would otherwise read from the
lock whether a planted row passed their code (a differencing channel); the entry pins the output
by digest alone (docs/privacy.md)."""


def _count(entry: dict[str, Any], key: str, withheld: object) -> int | None:
    """A count of a lock entry: None only where the entry says it is withheld."""
    value = entry[key]
    if value is None and withheld is not None:
        return None
    return int(value)


@dataclass(frozen=True)
class LockedDataset:
    uri: str
    format: str
    digest: str
    size: int | None  # None: withheld (`counts_withheld`)
    rows: int | None
    manifest: Manifest | None = None  # partitioned datasets and tables: every file, pinned
    table: dict[str, Any] | None = None  # a table's version (TableVersion.record()): version, schema, base
    dvc: dict[str, Any] | None = None  # a DVC pin: the .dvc file, its md5
    derived: dict[str, Any] | None = None  # a derived dataset: transform, code and input digests
    # why size and rows are None: the output of user code over restricted data (`withheld`)
    counts_withheld: str | None = None

    def manifests_for(self, name: str) -> dict[str, Manifest]:
        """`{name: manifest}` for a gate's `manifests` (a directory's or table's files are
        verified one by one against it), `{}` for a single file."""
        return {name: self.manifest} if self.manifest is not None else {}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"uri": self.uri, "format": self.format, "digest": self.digest,
                                "size": self.size, "rows": self.rows}
        if self.counts_withheld is not None:
            data["counts_withheld"] = self.counts_withheld
        if self.manifest is not None:
            data["partitions"] = list(self.manifest.partitions)
            data["files"] = self.manifest.files_json()
        if self.table is not None:
            data["table"] = self.table
        if self.dvc is not None:
            data["dvc"] = self.dvc
        if self.derived is not None:
            data["derived"] = self.derived
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockedDataset:
        manifest = None
        table = data.get("table")
        if table is not None and not isinstance(table, dict):
            raise ValueError(f"the table record of '{data['uri']}' is not an object")
        withheld = data.get("counts_withheld")
        if "files" in data:
            manifest = Manifest(tuple(FileEntry.from_json(f, withheld is not None)
                                      for f in data["files"]),
                                tuple(data.get("partitions") or ()),
                                str(table["base"]) if table is not None else None,
                                withheld is not None)
            if manifest.digest != data["digest"]:
                raise ValueError(f"the manifest of '{data['uri']}' does not match its digest")
        dvc = data.get("dvc")
        derived = data.get("derived")
        if derived is not None and not isinstance(derived, dict):
            raise ValueError(f"the derived record of '{data['uri']}' is not an object")
        return cls(data["uri"], data["format"], data["digest"], _count(data, "size", withheld),
                   _count(data, "rows", withheld), manifest, table,
                   dvc if isinstance(dvc, dict) else None, derived,
                   str(withheld) if withheld is not None else None)

    @property
    def version_label(self) -> str | None:
        """'version 7' / 'snapshot 123 (ref exp)' for a table, else None."""
        if self.table is None:
            return None
        if "version" in self.table:
            return f"version {self.table['version']}"
        ref = self.table.get("ref")
        return f"snapshot {self.table.get('snapshot')}" + (f" (ref {ref})" if ref else "")

    @property
    def pin(self) -> str | Manifest:
        """What a read of this version is verified against: the manifest of a partitioned
        dataset (each file's digest), else the file's digest."""
        return self.manifest if self.manifest is not None else self.digest


@dataclass(frozen=True)
class LockedLabels:
    """A label set pinned like data: its export's digest and counts, what it was declared as,
    and the digests of the mapping files its reuse entries name."""

    uri: str
    format: str
    digest: str
    size: int | None  # None (the four counts): withheld, `counts_withheld` says why
    examples: int | None  # keys with at least one (not cancelled) annotation
    annotations: int | None
    annotators: int | None
    taxonomy: dict[str, Any]  # {"name": ..., "version": ...}
    ui_version: str | None
    declaration: str  # digest of the label set's declaration: a change means relock
    mappings: dict[str, str] = field(default_factory=dict)  # mapping uri -> digest
    source: dict[str, Any] | None = None  # computed labels: functions, data and model digests
    counts_withheld: str | None = None  # computed over restricted data (`withheld`)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "format": self.format, "digest": self.digest,
               "size": self.size, "examples": self.examples,
               "annotations": self.annotations, "annotators": self.annotators,
               "taxonomy": self.taxonomy, "ui_version": self.ui_version,
               "declaration": self.declaration, "mappings": dict(sorted(self.mappings.items()))}
        if self.source is not None:
            out["source"] = self.source
        if self.counts_withheld is not None:
            out["counts_withheld"] = self.counts_withheld
        return out

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> LockedLabels:
        source = v.get("source")
        if source is not None and not isinstance(source, dict):
            raise ValueError(f"the source record of label set '{v['uri']}' is not an object")
        withheld = v.get("counts_withheld")
        return cls(v["uri"], v["format"], v["digest"], _count(v, "size", withheld),
                   _count(v, "examples", withheld), _count(v, "annotations", withheld),
                   _count(v, "annotators", withheld), dict(v["taxonomy"]),
                   v.get("ui_version"), v["declaration"], dict(v.get("mappings") or {}),
                   source, str(withheld) if withheld is not None else None)

    def pins(self) -> dict[str, Any]:
        """What the training and evaluation verify their reads against."""
        return {"digest": self.digest, "mappings": dict(self.mappings)}


@dataclass(frozen=True)
class Lock:
    environment: str
    environment_digest: str
    datasets: dict[str, LockedDataset]
    labels: dict[str, LockedLabels] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        code = any(d.derived is not None for d in self.datasets.values()) or any(
            e.source is not None for e in self.labels.values())
        versioned = code or any(d.table is not None or d.dvc is not None
                                for d in self.datasets.values())
        partitioned = any(d.manifest is not None for d in self.datasets.values())
        # withheld counts are null: a buildenv that reads version 3 would call the lock broken
        withheld = any(d.counts_withheld is not None for d in self.datasets.values()) or any(
            e.counts_withheld is not None for e in self.labels.values())
        out = {
            "lock_version": 4 if withheld else 3 if versioned else 2 if partitioned else 1,
            "environment": self.environment,
            "environment_digest": self.environment_digest,
            "datasets": {k: v.to_json() for k, v in sorted(self.datasets.items())},
        }
        if self.labels:  # absent when there are none: older locks keep their bytes
            out["labels"] = {k: v.to_json() for k, v in sorted(self.labels.items())}
        return out

    def label_pins(self) -> dict[str, dict[str, Any]]:
        return {name: entry.pins() for name, entry in sorted(self.labels.items())}

    def pins(self) -> dict[str, str]:
        return {name: d.digest for name, d in self.datasets.items()}

    def manifests(self) -> dict[str, Manifest]:
        return {name: d.manifest for name, d in self.datasets.items() if d.manifest is not None}

    def render(self) -> str:
        """Indented JSON; a manifest's files one per line (a relock's diff is the lines of the
        files that changed, and a year of files renders in a millisecond)."""
        data = self.to_json()
        files = {}
        for name, entry in data["datasets"].items():
            if "files" in entry:
                files[name] = entry["files"]
                entry["files"] = f"\0files:{name}\0"
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        for name, entries in files.items():
            rows = ",\n".join("        " + _file_line(f) for f in entries)
            text = text.replace(json.dumps(f"\0files:{name}\0"),
                                "[\n" + rows + "\n      ]" if entries else "[]")
        return text


# one encoder for every file line of a manifest (`json.dumps` with options builds one per call)
_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_STRING = json.encoder.encode_basestring  # a str as `_ENCODE` writes it (ensure_ascii off)


def _file_line(entry: dict[str, Any]) -> str:
    """One manifest file as `_ENCODE` writes it; the common entry (path, size, digest, rows)
    formatted directly: the encoder's per-call set-up was most of rendering a year of files."""
    if len(entry) == 4 and type(entry.get("path")) is str and \
            type(entry.get("digest")) is str and type(entry.get("rows")) is int and \
            type(entry.get("size")) is int:
        return (f'{{"digest": {_STRING(entry["digest"])}, "path": {_STRING(entry["path"])}, '
                f'"rows": {entry["rows"]}, "size": {entry["size"]}}}')
    return _ENCODE(entry)


def lock_path(project: Project, name: str) -> Path:
    return project.environments_dir / f"{name}.lock.json"


def stat_cache(project: Project) -> StatCache:
    return StatCache(stat_cache_path(project))


def stat_cache_path(project: Project) -> Path:
    """Where the stat cache is saved (at the end of every lock that hashed a file anew)."""
    return project.state_dir / "statcache.json"


def read_lock(project: Project, name: str) -> Lock | None:
    """The lock, None when absent; DiagnosticError(BE054/BE013) when unreadable."""
    path = lock_path(project, name)
    display = project.rel(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("lock_version")
        if not isinstance(version, int):
            raise ValueError("no lock_version")
        if version > LOCK_VERSION:
            raise DiagnosticError([Diagnostic(
                "BE013", f"lock_version {version} is newer than this buildenv supports "
                f"({LOCK_VERSION})", display, hints=("upgrade buildenv",))], 2)
        while version < LOCK_VERSION:
            if version not in LOCK_UPGRADES:
                raise DiagnosticError([Diagnostic(
                    "BE013", f"lock_version {version} is not supported (this buildenv reads "
                    f"{LOCK_VERSION})", display, hints=(f"run `buildenv lock {name}`",))], 2)
            data = LOCK_UPGRADES[version](data)
            version = data["lock_version"]
        return Lock(
            environment=data["environment"],
            environment_digest=data["environment_digest"],
            datasets={k: LockedDataset.from_json(v) for k, v in data["datasets"].items()},
            labels={k: LockedLabels.from_json(v) for k, v in (data.get("labels") or {}).items()},
        )
    except DiagnosticError:
        raise
    except KeyError as exc:
        raise DiagnosticError([Diagnostic(
            "BE054", f"invalid lock file: missing key {exc}", display,
            hints=(f"delete it and run `buildenv lock {name}`",))], 2) from None
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DiagnosticError([Diagnostic(
            "BE054", f"invalid lock file: {exc}", display,
            hints=(f"delete it and run `buildenv lock {name}`",))], 2) from None


