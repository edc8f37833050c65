"""Which dataset uris an environment may name: repository-relative paths, file://, s3://, gs://.

Part of the environment format (checked when an environment is resolved, reported at the uri's
YAML line); `buildenv.data.storage` opens what passes. Relative uris resolve against the
repository root (or the data root Pants passes in) and may not escape it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:  # only for the annotation: `buildenv lock`'s early hash imports this module
    from buildenv.core.project import Project

__all__ = ["REMOTE_SCHEMES", "is_remote", "names_directory", "uri_problem"]

REMOTE_SCHEMES = ("s3", "gs", "gcs")


def names_directory(uri: str) -> bool:
    """Whether a dataset uri names a directory or prefix of files (it ends in `/`): the
    dataset is partitioned, read and pinned file by file (`Dataset.partitioned`)."""
    return uri.endswith("/")


def is_remote(uri: str) -> bool:
    """Whether a dataset uri names an object store (`s3://`, `gs://`) rather than a local path."""
    return urlparse(uri).scheme.lower() in REMOTE_SCHEMES


def uri_problem(uri: str, project: Project) -> tuple[str, str, str] | None:
    """(code, message, hint) when `uri` cannot be used, else None."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        if scheme == "file":
            return _directory_problem(uri, Path(parsed.path))
        base = project.data_base.resolve()
        target = (base / uri).resolve()
        if not target.is_relative_to(base):
            return ("BE015", f"uri '{uri}' resolves outside the repository ({target})",
                    "keep data inside the repository, or use an absolute file:// uri")
        return _directory_problem(uri, target)
    if scheme in REMOTE_SCHEMES:
        if not parsed.netloc:
            return ("BE018", f"uri '{uri}' names no bucket", f"use {scheme}://bucket/key")
        return None
    return ("BE018", f"unsupported uri scheme '{scheme}://'",
            "use a repository-relative path, file://, s3:// or gs://")


def _directory_problem(uri: str, target: Path) -> tuple[str, str, str] | None:
    """A directory is read as a partitioned dataset only when the uri says so (a trailing
    `/`): a file path that became a directory must not silently change meaning."""
    if not names_directory(uri) and target.is_dir():
        return ("BE066", f"uri '{uri}' names a directory",
                f"write '{uri}/' to read it as a partitioned dataset (a directory of Parquet "
                "files)")
    return None
