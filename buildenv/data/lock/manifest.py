"""Partitioned datasets: a directory or bucket prefix of Parquet files, pinned file by file.

A dataset whose `uri` ends in `/` is every Parquet file under it, in path order. Its lock entry
is a **manifest**: each file's path (relative to the uri), size, content digest and row count,
plus one digest over the manifest, which is what every other part of buildenv treats as the
dataset's digest (pins, cache keys, lineage). The manifest digest is the file algorithm's hash
of the canonical JSON `{"files": [[path, size, digest], ...], "manifest": 1}` (files sorted by
path), prefixed with the algorithm like any digest.

A manifest may **withhold** its counts (`withhold()`: a derived dataset's restricted output,
whose files' sizes and rows the user's code chose and a designer would read back from the lock,
docs/privacy.md): every entry's `size` and `rows` are None (`null`), and the digest is the same
canonical JSON with each size `null` -- over each file's path and content digest, which still
pin every byte. No manifest with counts has that text, so the two never share a digest, and the
digest of a manifest with counts is unchanged. Its JSON says `counts_withheld` (a lock entry's
own field; `Manifest.to_json`'s for the processes it is handed to): a `null` is read only there.

- Files whose path has a component starting with `.` or `_` are not data (`_SUCCESS`,
  `_temporary/`, `.part-0.crc`) and are skipped; any other file must end in `.parquet`, `.parq`
  or `.pq` (BE061), so a stray CSV is never silently left out of a pin.
- Hive partitions (`partitions: [date, region]`): every file lives at
  `date=<value>/region=<value>/<file>` (BE062 otherwise). Values are URI-decoded;
  `__HIVE_DEFAULT_PARTITION__` is null. They are typed and validated as the declared columns.
- Without `partitions:` they are found where users put them, as pyarrow, Polars, DuckDB and
  Spark find them: a declared column that names a `name=<value>` directory in the paths is a
  partition column (`infer_partitions`). Paths that disagree (a file without the directory,
  another order, an undeclared `name=<value>` level among them) are BE067, naming the paths
  and the YAML to write, rather than a column silently missing from every file.
- Relocking hashes only files the stat cache cannot vouch for, so adding a day to a year of
  data costs the new day's hash plus a `stat` per file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

from buildenv.core.canonical import canonical_json
from buildenv.data.executor import Executor, LocalExecutor
from buildenv.data.lock.digests import ALGORITHMS, FILE, ContentDigest, StatCache, compute_digest
from buildenv.data.storage import Location, Stat

__all__ = ["HIVE_NULL", "FileEntry", "Listed", "Manifest", "ManifestError", "digest_listed",
           "hash_file", "infer_partitions", "list_files", "list_partitioned", "partition_values",
           "resolve_partitions", "restricted_partitions"]

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_VERSION = 1


class ManifestError(Exception):
    """Files under a partitioned dataset's uri that cannot be pinned: (code, message) pairs,
    each message naming its file."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class FileEntry:
    path: str  # posix, relative to the dataset's uri (a table's: to its base)
    size: int | None  # None (with rows): withheld, see the module
    digest: str
    rows: int | None
    values: dict[str, str | None] | None = None  # a table file's partition values (as text)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "size": self.size, "digest": self.digest,
                                "rows": self.rows}
        if self.values is not None:
            data["values"] = self.values
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], withheld: bool = False) -> FileEntry:
        """`withheld`: the manifest says `counts_withheld`, so size and rows may be null (and
        are then both None); elsewhere a null is an error (TypeError)."""
        values = data.get("values")
        text = ({str(k): (None if v is None else str(v)) for k, v in values.items()}
                if isinstance(values, dict) else None)
        if withheld and data["size"] is None and data["rows"] is None:
            return cls(str(data["path"]), None, str(data["digest"]), None, text)
        return cls(str(data["path"]), int(data["size"]), str(data["digest"]), int(data["rows"]),
                   text)


