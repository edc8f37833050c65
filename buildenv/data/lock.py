"""Locks (SPEC §3): `environments/<name>.lock.json` pins each dataset by content.

Intent (the YAML) and lock are separate files, as in dvc.yaml / dvc.lock. The
lock holds, per dataset, the uri as declared, its format, content digest, size
and row count, plus the digest of the resolved environment. A partitioned
dataset (uri ending in `/`) also holds its manifest (`files`: path, size, digest
and rows of every file; `partitions`), and its digest is the manifest's
(`manifest.py`). It is written atomically and carries `lock_version`; a newer
major is refused, older ones are upgraded by small dict -> dict functions in
`LOCK_UPGRADES`. Version 2 added manifests; a lock without a partitioned dataset
is still written as version 1, byte for byte as before, so older buildenvs keep
reading it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.data.digests import ContentDigest, StatCache, digest_location
from buildenv.data.executor import Executor
from buildenv.data.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    describe_diff,
    digest_partitioned,
)
from buildenv.data.provenance import provenance_problems
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved

__all__ = ["LOCK_VERSION", "LabelLocker", "Lock", "LockedDataset", "LockedLabels", "check_lock",
           "digest_dataset", "label_declaration", "lock_environments", "lock_path",
           "read_lock"]

LOCK_VERSION = 2


def _v1_to_v2(data: dict) -> dict:
    """Version 2 only adds manifests: a version 1 lock is a version 2 lock of single files."""
    return {**data, "lock_version": 2}


LOCK_UPGRADES: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}


@dataclass(frozen=True)
class LockedDataset:
    uri: str
    format: str
    digest: str
    size: int
    rows: int
    manifest: Manifest | None = None  # partitioned datasets: every file, pinned

    def to_json(self) -> dict:
        data = {"uri": self.uri, "format": self.format, "digest": self.digest,
                "size": self.size, "rows": self.rows}
        if self.manifest is not None:
            data["partitions"] = list(self.manifest.partitions)
            data["files"] = self.manifest.files_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> LockedDataset:
        manifest = None
        if "files" in data:
            manifest = Manifest(tuple(FileEntry.from_json(f) for f in data["files"]),
                                tuple(data.get("partitions") or ()))
            if manifest.digest != data["digest"]:
                raise ValueError(f"the manifest of '{data['uri']}' does not match its digest")
        return cls(data["uri"], data["format"], data["digest"], int(data["size"]),
                   int(data["rows"]), manifest)

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
    size: int
    examples: int  # keys with at least one (not cancelled) annotation
    annotations: int
    annotators: int
    taxonomy: dict  # {"name": ..., "version": ...}
    ui_version: str | None
    declaration: str  # digest of the label set's declaration: a change means relock
    mappings: dict[str, str] = field(default_factory=dict)  # mapping uri -> digest

    def to_json(self) -> dict:
        return {"uri": self.uri, "format": self.format, "digest": self.digest,
                "size": self.size, "examples": self.examples,
                "annotations": self.annotations, "annotators": self.annotators,
                "taxonomy": self.taxonomy, "ui_version": self.ui_version,
                "declaration": self.declaration, "mappings": dict(sorted(self.mappings.items()))}

    @classmethod
    def from_json(cls, v: dict) -> LockedLabels:
        return cls(v["uri"], v["format"], v["digest"], int(v["size"]), int(v["examples"]),
                   int(v["annotations"]), int(v["annotators"]), dict(v["taxonomy"]),
                   v.get("ui_version"), v["declaration"], dict(v.get("mappings") or {}))

    def pins(self) -> dict:
        """What the training and evaluation verify their reads against."""
        return {"digest": self.digest, "mappings": dict(self.mappings)}


@dataclass(frozen=True)
class Lock:
    environment: str
    environment_digest: str
    datasets: dict[str, LockedDataset]
    labels: dict[str, LockedLabels] = field(default_factory=dict)

    def to_json(self) -> dict:
        partitioned = any(d.manifest is not None for d in self.datasets.values())
        out = {
            "lock_version": LOCK_VERSION if partitioned else 1,
            "environment": self.environment,
            "environment_digest": self.environment_digest,
            "datasets": {k: v.to_json() for k, v in sorted(self.datasets.items())},
        }
        if self.labels:  # absent when there are none: older locks keep their bytes
            out["labels"] = {k: v.to_json() for k, v in sorted(self.labels.items())}
        return out

    def label_pins(self) -> dict[str, dict]:
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
            rows = ",\n".join("        " + json.dumps(f, sort_keys=True, ensure_ascii=False)
                              for f in entries)
            text = text.replace(json.dumps(f"\0files:{name}\0"),
                                "[\n" + rows + "\n      ]" if entries else "[]")
        return text


def lock_path(project: Project, name: str) -> Path:
    return project.environments_dir / f"{name}.lock.json"


def stat_cache(project: Project) -> StatCache:
    return StatCache(project.state_dir / "statcache.json")


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
    if not uri.endswith("/"):
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
            errors[item] = [("BE053", text if item[0].endswith("/")
                             else f"cannot read '{uri}': {text}")]

    workers = max(1, min(len(wanted), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, sorted(wanted)))
    return results, errors


def _key(ds: Any) -> DatasetKey:
    return (ds.uri, ds.format, tuple(ds.partition_columns) if ds.partitioned else ())


#: Pins an environment's label sets (buildenv.labels.locking.lock_label_sets): it reads and
#: counts the exports, which the data room cannot do. Arguments: the multiverse, the resolved
#: environment, the previous lock (or None), the algorithm and the stat cache.
LabelLocker = Callable[..., tuple[dict[str, "LockedLabels"], list[Diagnostic]]]


def label_declaration(spec) -> str:
    """Digest of what determines a label set's lock entry (all but its description)."""
    from buildenv.core.canonical import digest_json

    return digest_json(spec.model_dump(mode="json", exclude={"description"}))


