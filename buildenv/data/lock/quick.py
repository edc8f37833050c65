"""Relock without the environment models: what a lock of unchanged environments needs to know.

Most runs of `buildenv lock` find nothing changed: the environment files are as they were, and
so is the data. Yet reading the environments (pydantic's models, resolving `extends`, the
checks) is most of such a run's time. So after a lock that found no problem at all, the lock
records a *plan* in `<cache_dir>/lockplan.json`: for each environment whose datasets are single
local files (no table, DVC pin, directory, source made by code, label set or synthetic
dataset), the digest of its lock file, the environment's digest, and the name, file, format,
digest, size and rows of each dataset that lock pins. The plan is valid only for the exact
inputs it was made from: buildenv's version and code (each module's size and modification
time: an editable install changes without a new version), the digest algorithm,
`pyproject.toml` and every environment file (`inputs_digest`; any edit, addition or removal of
any of them -- a parent reached through `extends` included -- makes it void), unless each
environment file edited since still says what it said (`env.meaning`: comments, layout,
descriptions): the plan records each file's digest and meaning (taken by the full lock when it
read the file), and such a relock answers, and records the plan for the new bytes, as the full
lock would. An environment file that says something else is answered too when resolving it
alone, without the models (`env.quick_validate.resolve_alone`), is sure of what the full lock
would make of it, and no environment asked for is resolved through it but itself (each entry
records its chain of files): its entry is made anew from what it says (the new environment
digest, its datasets), and its lock written as the full lock writes it.

`relock` then hashes the pinned files (the stat cache and the early prefetch apply as in the
full lock) and answers what the full lock would answer of these environments, for which it is
nothing but hashing single files: each lock is the plan's environment digest and the files'
digests, sizes and rows as hashed now -- rendered by `lockfile.Lock`, so byte for byte the
full lock's -- written (atomically) when it differs from the lock file, after the store keeps
each kept file (`LocalObjects.add_file`, trusted as the store's keeper trusts it: when the
stat cache vouches for it); then the plan is recorded again with the new digests. A file that
cannot be hashed or kept (missing, unreadable, not Parquet, changed while hashed) is None before
any lock is written: the caller runs the full lock, which says what is wrong. The plan is a
cache: written atomically, not flushed; an unreadable one is a miss.
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
from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import DiagnosticError
from buildenv.data.lock.digests import ContentDigest, StatCache, digest_location
from buildenv.data.lock.objects import LocalObjects
from buildenv.data.storage import Location, locate
from buildenv.env.meaning import file_meaning
from buildenv.env.uris import is_remote, names_directory, uri_problem

if TYPE_CHECKING:  # the fast path imports this module: keep pydantic out of it
    from buildenv.core.project import Project
    from buildenv.data.lock.lockfile import Lock
    from buildenv.env.quick_validate import Alone
    from buildenv.env.resolve import Resolved

__all__ = ["PLAN_FILE", "Relocked", "inputs_digest", "record", "relock"]

PLAN_FILE = "lockplan.json"
_VERSION = 4  # 2: each dataset's name, size and rows, the environment's digest; 3: files;
# 4: each entry's chain of environment files


@dataclass(frozen=True)
class Relocked:
    """An environment locked from the plan: what `buildenv lock` prints of it."""

    name: str
    datasets: int
    rows: int
    changed: bool  # its lock file written anew


def inputs_digest(root: Path, environments_dir: Path, algorithm: str) -> str | None:
    """The digest of everything a plan depends on: buildenv's version, the algorithm,
    `pyproject.toml` and each environment file (names as `Multiverse.names` lists them, and
    bytes). None when one cannot be read."""
    found = _inputs(root, environments_dir, algorithm)
    return None if found is None else found.digest


@dataclass(frozen=True)
class _Inputs:
    digest: str  # of all below
    frame: str  # buildenv's version and code, the algorithm, `pyproject.toml`
    files: dict[str, str]  # the sha256 of each environment file, by environment name


def _inputs(root: Path, environments_dir: Path, algorithm: str) -> _Inputs | None:
    frame = hashlib.sha256(f"{_VERSION}\0{__version__}\0{algorithm}\0".encode())
    try:
        frame.update(_code_stamp())
        pyproject = root / "pyproject.toml"
        frame.update(pyproject.read_bytes() if pyproject.is_file() else b"\0none")
        names = sorted(n for n in os.listdir(environments_dir)
                       if n.endswith(".yaml") and not n.startswith("."))
        files = {name[: -len(".yaml")]: hashlib.sha256((environments_dir / name).read_bytes())
                 .hexdigest() for name in names}
    except OSError:
        return None
    h = hashlib.sha256(frame.hexdigest().encode())
    for name, digest in files.items():
        h.update(f"\0{name}\0{digest}".encode())
    return _Inputs(h.hexdigest(), frame.hexdigest(), files)


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
           algorithm: str, inputs: str | None, meanings: dict[str, str | None]) -> None:
    """Write the plan after a full lock that found no problem: `inputs` is `inputs_digest` as
    it was before the lock read anything (nothing is written if the inputs changed since);
    `meanings`, `env.meaning.file_meaning` of each environment file the lock read."""
    entries: dict[str, dict[str, Any] | None] = {}
    for name, lock, _ in results:
        res = resolved.get(name)
        entries[name] = None if res is None or not _eligible(res) else _entry(
            lock, {n: (res.env.datasets[n].keeps, res.env.restricted(n)) for n in lock.datasets},
            res.chain)
    _save(project.root, project.environments_dir, project.state_dir, algorithm, inputs, entries,
          meanings)


def _entry(lock: Lock, kept: dict[str, tuple[bool, bool]], chain: list[str]) -> dict[str, Any]:
    """The plan's entry of `lock` (the lock as the full lock renders it, not as another process
    wrote it); `kept`: (keeps, restricted) of each dataset; `chain`: the environment files it
    was resolved from, root first."""
    return {"lock": hashlib.sha256(lock.render().encode("utf-8")).hexdigest(),
            "chain": list(chain),
            "environment_digest": lock.environment_digest,
            "rows": sum(d.rows or 0 for d in lock.datasets.values()),
            "datasets": [{"name": n, "uri": d.uri, "format": d.format, "digest": d.digest,
                          "size": d.size, "rows": d.rows, "keeps": kept[n][0],
                          "restricted": kept[n][1]}
                         for n, d in sorted(lock.datasets.items())]}


def _save(root: Path, environments_dir: Path, state_dir: Path, algorithm: str,
          inputs: str | None, entries: dict[str, dict[str, Any] | None],
          meanings: dict[str, str | None]) -> None:
    """Record `entries` (None: no longer in the plan) over the plan of the same inputs, with
    each environment file's digest and meaning (`meanings`, else the plan's of the same bytes,
    else none)."""
    now = None if inputs is None else _inputs(root, environments_dir, algorithm)
    if now is None or now.digest != inputs:
        return
    path = state_dir / PLAN_FILE
    plan = _load(path, algorithm)
    envs: dict[str, Any] = plan["envs"] if plan is not None and plan["inputs"] == inputs else {}
    for name, entry in entries.items():
        if entry is None:
            envs.pop(name, None)
        else:
            envs[name] = entry
    before = plan.get("files") if plan is not None else None
    files = {}
    for name, digest in now.files.items():
        was = before.get(name) if isinstance(before, dict) else None
        carried = was[1] if isinstance(was, list) and len(was) == 2 and was[0] == digest else None
        files[name] = [digest, meanings.get(name, carried)]
    try:
        atomic_write_text(path, json.dumps({"version": _VERSION, "buildenv": __version__,
                                            "algorithm": algorithm, "inputs": inputs,
                                            "frame": now.frame, "files": files,
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
    """The environments `names` (all: empty), sorted, each locked as the full lock would lock
    it (see the module); None when the plan cannot answer. Saves the stat cache either way:
    what it learnt is true of the files."""
    plan = _load(state_dir / PLAN_FILE, algorithm)
    if plan is None:
        return None
    now = _inputs(root, environments_dir, algorithm)
    if now is None:
        return None
    inputs = now.digest
    found_meanings = None if inputs == plan["inputs"] else _same_meaning(plan, now,
                                                                          environments_dir)
    if inputs != plan["inputs"] and found_meanings is None:
        return None
    reread, edited = found_meanings if found_meanings is not None else (None, {})
    entries = _entries(plan, environments_dir, names)
    if entries is None:
        return None
    entries = _edited_entries(entries, edited)
    if entries is None:
        return None
    cache = StatCache(state_dir / "statcache.json")
    pinned = _Pinned(root, state_dir, algorithm, cache)
    try:
        found = [(name, entry, current, [pinned.now(ds) for ds in entry["datasets"]])
                 for name, entry, current in entries]
        for _, entry, _, values in found:  # a lock is never written for bytes not kept
            for ds, value in zip(entry["datasets"], values, strict=True):
                pinned.keep(ds, value.digest)
        if all(_recorded(current, entry) and [v.digest for v in values] ==
               [ds["digest"] for ds in entry["datasets"]] for _, entry, current, values in found):
            if reread is not None:  # the plan of the new bytes: each entry is as it was
                _save(root, environments_dir, state_dir, algorithm, inputs,
                      {name: entry for name, entry, _, _ in found}, reread)
            return [Relocked(name, len(entry["datasets"]), int(entry["rows"]), False)
                    for name, entry, _, _ in found]  # the common case: nothing to render
        return _write(root, environments_dir, state_dir, algorithm, inputs, found, reread or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable, changed while hashed, a damaged plan: the full lock says
    finally:
        cache.save()


def _write(root: Path, environments_dir: Path, state_dir: Path, algorithm: str, inputs: str,
           found: list[tuple[str, dict[str, Any], str | None, list[ContentDigest]]],
           meanings: dict[str, str | None]) -> list[Relocked]:
    """Write each lock that changed, as the full lock renders it; record the plan anew (with
    `meanings` of the environment files read again)."""
    # Deferred import (buildenv): the lock's rendering (with the manifest and executor modules
    # it brings) is needed only when a lock is written, not by the common unchanged relock.
    from buildenv.data.lock.lockfile import Lock, LockedDataset

    out = []
    entries: dict[str, dict[str, Any] | None] = {}
    for name, entry, current, values in found:
        lock = Lock(name, str(entry["environment_digest"]), {
            str(ds["name"]): LockedDataset(ds["uri"], ds["format"], v.digest, v.size, v.rows)
            for ds, v in zip(entry["datasets"], values, strict=True)})
        text = lock.render()
        changed = current != text  # what the full lock compares: the file's text
        if changed:
            atomic_write_text(environments_dir / f"{name}.lock.json", text)
        entries[name] = _entry(lock, {ds["name"]: (bool(ds["keeps"]), bool(ds["restricted"]))
                                      for ds in entry["datasets"]}, entry["chain"])
        out.append(Relocked(name, len(lock.datasets), sum(d.rows or 0 for d in lock.datasets.values()),
                            changed))
    _save(root, environments_dir, state_dir, algorithm, inputs, entries, meanings)
    return out


def _same_meaning(plan: dict[str, Any], now: _Inputs, environments_dir: Path
                  ) -> tuple[dict[str, str | None], dict[str, Alone]] | None:
    """When only environment files changed since the plan, and each changed file either still
    says what it said (`env.meaning`: comments, layout, descriptions edited) or says something
    else that resolving it alone answers without the models (`env.quick_validate`): the meaning
    of each changed file, and the environment of each file of the second kind; else None (the
    plan does not apply)."""
    files = plan.get("files")
    if not isinstance(files, dict) or plan.get("frame") != now.frame or set(files) != set(
            now.files):
        return None
    # Deferred import (buildenv, yaml): only an edited environment file is parsed, here.
    from buildenv.env.loader import load_yaml
    from buildenv.env.quick_validate import resolve_alone

    meanings: dict[str, str | None] = {}
    edited: dict[str, Alone] = {}
    for name, digest in now.files.items():
        was = files[name]
        if not isinstance(was, list) or len(was) != 2:
            return None
        if was[0] == digest:
            continue
        if not isinstance(was[1], str):
            return None
        try:
            located = load_yaml(environments_dir / f"{name}.yaml", name)
        except DiagnosticError:
            return None
        meaning = file_meaning(located)
        if meaning is None:
            return None
        if meaning != was[1]:
            alone = resolve_alone(located, name)
            if alone is None:
                return None
            edited[name] = alone
        meanings[name] = meaning
    return meanings, edited


def _edited_entries(entries: list[tuple[str, dict[str, Any], str | None]],
                    edited: dict[str, Alone]
                    ) -> list[tuple[str, dict[str, Any], str | None]] | None:
    """`entries` with the entry of each environment `edited` made from what it says now (the
    digests it pins are those of the files hashed now, and no lock file matches it); None when
    one of them is resolved through an edited file it is not (a child of one: its plan entry
    says what the parent said). The plan recorded afterwards holds only these entries (its
    inputs changed), so no other environment keeps an entry made from the edited files."""
    if not edited:
        return entries
    out = []
    for name, entry, text in entries:
        chain = entry.get("chain")
        if not isinstance(chain, list) or (not set(chain).isdisjoint(edited)
                                           and chain != [name]):
            return None
        alone = edited.get(name)
        if alone is not None:
            entry = {"lock": "", "chain": [name],
                     "environment_digest": digest_json(alone.canonical),
                     "datasets": [{"name": n, "uri": uri, "format": fmt, "keeps": keeps,
                                   "restricted": False, "digest": None}
                                  for n, (uri, fmt, keeps) in sorted(alone.datasets.items())]}
        out.append((name, entry, text))
    return out


def _entries(plan: dict[str, Any], environments_dir: Path, names: list[str]
             ) -> list[tuple[str, dict[str, Any], str | None]] | None:
    """The plan's entries of `names` (all: empty), sorted, each with its lock file's text as
    the full lock reads it to compare (None: no lock file)."""
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
        path = environments_dir / f"{name}.lock.json"
        try:
            text = path.read_text(encoding="utf-8") if path.is_file() else None
        except (OSError, ValueError):  # the full lock fails on it as it fails: let it say
            return None
        entries.append((name, entry, text))
    return entries


def _recorded(text: str | None, entry: dict[str, Any]) -> bool:
    """Whether the lock file's text is the lock the plan's entry records."""
    return text is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() == entry["lock"]


class _Pinned:
    """Each pinned file as it is now, each distinct file hashed once, and kept in the store as
    the store's keeper keeps it."""

    def __init__(self, root: Path, state_dir: Path, algorithm: str, cache: StatCache):
        self.base = _DataBase(root)
        self.objects = LocalObjects(state_dir / "objects")
        self.algorithm = algorithm
        self.cache = cache
        self.seen: dict[tuple[str, str], tuple[Location, ContentDigest]] = {}

    def now(self, ds: dict[str, Any]) -> ContentDigest:
        key = (ds["uri"], ds["format"])
        if key not in self.seen:
            # what resolving the environment checks of the uri against the file system (a
            # directory now, a link out of the repository): the full lock reports it
            if uri_problem(ds["uri"], self.base) is not None:  # type: ignore[arg-type]
                raise ValueError(f"{ds['uri']}: the full lock reports it")
            location = locate(ds["uri"], self.base)  # type: ignore[arg-type]
            if location.local is None:
                raise ValueError(f"{ds['uri']} is not a local file")
            self.seen[key] = location, digest_location(location, ds["format"], self.algorithm,
                                                       self.cache)
        return self.seen[key][1]

    def keep(self, ds: dict[str, Any], digest: str) -> None:
        """What `store.keeping.keep_pinned` does to the file of `ds`, which hashed to `digest`:
        a held object's mode made owner-only if restricted, else the file copied in."""
        if not ds["keeps"]:
            return
        if self.objects.has(digest):
            if ds["restricted"]:
                os.chmod(self.objects.path(digest), 0o400)
            return
        location = self.seen[(ds["uri"], ds["format"])][0]
        assert location.local is not None
        hit = self.cache.get(location.key, location.stat(), self.algorithm, ds["format"])
        self.objects.add_file(location.local, digest, bool(ds["restricted"]),
                              hit is not None and hit.digest == digest)