@dataclass(frozen=True)
class Manifest:
    """The files of one version of a partitioned dataset (or of a table), sorted by path.
    A table's files carry their partition values, which the digest covers (they are not in
    the files), and live under `base`, the table's location, rather than under the uri."""

    files: tuple[FileEntry, ...]
    partitions: tuple[str, ...] = ()
    base: str | None = None  # where a table's file paths are relative to (not in the digest)
    withheld: bool = False  # its files' sizes and rows are withheld (None): see `withhold`

    @property
    def algorithm(self) -> str:
        return self.files[0].digest.split(":", 1)[0] if self.files else "sha256"

    @property
    def digest(self) -> str:
        hasher = ALGORITHMS[self.algorithm]()
        hasher.update(canonical_json({"manifest": MANIFEST_VERSION, "files": [
            [f.path, f.size, f.digest] + ([f.values] if f.values is not None else [])
            for f in self.files]}))
        return f"{self.algorithm}:{hasher.hexdigest()}"

    def withhold(self) -> Manifest:
        """This manifest without any file's size or rows: pinned by paths and digests alone
        (see the module)."""
        return Manifest(tuple(replace(f, size=None, rows=None) for f in self.files),
                        self.partitions, self.base, withheld=True)

    @property
    def size(self) -> int:
        """The files' total size; ValueError when withheld (nothing may show it)."""
        return sum(_count(f.size, self.withheld) for f in self.files)

    @property
    def rows(self) -> int:
        """The files' total rows; ValueError when withheld."""
        return sum(_count(f.rows, self.withheld) for f in self.files)

    def entry(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    def diff(self, newer: Manifest) -> tuple[list[str], list[str], list[str]]:
        """(added, removed, changed) paths from this manifest to `newer`."""
        old = {f.path: f for f in self.files}
        new = {f.path: f for f in newer.files}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(p for p in set(old) & set(new) if old[p].digest != new[p].digest)
        return added, removed, changed

    def files_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.files]

    def to_json(self) -> dict[str, Any]:
        """The manifest alone (what a build hands its training process)."""
        data: dict[str, Any] = {"partitions": list(self.partitions), "files": self.files_json()}
        if self.base is not None:
            data["base"] = self.base
        if self.withheld:
            data["counts_withheld"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        withheld = bool(data.get("counts_withheld"))
        return cls(tuple(FileEntry.from_json(f, withheld) for f in data["files"]),
                   tuple(data.get("partitions") or ()), data.get("base"), withheld)


def _count(value: int | None, withheld: bool) -> int:
    if value is None or withheld:
        raise ValueError("the manifest's counts are withheld")
    return value


def describe_diff(added: Sequence[str], removed: Sequence[str], changed: Sequence[str],
                  limit: int = 5) -> str:
    """"2 added (a, b), 1 removed (c)": for lock --check and the stale-lock diagnostic."""
    def part(paths: Sequence[str], what: str) -> str | None:
        if not paths:
            return None
        shown = ", ".join(paths[:limit]) + (f", ... ({len(paths) - limit} more)"
                                            if len(paths) > limit else "")
        return f"{len(paths)} {what} ({shown})"

    return "; ".join(p for p in (part(added, "added"), part(removed, "removed"),
                                 part(changed, "changed")) if p) or "no file differs"


def is_data_file(path: str) -> bool:
    """False for bookkeeping files (`_SUCCESS`, `.crc`, anything under `_temporary/`)."""
    # a component starts with "." or "_": at the start or after a "/" (no split per file)
    return not (path.startswith((".", "_")) or "/." in path or "/_" in path)


def partition_values(path: str, partitions: Sequence[str]) -> dict[str, str | None]:
    """The hive partition values of a file path; ValueError naming what does not match."""
    if not partitions:
        return {}
    parts = path.split("/")[:-1]
    if len(parts) != len(partitions):
        raise ValueError(f"expected {len(partitions)} partition director"
                         f"{'y' if len(partitions) == 1 else 'ies'} "
                         f"({'/'.join(f'{p}=...' for p in partitions)}), found {len(parts)}")
    values: dict[str, str | None] = {}
    for part, name in zip(parts, partitions):
        key, eq, value = part.partition("=")
        if not eq or (unquote(key) if "%" in key else key) != name:
            raise ValueError(f"directory '{part}' is not '{name}=<value>'")
        text = unquote(value) if "%" in value else value
        values[name] = None if text == HIVE_NULL else text
    return values


def _hive_keys(path: str) -> list[str | None]:
    """Each directory of `path`: the column a `name=value` directory names, else None."""
    keys: list[str | None] = []
    for part in path.split("/")[:-1]:
        key, eq, _ = part.partition("=")
        keys.append(unquote(key) if eq and key else None)
    return keys


def _paths_text(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{p}'" for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def infer_partitions(paths: Sequence[str], columns: Iterable[str]) -> tuple[str, ...]:
    """The hive partition columns the file paths show: every declared column that names a
    `name=<value>` directory, in path order. ManifestError (BE067) naming the paths and what
    to write when the paths disagree: a file without one of the directories, two orders, or
    directories that are not all `name=<value>` of declared columns."""
    declared = set(columns)
    keyed = [(path, _hive_keys(path)) for path in paths]
    first = keyed[0][1] if keyed else []  # the first path's order wins; then by depth, name
    found = sorted({k for _, keys in keyed for k in keys if k in declared},
                   key=lambda k: (first.index(k) if k in first else len(first),
                                  min(keys.index(k) for _, keys in keyed if k in keys), k))
    if not found:
        return ()
    problems: list[tuple[str, str]] = []
    for column in found:
        missing = [path for path, keys in keyed if column not in keys]
        if missing:
            # a directory spelled with other case (`City=` for `city`) is the likeliest slip:
            # partition names are matched exactly, as Spark and pyarrow match them
            cased = sorted({d for path in missing for d, k in zip(path.split("/")[:-1],
                                                                   _hive_keys(path))
                            if k is not None and k != column and k.lower() == column.lower()})
            problems.append(("BE067", (
                f"column '{column}' is a '{column}=<value>' directory in "
                f"{len(paths) - len(missing)} of {len(paths)} file paths but not in "
                f"{_paths_text(missing)}: "
                + (f"'{cased[0]}' differs from '{column}' in case only: name it "
                   f"'{column}={cased[0].partition('=')[2]}'; or " if cased else "")
                + f"move those files under a '{column}=<value>' directory, or, if "
                f"'{column}' is stored in the files, write `partitions: []` under the dataset "
                f"(the paths then give no column)")))
    if problems:
        raise ManifestError(problems)
    expected = tuple(found)
    others = [(path, keys) for path, keys in keyed if tuple(keys) != expected]
    if others:
        path, keys = others[0]
        dirs = path.split("/")[:-1]
        stray = [d for d, k in zip(dirs, keys) if k not in declared]
        yaml = f"partitions: [{', '.join(expected)}]"
        if stray:
            what = (f"directory '{stray[0]}' is not a '<column>=<value>' directory of a declared "
                    f"column: declare the column (its values come from the paths) or move the "
                    f"files so every path reads {'/'.join(f'{c}=<value>' for c in expected)}/"
                    f"<file>")
        else:
            what = (f"the directories come in another order ({'/'.join(k or '' for k in keys)}"
                    f"); move those files so every path reads "
                    f"{'/'.join(f'{c}=<value>' for c in expected)}/<file>")
        raise ManifestError([("BE067", (
            f"partition directories {'/'.join(f'{c}=<value>' for c in expected)}/<file> found "
            f"in the paths (`{yaml}`), but {len(others)} file path(s) disagree, e.g. "
            f"{_paths_text([p for p, _ in others])}: {what}"))])
    return expected


def resolve_partitions(declared: Sequence[str] | None, columns: Iterable[str],
                       paths: Sequence[str]) -> tuple[str, ...]:
    """A dataset's partition columns: `partitions:` when written (`[]`: none, nothing
    inferred), otherwise those the paths show (`infer_partitions`)."""
    if declared is not None:
        return tuple(declared)
    return infer_partitions(paths, columns)


def restricted_partitions(found: Sequence[str]) -> tuple[str, str, tuple[str, ...]]:
    """BE060 for a restricted dataset whose declared columns name `name=<value>` directories
    of its file paths: found there as partitions, their values would be paths the lock records
    and diagnostics name (written `partitions:` are refused for it the same way). No path or
    value is quoted."""
    names = ", ".join(found)
    return ("BE060", f"restricted, and its declared column(s) {names} are "
            "'<column>=<value>' directories of its file paths: partition values are file "
            "paths, which the lock records and diagnostics name", (
                f"store {names} in the files, under a plain directory (no <column>=<value> "
                "levels), or drop them from the declaration",
                "if the files store them, write `partitions: []` under the dataset (the "
                "paths then give no column)"))


@dataclass(frozen=True)
class Listed:
    path: str
    parent: Location  # the dataset's directory or prefix
    stat: Stat

    @property
    def key(self) -> str:
        """`location.key`, without building the Location (a relock looks up every file)."""
        if self.parent.local is not None:  # what `os.path.join` gives, without its checks
            key = self.parent.key
            return f"{key}{'' if key.endswith(os.sep) else os.sep}" \
                f"{self.path if os.sep == '/' else self.path.replace('/', os.sep)}"
        return self.location.key

    @property
    def location(self) -> Location:
        return self.parent.child(self.path)


def list_partitioned(location: Location, declared: Sequence[str] | None,
                     columns: Iterable[str], seen: Callable[[str, Stat], None] | None = None
                     ) -> tuple[tuple[str, ...], list[Listed]]:
    """(partition columns, files) of a partitioned dataset: `partitions:` when written, else
    those the paths show (`resolve_partitions`); raises like `list_files`."""
    if declared is not None:
        return tuple(declared), list_files(location, declared, seen)
    listed = list_files(location, (), seen)
    return infer_partitions([item.path for item in listed], columns), listed


def list_files(location: Location, partitions: Sequence[str],
               seen: Callable[[str, Stat], None] | None = None) -> list[Listed]:
    """Every data file under a partitioned dataset's uri, in path order. FileNotFoundError
    when the directory or prefix does not exist; ManifestError naming the files that cannot
    be part of it (not Parquet, not under the declared partition directories) or when there is
    no data file at all. `seen`: as for `Location.walk`."""
    found = location.walk(seen)
    problems: list[tuple[str, str]] = []
    unmatched: list[str] = []  # paths not as `partitions` says
    out = []
    for rel, stat in found:
        if not is_data_file(rel):
            continue
        if not rel.lower().endswith(PARQUET_SUFFIXES):
            problems.append(("BE061", f"'{location.uri}{_sep(location)}{rel}' is not a Parquet "
                             "file (a partitioned dataset holds only .parquet files)"))
            continue
        try:
            partition_values(rel, partitions)
        except ValueError as exc:
            problems.append(("BE062", f"'{location.uri}{_sep(location)}{rel}' does not match "
                             f"the declared partitions: {exc}"))
            unmatched.append(rel)
            continue
        out.append(Listed(rel, location, stat))
    if problems:
        if not out:  # no file as declared: the paths may all say what to write instead
            problems = _one_layout(location, partitions, unmatched, problems)
        raise ManifestError(problems)
    if not out:
        raise ManifestError([("BE065", f"'{location.uri}' holds no Parquet file")])
    return out


def _one_layout(location: Location, partitions: Sequence[str], paths: list[str],
                problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """When no file is where `partitions:` says and every one reads one other way (`a=/b=`
    under `partitions: [b, a]`): their BE062s as one problem saying what to write, instead
    of one per file without it."""
    prefix = f"{location.uri}{_sep(location)}"
    layouts = {tuple(_hive_keys(path)) for path in paths}
    if not paths or len(layouts) != 1:
        return problems
    keys = layouts.pop()
    if not keys or None in keys or len(set(keys)) != len(keys):
        return problems
    found = ", ".join(str(k) for k in keys)
    return [p for p in problems if p[0] != "BE062"] + [("BE062", (
        f"{len(paths)} file path(s) do not match the declared partitions "
        f"`partitions: [{', '.join(partitions)}]`, e.g. {_paths_text([prefix + p for p in paths])}"
        f": they read {'/'.join(f'{k}=<value>' for k in keys)}/<file>; write "
        f"`partitions: [{found}]` (declaring each as a column), or leave `partitions:` out: "
        f"partitions are then found in the paths"))]


def _sep(location: Location) -> str:
    return "" if location.uri.endswith("/") else "/"


def hash_file(task: tuple[Location, str] | tuple[Location, str, int]
              ) -> tuple[Stat | None, object, int]:
    """One file's (stat, ContentDigest or error text, time the hash started): the unit of work
    the executor runs, locally or as a Ray task. Errors are returned, not raised, so that they
    come back naming their file whatever ran them. A third item is the file's row count as a
    table's log records it: then the footer is not read."""
    location, algorithm = task[0], task[1]
    try:
        stat = location.stat()
        started = time.time_ns()
        if len(task) == 3:
            value = compute_digest(location, FILE, algorithm)
            value = ContentDigest(value.digest, value.size, task[2])
        else:
            value = compute_digest(location, "parquet", algorithm)
        if location.stat() != stat:
            return None, f"{location.uri} changed while it was being hashed; try again", 0
        return stat, value, started
    except FileNotFoundError:
        return None, f"'{location.uri}' not found", 0
    except OSError as exc:
        return None, f"cannot read '{location.uri}': {exc.strerror or exc}", 0
    except Exception as exc:  # a parse error from pyarrow: not Parquet
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"cannot read '{location.uri}': {text}", 0


def digest_partitioned(location: Location, declared: Sequence[str] | None, algorithm: str,
                       cache: StatCache | None, executor: Executor | None = None,
                       columns: Iterable[str] = ()) -> Manifest:
    """The manifest of the files under `location` now: a stat per file, and a hash of each
    file the stat cache cannot vouch for (run by `executor`, default a few local threads).
    Partitions: `declared`, or (None) those of `columns` the paths show. Raises
    FileNotFoundError, ManifestError (files that cannot be pinned, each named) or ValueError (a
    file that cannot be read or changed while hashed, named)."""
    runner = executor or LocalExecutor()
    # hashed early in threads of this process: only with a second core to hash on
    early = _EarlyHashes(location, algorithm, cache) \
        if location.local is not None and isinstance(runner, LocalExecutor) and \
        runner.workers > 1 else None
    try:
        partitions, listed = list_partitioned(location, declared, columns, early)
        return digest_listed(listed, partitions, algorithm, cache, runner, early=early)
    finally:
        if early is not None:
            early.close()


class _EarlyHashes:
    """The walk's `seen`: looks each data file up in the stat cache as the walk finds it,
    and starts hashing (in a thread: hashlib releases the GIL) the first few files the cache
    cannot vouch for, so that a relock's new file is hashed while the walk, the checks of the
    paths and the manifest's other files go on (the walk finds the last paths first). A
    file hashed here is the unit of work `digest_listed` would run (`hash_file`: its own
    stat before and after), only started earlier."""

    LIMIT = 2  # hashes started before the listing is done (a full lock hashes the rest)

    def __init__(self, location: Location, algorithm: str, cache: StatCache | None):
        self.location = location
        self.algorithm = algorithm
        self.cache = cache
        self.prefix = location.key if location.key.endswith(os.sep) else location.key + os.sep
        self.hits: dict[str, ContentDigest | None] = {}  # path -> the cache's answer
        self.started: dict[str, Future[tuple[Stat | None, object, int]]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self, rel: str, stat: Stat) -> None:
        if len(self.started) >= self.LIMIT or not is_data_file(rel) or \
                not rel.lower().endswith(PARQUET_SUFFIXES):
            return
        key = self.prefix + (rel if os.sep == "/" else rel.replace("/", os.sep))
        hit = self.cache.get(key, stat, self.algorithm, "parquet") if self.cache else None
        self.hits[rel] = hit
        if hit is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.LIMIT, thread_name_prefix="buildenv-early")
            self.started[rel] = self._pool.submit(hash_file, (self.location.child(rel),
                                                              self.algorithm))

    def close(self) -> None:
        """Wait for the hashes started (a listing that failed leaves them unused)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def digest_listed(listed: Sequence[Listed], partitions: Sequence[str], algorithm: str,
                  cache: StatCache | None, executor: Executor | None = None,
                  values: dict[str, dict[str, str | None]] | None = None,
                  base: str | None = None, rows: dict[str, int] | None = None,
                  early: _EarlyHashes | None = None) -> Manifest:
    """The manifest of `listed` files (a directory's, or a table version's with their
    partition `values` by path, the table's `base` and the `rows` its log records, which spare
    reading each footer): each hashed unless the stat cache vouches for it. Raises ValueError
    naming files that cannot be read. `early`: the listing's lookups and hashes already
    started (`digest_partitioned`)."""
    known: dict[str, ContentDigest] = {}
    todo: list[Listed] = []
    looked = early.hits if early is not None else {}
    for item in listed:
        if item.path in looked:
            hit = looked[item.path]
        else:
            hit = cache.get(item.key, item.stat, algorithm, "parquet") if cache else None
        if hit is not None:
            known[item.path] = hit
        else:
            todo.append(item)
    if todo:
        started_early = early.started if early is not None else {}
        rest = [item for item in todo if item.path not in started_early]
        runner = executor or LocalExecutor()
        known_rows = rows or {}
        found = dict(zip([item.path for item in rest], runner.map(hash_file, [
            (item.location, algorithm, known_rows[item.path]) if known_rows.get(item.path)
            else (item.location, algorithm) for item in rest]) if rest else []))
        results = [started_early[item.path].result() if item.path in started_early
                   else found[item.path] for item in todo]
        errors = []
        for item, (stat, value, started) in zip(todo, results):
            if stat is None:
                errors.append(str(value))
                continue
            assert isinstance(value, ContentDigest)
            known[item.path] = value
            if cache is not None:
                cache.put(item.key, stat, algorithm, "parquet", value, started)
        if errors:
            raise ValueError("; ".join(errors[:3]) + (f"; and {len(errors) - 3} more"
                                                     if len(errors) > 3 else ""))
    return Manifest(tuple(FileEntry(item.path, known[item.path].size, known[item.path].digest,
                                    known[item.path].rows,
                                    values.get(item.path) if values is not None else None)
                          for item in listed),
                    tuple(partitions), base)
