"""Where dataset bytes live: repo-relative paths, file://, s3://, gs://.

Everything reads through pyarrow filesystems, so local disks and object stores
share one code path (streams, file info). Relative uris resolve against the
repository root (or the data root Pants passes in) and may not escape it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from buildenv.core.project import Project

__all__ = ["Location", "Stat", "locate"]



@dataclass(frozen=True)
class Stat:
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

    def open(self):
        """A binary input stream (pyarrow NativeFile)."""
        return self.fs.open_input_stream(self.path)

    def open_random(self):
        return self.fs.open_input_file(self.path)


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
        kwargs: dict = {}
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
