"""Relock without the environment models: what a lock of unchanged environments needs to know.

Most runs of `buildenv lock` find nothing changed: the environment files are as they were, and
so is the data. Yet reading the environments (pydantic's models, resolving `extends`, the
checks) is most of such a run's time. So after a lock that found no problem at all, the lock
records a *plan* in `<cache_dir>/lockplan.json`: for each environment whose datasets are single
local files (no table, DVC pin, directory, source made by code, label set or synthetic
dataset), the digest of its lock file and the files, formats and digests that lock
pins. The plan is valid only for the exact inputs it was made from: buildenv's version and code
(each module's size and modification time: an editable install changes without a new version), the
digest algorithm, `pyproject.toml` and every environment file (`inputs_digest`; any edit,
addition or removal of any of them -- a parent reached through `extends` included -- makes it
void).

`relock` then hashes the pinned files (the stat cache and the early prefetch apply as in the
full lock) and answers only when every file still has the digest its lock pins, every lock file
is byte for byte the one recorded, and the store holds each kept file (a restricted one's
object made owner-only, as the store's keeper does): exactly the case where the full lock
would report every environment unchanged and write nothing but the stat cache.
Anything else is None, and the caller runs the full lock. The plan is a cache: written
atomically, not flushed; an unreadable one is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildenv import __version__
from buildenv.core.atomic import atomic_write_text
from buildenv.data.lock.digests import StatCache, digest_location
from buildenv.data.lock.objects import LocalObjects
from buildenv.data.storage import locate
from buildenv.env.uris import is_remote, names_directory

if TYPE_CHECKING:  # the fast path imports this module: keep pydantic out of it
    from buildenv.core.project import Project
    from buildenv.data.lock.lockfile import Lock
    from buildenv.env.resolve import Resolved

__all__ = ["PLAN_FILE", "Relocked", "inputs_digest", "record", "relock"]

PLAN_FILE = "lockplan.json"
_VERSION = 1


@dataclass(frozen=True)
class Relocked:
    """An environment found unchanged: what `buildenv lock` prints of it."""

    name: str
    datasets: int
    rows: int


def inputs_digest(root: Path, environments_dir: Path, algorithm: str) -> str | None:
    """The digest of everything a plan depends on: buildenv's version, the algorithm,
    `pyproject.toml` and each environment file (names as `Multiverse.names` lists them, and
    bytes). None when one cannot be read."""
    h = hashlib.sha256(f"{_VERSION}\0{__version__}\0{algorithm}\0".encode())
    try:
        h.update(_code_stamp())
        pyproject = root / "pyproject.toml"
        h.update(pyproject.read_bytes() if pyproject.is_file() else b"\0none")
        names = sorted(n for n in os.listdir(environments_dir)
                       if n.endswith(".yaml") and not n.startswith("."))
        for name in names:
            data = (environments_dir / name).read_bytes()
            h.update(f"\0{name}\0{len(data)}\0".encode())
            h.update(data)
    except OSError:
        return None
    return h.hexdigest()


def _code_stamp() -> bytes:
    """buildenv's own modules as they are installed (path, size, mtime): a plan made by other
    code -- an editable install edited since, without a new version -- is void."""
    package = Path(__file__).resolve().parents[2]
    parts: list[str] = []
    stack = [str(package)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    parts.append(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}")
    return "\n".join(sorted(parts)).encode()


def _eligible(res: Resolved) -> bool:
    """Whether the full lock of `res` is nothing but hashing single local files (and keeping
    them): the only case `relock` may answer for."""
    env = res.env
    if env.labels or env.privacy.synthetic:
        return False
    for ds in env.datasets.values():
        if ds.source is not None or ds.is_table or ds.dvc is not None:
            return False
        if names_directory(ds.uri) or is_remote(ds.uri):
            return False
    return True


def record(project: Project, resolved: dict[str, Resolved], results: list[tuple[str, Lock, bool]],
           algorithm: str, inputs: str | None) -> None:
    """Write the plan after a full lock that found no problem: `inputs` is `inputs_digest` as
    it was before the lock read anything; nothing is written if the inputs changed since."""
    environments_dir = project.environments_dir
    if inputs is None or inputs_digest(project.root, environments_dir, algorithm) != inputs:
        return
    path = project.state_dir / PLAN_FILE
    plan = _load(path, algorithm)
    envs: dict[str, Any] = plan["envs"] if plan is not None and plan["inputs"] == inputs else {}
    for name, lock, _ in results:
        res = resolved.get(name)
        if res is None or not _eligible(res):
            envs.pop(name, None)
            continue
        envs[name] = {  # the lock as the full lock renders it, not as another process wrote it
            "lock": hashlib.sha256(lock.render().encode("utf-8")).hexdigest(),
            "rows": sum(d.rows for d in lock.datasets.values()),
            "datasets": [{"uri": d.uri, "format": d.format, "digest": d.digest,
                          "keeps": res.env.datasets[n].keeps,
                          "restricted": res.env.restricted(n)}
                         for n, d in sorted(lock.datasets.items())]}
    try:
        atomic_write_text(path, json.dumps({"version": _VERSION, "buildenv": __version__,
                                            "algorithm": algorithm, "inputs": inputs,
                                            "envs": envs}, sort_keys=True), durable=False)
    except OSError:
        pass  # a plan that cannot be written is only slower


def _load(path: Path, algorithm: str) -> dict[str, Any] | None:
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("version") != _VERSION \
            or plan.get("buildenv") != __version__ or plan.get("algorithm") != algorithm \
            or not isinstance(plan.get("envs"), dict) or not isinstance(plan.get("inputs"), str):
        return None
    return plan


class _DataBase:
    """What `locate` needs of a Project: where relative uris resolve (`buildenv lock` has no
    separate data root)."""

    def __init__(self, root: Path):
        self.data_base = root


def relock(root: Path, environments_dir: Path, state_dir: Path, names: list[str],
           algorithm: str) -> list[Relocked] | None:
    """The environments `names` (all: empty), sorted, if each is unchanged (see the module);
    else None. Saves the stat cache either way: what it learnt is true of the files."""
    plan = _load(state_dir / PLAN_FILE, algorithm)
    if plan is None or inputs_digest(root, environments_dir, algorithm) != plan["inputs"]:
        return None
    entries = _entries(plan, environments_dir, names)
    if entries is None:
        return None
    cache = StatCache(state_dir / "statcache.json")
    pinned = _Pinned(root, state_dir, algorithm, cache)
    try:
        if not all(pinned.unchanged(ds) for _, entry in entries for ds in entry["datasets"]):
            return None
        return [Relocked(name, len(entry["datasets"]), int(entry["rows"]))
                for name, entry in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable, changed while hashed, a damaged plan: the full lock says
    finally:
        cache.save()


def _entries(plan: dict[str, Any], environments_dir: Path, names: list[str]
             ) -> list[tuple[str, dict[str, Any]]] | None:
    """The plan's entries of `names` (all: empty), sorted, each lock file as recorded."""
    if not names:  # all: the plan's inputs name every file, but not which were eligible
        names = [n[: -len(".yaml")] for n in os.listdir(environments_dir)
                 if n.endswith(".yaml") and not n.startswith(".")]
        if not names:
            return None
    entries = []
    for name in sorted(set(names)):
        entry = plan["envs"].get(name)
        if not isinstance(entry, dict):
            return None
        try:
            text = (environments_dir / f"{name}.lock.json").read_bytes()
        except OSError:
            return None
        if hashlib.sha256(text).hexdigest() != entry.get("lock"):
            return None
        entries.append((name, entry))
    return entries


class _Pinned:
    """Whether each pinned file is as its lock pins it, each distinct file hashed once."""

    def __init__(self, root: Path, state_dir: Path, algorithm: str, cache: StatCache):
        self.base = _DataBase(root)
        self.objects = LocalObjects(state_dir / "objects")
        self.algorithm = algorithm
        self.cache = cache
        self.seen: dict[tuple[str, str], str] = {}

    def unchanged(self, ds: dict[str, Any]) -> bool:
        key = (ds["uri"], ds["format"])
        if key not in self.seen:
            location = locate(ds["uri"], self.base)  # type: ignore[arg-type]
            if location.local is None:
                return False
            self.seen[key] = digest_location(location, ds["format"], self.algorithm,
                                             self.cache).digest
        if self.seen[key] != ds["digest"]:
            return False
        if ds["keeps"]:  # held already, as the full lock's keeper would find it
            if not self.objects.has(ds["digest"]):
                return False
            if ds["restricted"]:  # what the keeper does to a held restricted object
                os.chmod(self.objects.path(ds["digest"]), 0o400)
        return True