def lock_environments(multiverse: Multiverse, names: list[str], algorithm: str = "sha256",
                      label_locker: LabelLocker | None = None,
                      executor: Executor | None = None,
                      ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment; returns (name, lock, changed) and the problems found. An
    environment with label sets needs `label_locker`; `executor` hashes the files of
    partitioned datasets."""
    project = multiverse.project
    resolved, problems = multiverse.resolve_all(names)
    wanted = {_key(ds) for res in resolved.values() for ds in res.env.datasets.values()}
    if executor is not None and any(uri.endswith("/") for uri, _, _ in wanted):
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
            if label_locker is None:
                problems.append(res.diag("BE057", f"environment '{name}' declares label sets, "
                                         "which this caller cannot lock", "labels",
                                         hints=(f"run `buildenv lock {name}`",)))
                continue
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
            found = digests[_key(ds)]
            datasets[ds_name] = LockedDataset(ds.uri, ds.format, found.value.digest,
                                              found.value.size, found.value.rows,
                                              found.manifest)
        lock = Lock(name, res.digest, datasets, labels)
        path = lock_path(project, name)
        text = lock.render()
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write_text(path, text)
        out.append((name, lock, changed))
    cache.save()
    return out, problems


def check_lock(multiverse: Multiverse, res: Resolved, verify_data: bool = True,
               cache: StatCache | None = None, executor: Executor | None = None
               ) -> tuple[Lock | None, list[Diagnostic]]:
    """The lock if it pins exactly this environment's data, else diagnostics saying what to run."""
    project = multiverse.project
    name = res.name
    lock = read_lock(project, name)
    display = project.rel(lock_path(project, name))
    if lock is None:
        return None, [res.diag("BE050", f"environment '{name}' has no lock ({display})", "name",
                               hints=(f"run `buildenv lock {name}`",))]
    problems: list[Diagnostic] = []
    for ds_name, ds in res.env.datasets.items():
        pinned = lock.datasets.get(ds_name)
        partitions = tuple(pinned.manifest.partitions) if pinned and pinned.manifest else ()
        if (pinned is None or pinned.uri != ds.uri or pinned.format != ds.format
                or (ds.partitioned and partitions != tuple(ds.partition_columns))):
            what = ("is not in the lock" if pinned is None else
                    f"uri changed: lock has '{pinned.uri}', environment has '{ds.uri}'"
                    if pinned.uri != ds.uri or pinned.format != ds.format else
                    f"partitions changed: lock has {list(partitions)}, environment has "
                    f"{ds.partition_columns}")
            problems.append(res.diag("BE052", f"dataset '{ds_name}' {what}", "datasets",
                                     ds_name, "uri", hints=(f"run `buildenv lock {name}`",)))
    for ds_name in sorted(set(lock.datasets) - set(res.env.datasets)):
        problems.append(Diagnostic("BE052", f"lock pins dataset '{ds_name}', which environment "
                                   f"'{name}' no longer declares", display,
                                   hints=(f"run `buildenv lock {name}`",)))
    problems.extend(_label_pins_stale(res, lock, display))
    if not problems and lock.environment_digest != res.digest:
        # The data pins still hold; only the recorded environment digest is old (columns,
        # serving or monitoring changed). Builds proceed; `lock` refreshes the record.
        problems.append(Diagnostic(
            "BE052", f"lock of '{name}' records an older version of the environment "
            "(its data pins still match)", display, severity=Severity.WARNING,
            hints=(f"run `buildenv lock {name}` to refresh it",)))
    if any(p.is_error for p in problems) or not verify_data:
        return (None if any(p.is_error for p in problems) else lock), problems
    own_cache = cache is None
    cache = cache or stat_cache(project)
    for ds_name, ds in sorted(res.env.datasets.items()):
        pinned = lock.datasets[ds_name]
        algorithm = (pinned.manifest.algorithm if pinned.manifest is not None
                     else pinned.digest.split(":", 1)[0])
        try:
            now = digest_dataset(project, ds.uri, ds.format, ds.partition_columns, algorithm,
                                 cache, executor)
        except FileNotFoundError:
            problems.append(res.diag("BE053", f"dataset '{ds_name}': '{ds.uri}' not found",
                                     "datasets", ds_name, "uri"))
            continue
        except ManifestError as exc:
            problems.extend(res.diag(code, f"dataset '{ds_name}': {text}", "datasets", ds_name,
                                     "uri") for code, text in exc.problems)
            continue
        except DiagnosticError:
            raise
        except Exception as exc:
            problems.append(res.diag("BE053", f"dataset '{ds_name}': cannot read '{ds.uri}': "
                                     f"{exc}", "datasets", ds_name, "uri"))
            continue
        if ds_name in res.env.privacy.synthetic:
            problems.extend(provenance_problems(project, res, ds_name, now.value.digest))
        if now.value.digest != pinned.digest:
            if pinned.manifest is not None and now.manifest is not None:
                what = describe_diff(*pinned.manifest.diff(now.manifest))
            else:
                what = f"{pinned.digest} -> {now.value.digest}"
            problems.append(res.diag(
                "BE051", f"dataset '{ds_name}' changed since it was locked: {what} ({ds.uri})",
                "datasets", ds_name, "uri",
                hints=(f"if the new data is intended, review `buildenv drift {name} --dataset "
                       f"{ds_name} --against {ds.uri}` and run `buildenv lock {name}`",)))
    problems.extend(_label_bytes_changed(project, res, lock, cache))
    if own_cache:
        cache.save()
    return (None if any(p.is_error for p in problems) else lock), problems


def _label_pins_stale(res: Resolved, lock: Lock, display: str) -> list[Diagnostic]:
    """BE057: a label set the lock does not pin as it is declared now."""
    name = res.name
    problems = []
    for ls_name, spec in res.env.labels.items():
        pinned = lock.labels.get(ls_name)
        mappings = {e.mapping for e in spec.reuse if e.mapping}
        if pinned is None:
            what = "is not in the lock"
        elif pinned.uri != spec.uri or pinned.format != spec.format:
            what = f"uri changed: lock has '{pinned.uri}', environment has '{spec.uri}'"
        elif set(pinned.mappings) != mappings:
            what = "names other mapping files than the lock pins"
        elif pinned.declaration != label_declaration(spec):
            what = ("changed since it was locked (dataset, key, field, taxonomy, UI version, "
                    "reuse or exposure)")
        else:
            continue
        problems.append(res.diag("BE057", f"label set '{ls_name}' {what}", "labels", ls_name,
                                 hints=(f"run `buildenv lock {name}`",)))
    for ls_name in sorted(set(lock.labels) - set(res.env.labels)):
        problems.append(Diagnostic("BE057", f"lock pins label set '{ls_name}', which "
                                   f"environment '{name}' no longer declares", display,
                                   hints=(f"run `buildenv lock {name}`",)))
    return problems


def _label_bytes_changed(project: Project, res: Resolved, lock: Lock,
                         cache: StatCache) -> list[Diagnostic]:
    """BE058: an export or mapping whose bytes are not the ones the lock pins."""
    from buildenv.data.digests import FILE

    problems = []
    for ls_name, spec in sorted(res.env.labels.items()):
        pinned = lock.labels[ls_name]
        files = [(spec.uri, pinned.digest, ("labels", ls_name, "uri"))]
        files += [(e.mapping, pinned.mappings[e.mapping], ("labels", ls_name, "reuse", i,
                                                          "mapping"))
                  for i, e in enumerate(spec.reuse) if e.mapping]
        for uri, digest, place in files:
            try:
                now = digest_location(locate(uri, project), FILE, digest.split(":", 1)[0],
                                      cache)
            except FileNotFoundError:
                problems.append(res.diag("BE853", f"label set '{ls_name}': '{uri}' not found",
                                         *place))
                continue
            except Exception as exc:
                problems.append(res.diag("BE853", f"label set '{ls_name}': cannot read "
                                         f"'{uri}': {exc}", *place))
                continue
            if now.digest != digest:
                problems.append(res.diag(
                    "BE058", f"label set '{ls_name}': '{uri}' changed since it was locked: "
                    f"{digest} -> {now.digest}", *place,
                    hints=(f"if the new annotations are intended, review `buildenv labels "
                           f"{res.name}` and run `buildenv lock {res.name}`",)))
    return problems


def lock_state(multiverse: Multiverse, res: Resolved) -> str:
    """One word for `buildenv envs`: locked / stale / changed / missing / invalid."""
    try:
        _, problems = check_lock(multiverse, res)
    except DiagnosticError:
        return "invalid"
    codes = {p.code for p in problems if p.severity is Severity.ERROR}
    if not codes:
        return "locked"
    if "BE050" in codes:
        return "missing"
    if codes & {"BE052", "BE057"}:
        return "stale"
    if codes & {"BE051", "BE058"}:
        return "changed"
    return "unreadable"
