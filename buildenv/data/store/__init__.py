"""Every pinned version stays retrievable: the object store.

`buildenv lock` keeps the bytes of each pinned file (`keep`, default on for local files and
directories, off for object-store uris and tables, which keep their own copies) in the local
store
(`objects.LocalObjects`, `.buildenv/objects/`); `[tool.buildenv] store` names a shared store
(an `s3://bucket/prefix`, or a directory) that `buildenv push` fills and `buildenv pull`
fetches from (`remote.RemoteObjects`). The gate reads pinned bytes that are no longer at the
dataset's uri from the store (`ObjectStore.find`, fetching a missing object from the shared
store), verified like any read, so drift against the lock, rebuilds, evaluation and promotion
of an old champion work after the data moved on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from buildenv.data.lock.objects import LocalObjects
from buildenv.data.storage import Location
from buildenv.data.store.remote import RemoteObjects, StoreError, copy_verified

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project

__all__ = ["ObjectStore", "StoreError"]


class ObjectStore:
    """The project's local store, and the shared one when `[tool.buildenv] store` is set."""

    def __init__(self, local: LocalObjects, shared: str | None, project: Project):
        self.local = local
        self.shared_uri = shared
        self.project = project
        self._remote: RemoteObjects | None = None

    @classmethod
    def of(cls, project: Project) -> ObjectStore:
        return cls(LocalObjects(project.data_state_dir / "objects"), project.config.store,
                   project)

    @property
    def remote(self) -> RemoteObjects | None:
        """The shared store, or None."""
        if self._remote is None and self.shared_uri:
            self._remote = RemoteObjects.at(self.shared_uri, self.project)
        return self._remote

    def has(self, digest: str) -> bool:
        """Whether the local store holds `digest`."""
        return self.local.has(digest)

    def held(self, digests: Iterable[str]) -> set[str]:
        """Those of `digests` the local store holds (`LocalObjects.held`)."""
        return self.local.held(digests)

    def find(self, digest: str, restricted: bool = False) -> Path | None:
        """The local path of the object for `digest`, fetched (and verified) from the shared
        store when only it has it; None when neither has it. StoreError when the shared store
        cannot be read or holds damaged bytes."""
        if self.local.has(digest):
            return self.local.path(digest)
        if self.remote is None:
            return None
        if not self.remote.has(digest):
            return None
        self.remote.download(digest, self.local, restricted)
        return self.local.path(digest)

    def keep(self, location: Location, digest: str, restricted: bool,
             vouched: bool = False) -> str:
        """Keep the bytes at `location`, which hash to `digest`: a local file is cloned or
        copied (and hashed again unless `vouched`: see LocalObjects.add_file); a remote
        object is copied while hashed. Kept only when the bytes are `digest`; returns how."""
        if location.local is not None:
            return self.local.add_file(location.local, digest, restricted, vouched)
        if self.local.has(digest):
            return "present"
        with location.open() as stream:
            copy_verified(stream, digest, self.local, restricted, location.uri)
        return "copy"
