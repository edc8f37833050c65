"""Where dataset bytes live: repo-relative paths, file://, s3://, gs://.

Everything reads through pyarrow filesystems, so local disks and object stores
share one code path (streams, file info). Relative uris resolve against the
repository root (or the data root Pants passes in) and may not escape it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlparse

# Deferred imports (pyarrow): a no-op build, and the hash `buildenv lock` starts before its imports
# (`cli/early.py`), locate local files without loading pyarrow.

if TYPE_CHECKING:  # the lock's start-up path imports this module: keep pydantic out of it
    from buildenv.core.project import Project

__all__ = ["Location", "Stat", "locate"]


class Stat(NamedTuple):
    """What the stat cache compares: a named tuple, as a listing builds one per file (a
    frozen dataclass cost three times as much to build)."""

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0
    device: int = 0


@dataclass(frozen=True)
class Location:
    uri: str  # as written in the environment
    key: str  # stable identity for caches: absolute path or scheme://bucket/key
    path: str  # path inside the filesystem
    local: Path | None  # set for local files (fast paths: os.stat, plain reads)

    @property
    def fs(self) -> Any:
        """The pyarrow filesystem; imported lazily so a no-op build never loads pyarrow."""
        from pyarrow import fs as pafs

        if self.local is not None:
            return pafs.LocalFileSystem()
        if self.uri.lower().startswith("s3://"):
            return _s3()
        return pafs.FileSystem.from_uri(self.uri)[0]

    def stat(self) -> Stat:
        if self.local is not None:
            st = os.stat(self.local)
            return Stat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(self.uri)
        mtime = info.mtime_ns or 0
        return Stat(int(info.size or 0), int(mtime))

    def stat_child(self, rel: str) -> Stat:
        """`self.child(rel).stat()`; for a local directory without building the child's path
        objects (a relock stats every file of a table version)."""
        if self.local is None:
            return self.child(rel).stat()
        st = os.stat(f"{self.key}{'' if self.key.endswith(os.sep) else os.sep}{rel}")
        return Stat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def open(self) -> Any:
        """A binary input stream (pyarrow NativeFile)."""
        return self.fs.open_input_stream(self.path)

    def open_random(self) -> Any:
        """A seekable binary file (pyarrow NativeFile)."""
        return self.fs.open_input_file(self.path)

    def child(self, rel: str) -> Location:
        """The file at `rel` (a posix path) under this directory or prefix."""
        base = self.uri if self.uri.endswith("/") else self.uri + "/"
        if self.local is not None:
            local = self.local.joinpath(*rel.split("/"))
            return Location(base + rel, str(local), str(local), local)
        path = self.path.rstrip("/") + "/" + rel
        return Location(base + rel, base + rel, path, None)

    def walk(self, seen: Callable[[str, Stat], None] | None = None) -> list[tuple[str, Stat]]:
        """Every file under this directory or prefix: (posix path relative to it, stat),
        sorted by path. FileNotFoundError when it does not exist. `seen` is called with each
        file of a local directory as the walk finds it, the last paths in path order first
        (where new files usually are): a relock starts hashing a new file while the walk goes
        on."""
        if self.local is not None:
            if not self.local.is_dir():
                raise FileNotFoundError(self.uri)
            return _walk_local(self.key, seen)
        from pyarrow import fs as pafs

        prefix = self.path.rstrip("/")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
        except FileNotFoundError:
            raise FileNotFoundError(self.uri) from None
        out = [(info.path[len(prefix) + 1:], Stat(int(info.size or 0), int(info.mtime_ns or 0)))
               for info in infos if info.type == pafs.FileType.File]
        if not out and self.fs.get_file_info(prefix).type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.uri)
        return sorted(out)


def _walk_local(top: str, seen: Callable[[str, Stat], None] | None = None
                ) -> list[tuple[str, Stat]]:
    """`Location.walk` of a local directory, on `os.scandir` strings: what `os.walk` then a
    `stat` per file finds (symbolic links to directories not followed, directories that
    cannot be read skipped), without its path joins and `relpath`s, which cost more than the
    stats (a relock of 365 files lists them all). Directories are walked last name first,
    so `seen` hears of the newest day of a dataset partitioned by date first."""
    out = []
    pending = [("", top)]
    while pending:
        rel_dir, folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            if not rel_dir:
                raise
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    subdirs.append((rel, entry.path))
                continue
            st = entry.stat()
            stat = Stat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
            out.append((rel, stat))
            if seen is not None:
                seen(rel, stat)
        if seen is not None:
            subdirs.sort()  # popped from the end: the last name first
        pending += subdirs
    out.sort(key=_first)
    return out


def _first(item: tuple[str, Stat]) -> str:
    return item[0]


def locate(uri: str, project: Project) -> Location:
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        local = Path(parsed.path).resolve()
        return Location(uri, str(local), str(local), local)
    if scheme == "":
        local = (project.data_base / uri).resolve()
        return Location(uri, str(local), str(local), local)
    if scheme == "s3":
        return Location(uri, uri, f"{parsed.netloc}{parsed.path}", None)
    from pyarrow import fs as pafs

    return Location(uri, uri, pafs.FileSystem.from_uri(uri)[1], None)


_S3: Any = None


def _s3() -> Any:
    """One S3 client per process; endpoint from AWS_ENDPOINT_URL(_S3) like the AWS CLI."""
    global _S3
    if _S3 is None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        from pyarrow import fs as pafs

        _S3 = pafs.S3FileSystem(**kwargs)
    return _S3
