"""Locks (SPEC §3): `environments/<name>.lock.json` pins each dataset by content.

Intent (the YAML) and lock are separate files, as in dvc.yaml / dvc.lock. The
lock holds, per dataset, the uri as declared, its format, content digest, size
and row count, plus the digest of the resolved environment. It is written
atomically and carries `lock_version`; a newer major is refused, older ones are
upgraded by small dict -> dict functions in `LOCK_UPGRADES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildenv.core.atomic import atomic_write_text
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project
from buildenv.data.digests import ContentDigest, StatCache, digest_location
from buildenv.data.provenance import provenance_problems
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved

__all__ = ["LOCK_VERSION", "Lock", "LockedDataset", "check_lock", "lock_environments", "lock_path",
           "read_lock"]

LOCK_VERSION = 1
LOCK_UPGRADES: dict[int, Callable[[dict], dict]] = {}


@dataclass(frozen=True)
class LockedDataset:
    uri: str
    format: str
    digest: str
    size: int
    rows: int

    def to_json(self) -> dict:
        return {"uri": self.uri, "format": self.format, "digest": self.digest,
                "size": self.size, "rows": self.rows}


@dataclass(frozen=True)
class Lock:
    environment: str
    environment_digest: str
    datasets: dict[str, LockedDataset]

    def to_json(self) -> dict:
        return {
            "lock_version": LOCK_VERSION,
            "environment": self.environment,
            "environment_digest": self.environment_digest,
            "datasets": {k: v.to_json() for k, v in sorted(self.datasets.items())},
        }

    def render(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


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
            datasets={k: LockedDataset(v["uri"], v["format"], v["digest"], int(v["size"]),
                                       int(v["rows"])) for k, v in data["datasets"].items()},
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


def _digest_all(project: Project, wanted: dict[tuple[str, str], str], algorithm: str,
                cache: StatCache) -> tuple[dict[tuple[str, str], ContentDigest],
                                           dict[tuple[str, str], str]]:
    """Hash each distinct (uri, format) once, a few in parallel (hashlib releases the GIL)."""
    results: dict[tuple[str, str], ContentDigest] = {}
    errors: dict[tuple[str, str], str] = {}

    def work(item: tuple[str, str]) -> None:
        uri, fmt = item
        try:
            results[item] = digest_location(locate(uri, project), fmt, algorithm, cache)
        except FileNotFoundError:
            errors[item] = "file not found"
        except OSError as exc:
            errors[item] = exc.strerror or str(exc)
        except Exception as exc:  # a parse error from pyarrow: bad Parquet/CSV
            errors[item] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    workers = max(1, min(len(wanted), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, sorted(wanted)))
    return results, errors


def lock_environments(multiverse: Multiverse, names: list[str], algorithm: str = "sha256",
                      ) -> tuple[list[tuple[str, Lock, bool]], list[Diagnostic]]:
    """Lock each environment; returns (name, lock, changed) and the problems found."""
    project = multiverse.project
    resolved, problems = multiverse.resolve_all(names)
    wanted: dict[tuple[str, str], str] = {}
    for res in resolved.values():
        for ds in res.env.datasets.values():
            wanted[(ds.uri, ds.format)] = ds.uri
    cache = stat_cache(project)
    digests, errors = _digest_all(project, wanted, algorithm, cache)
    cache.save()
    out = []
    for name, res in sorted(resolved.items()):
        bad = False
        for ds_name, ds in res.env.datasets.items():
            err = errors.get((ds.uri, ds.format))
            if err:
                bad = True
                problems.append(res.diag("BE053", f"dataset '{ds_name}': cannot read "
                                         f"'{ds.uri}': {err}", "datasets", ds_name, "uri"))
        for ds_name, ds in res.env.datasets.items():
            if ds_name in res.env.privacy.synthetic and (ds.uri, ds.format) in digests:
                found = provenance_problems(project, res, ds_name,
                                            digests[(ds.uri, ds.format)].digest)
                problems.extend(found)
                bad = bad or bool(found)
        if bad:
            continue
        lock = Lock(name, res.digest, {
            ds_name: LockedDataset(ds.uri, ds.format, digests[(ds.uri, ds.format)].digest,
                                   digests[(ds.uri, ds.format)].size,
                                   digests[(ds.uri, ds.format)].rows)
            for ds_name, ds in res.env.datasets.items()})
        path = lock_path(project, name)
        text = lock.render()
        changed = not path.is_file() or path.read_text(encoding="utf-8") != text
        if changed:
            atomic_write_text(path, text)
        out.append((name, lock, changed))
    return out, problems


def check_lock(multiverse: Multiverse, res: Resolved, verify_data: bool = True,
               cache: StatCache | None = None) -> tuple[Lock | None, list[Diagnostic]]:
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
        if pinned is None or pinned.uri != ds.uri or pinned.format != ds.format:
            what = ("is not in the lock" if pinned is None else
                    f"uri changed: lock has '{pinned.uri}', environment has '{ds.uri}'")
            problems.append(res.diag("BE052", f"dataset '{ds_name}' {what}", "datasets",
                                     ds_name, "uri", hints=(f"run `buildenv lock {name}`",)))
    for ds_name in sorted(set(lock.datasets) - set(res.env.datasets)):
        problems.append(Diagnostic("BE052", f"lock pins dataset '{ds_name}', which environment "
                                   f"'{name}' no longer declares", display,
                                   hints=(f"run `buildenv lock {name}`",)))
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
        algorithm = pinned.digest.split(":", 1)[0]
        try:
            now = digest_location(locate(ds.uri, project), ds.format, algorithm, cache)
        except FileNotFoundError:
            problems.append(res.diag("BE053", f"dataset '{ds_name}': '{ds.uri}' not found",
                                     "datasets", ds_name, "uri"))
            continue
        except Exception as exc:
            problems.append(res.diag("BE053", f"dataset '{ds_name}': cannot read '{ds.uri}': "
                                     f"{exc}", "datasets", ds_name, "uri"))
            continue
        if ds_name in res.env.privacy.synthetic:
            problems.extend(provenance_problems(project, res, ds_name, now.digest))
        if now.digest != pinned.digest:
            problems.append(res.diag(
                "BE051", f"dataset '{ds_name}' changed since it was locked: {pinned.digest} -> "
                f"{now.digest} ({ds.uri})", "datasets", ds_name, "uri",
                hints=(f"if the new data is intended, review `buildenv drift {name} --dataset "
                       f"{ds_name} --against {ds.uri}` and run `buildenv lock {name}`",)))
    if own_cache:
        cache.save()
    return (None if any(p.is_error for p in problems) else lock), problems


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
    if "BE052" in codes:
        return "stale"
    if "BE051" in codes:
        return "changed"
    return "unreadable"
