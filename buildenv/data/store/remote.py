"""The shared object store: `[tool.buildenv] store`, an S3 prefix (or any directory) that
`buildenv push` fills and `buildenv pull` fetches from, laid out like the local store
(`<prefix>/<algorithm>/<xx>/<rest>`).

An object is written whole or not at all: S3 makes an upload visible only when it completes;
in a directory it is written under a temporary name and moved. Everything fetched is hashed
while it is copied and kept only when it hashes to its name (BE082 otherwise), so a damaged
or tampered shared object never reaches a read.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildenv.data.lock.digests import ALGORITHMS, CHUNK
from buildenv.data.lock.objects import LocalObjects
from buildenv.data.storage import Location, locate

if TYPE_CHECKING:
    from buildenv.core.project import Project

__all__ = ["RemoteObjects", "StoreError", "copy_verified"]


class StoreError(Exception):
    """A store problem as a diagnostic: code (BE080-BE082) and message."""

    def __init__(self, code: str, message: str, *hints: str):
        super().__init__(message)
        self.code, self.message, self.hints = code, message, tuple(hints)


def copy_verified(stream: Any, digest: str, local: LocalObjects, restricted: bool,
                  source: str) -> None:
    """Copy `stream` into the local store as the object `digest`, hashing it on the way;
    StoreError BE082 (nothing kept) when the bytes hash to something else."""
    algorithm = digest.split(":", 1)[0]
    hasher = ALGORITHMS[algorithm]()
    temporary = local.temporary(digest)
    try:
        with open(temporary, "xb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                out.write(chunk)
        found = f"{algorithm}:{hasher.hexdigest()}"
        if found != digest:
            raise StoreError("BE082", f"'{source}' does not hash to its name: expected "
                             f"{digest}, found {found}; it is not used",
                             "push it again from a machine that holds the right bytes")
        local.install(temporary, digest, restricted)
    finally:
        temporary.unlink(missing_ok=True)


class RemoteObjects:
    """Objects by digest under a prefix of a pyarrow filesystem (S3, or a local directory)."""

    def __init__(self, location: Location):
        self.location = location
        self.uri = location.uri.rstrip("/")

    @classmethod
    def at(cls, uri: str, project: Project) -> RemoteObjects:
        return cls(locate(uri.rstrip("/") + "/", project))

    def _object(self, digest: str) -> Location:
        algorithm, _, hexdigest = digest.partition(":")
        return self.location.child(f"{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}")

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError("BE081", f"store '{self.uri}': cannot {what}: {text}",
                          "check `[tool.buildenv] store`, the endpoint and the credentials")

    def has(self, digest: str) -> bool:
        try:
            self._object(digest).stat()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._fail("list objects", exc) from None

    def upload(self, path: Path, digest: str) -> None:
        """Copy a local object up; visible only once complete."""
        target = self._object(digest)
        fs = target.fs
        try:
            if target.local is not None:
                target.local.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.local.with_name(f".{target.local.name}.{uuid.uuid4().hex}")
                try:
                    with open(path, "rb") as src, open(temporary, "xb") as dst:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
                    temporary.replace(target.local)
                finally:
                    temporary.unlink(missing_ok=True)
                return
            with open(path, "rb") as src, fs.open_output_stream(target.path) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
        except OSError as exc:
            raise self._fail(f"write {digest}", exc) from None

    def download(self, digest: str, local: LocalObjects, restricted: bool) -> None:
        """Fetch an object into the local store, verified (BE082 when damaged)."""
        source = self._object(digest)
        try:
            with source.open() as stream:
                copy_verified(stream, digest, local, restricted, source.uri)
        except StoreError:
            raise
        except FileNotFoundError:
            raise StoreError("BE080", f"store '{self.uri}' has no object {digest}") from None
        except OSError as exc:
            raise self._fail(f"read {digest}", exc) from None
