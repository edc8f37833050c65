"""The local object store: pinned bytes kept by digest under `.buildenv/objects/`.

The lock owns its layout (lock checks ask it whether a pinned file is kept); the store room
(`buildenv.data.store`) fills it, shares it and reads from it.

`objects/<algorithm>/<first two hex digits>/<rest>` holds the bytes whose digest is
`<algorithm>:<hex>`. An object appears only complete (written under a temporary name in the
same directory, then renamed) and read-only (0444; 0400 when it belongs to a restricted
dataset, in a store directory only its owner may enter), so no later edit of the source --
and no accident through the store -- changes it.

Bytes come in by the cheapest copy the filesystem offers: a reflink (FICLONE: the new file
shares the source's blocks until either is written, so it costs nothing and an in-place edit
of the source leaves it intact), else `copy_file_range` (which reflinks on XFS and btrfs and
copies in the kernel elsewhere), else a plain copy. Never a hard link: an edit in place would
change the object too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as statmod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from buildenv.data.lock.digests import ALGORITHMS, CHUNK

if TYPE_CHECKING:  # the lock's start-up path imports this module: keep pydantic out of it
    from buildenv.core.project import Project

__all__ = ["FICLONE", "LocalObjects", "clone_file"]

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS,
             errno.EBADF, errno.EPERM}


def clone_file(source: Path, target: Path) -> str:
    """Copy `source` to the new file `target` as cheaply as the filesystem allows; returns
    how ('reflink', 'copy_file_range' or 'copy')."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return "reflink"
        except OSError as exc:
            if exc.errno not in _NO_CLONE:
                raise
        size = os.fstat(src.fileno()).st_size
        if hasattr(os, "copy_file_range"):
            try:
                offset = 0
                while offset < size:
                    n = os.copy_file_range(src.fileno(), dst.fileno(), size - offset,
                                           offset, offset)
                    if n == 0:
                        break
                    offset += n
                if offset == size:
                    return "copy_file_range"
            except OSError as exc:
                if exc.errno not in _NO_CLONE:
                    raise
            dst.seek(0)
            dst.truncate()
            src.seek(0)
        shutil.copyfileobj(src, dst, 8 << 20)
        return "copy"


class LocalObjects:
    """Objects by digest in one directory (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self._root_text = str(root)  # `has` joins strings: asked once per pinned file

    @classmethod
    def of(cls, project: Project) -> LocalObjects:
        """The project's store: `objects/` in the data's state directory."""
        return cls(project.data_state_dir / "objects")

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if not algorithm or len(hexdigest) < 8 or not hexdigest.isalnum():
            raise ValueError(f"not a digest: {digest!r}")
        return self.root / algorithm / hexdigest[:2] / hexdigest[2:]

    def has(self, digest: str) -> bool:
        algorithm, _, hexdigest = digest.partition(":")
        if not algorithm or len(hexdigest) < 8 or not hexdigest.isalnum():
            return False
        # a string path: asked once per pinned file on every lock, where pathlib's joins
        # cost more than the stat
        return os.path.isfile(f"{self._root_text}/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}")

    def held(self, digests: Iterable[str]) -> set[str]:
        """Those of `digests` the store holds: `has` of each, in one loop (a relock asks it of
        every file of a year of data, where a call per file cost more than its `stat`)."""
        root, isreg, stat = self._root_text, statmod.S_ISREG, os.stat
        out = set()
        for digest in digests:
            algorithm, _, hexdigest = digest.partition(":")
            if not algorithm or len(hexdigest) < 8 or not hexdigest.isalnum():
                continue
            try:
                if isreg(stat(f"{root}/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}").st_mode):
                    out.add(digest)
            except (OSError, ValueError):
                continue
        return out

    def _prepare(self, digest: str) -> Path:
        final = self.path(digest)
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)  # restricted bytes live here: only the owner enters
        final.parent.mkdir(parents=True, exist_ok=True)
        return final

    def temporary(self, digest: str) -> Path:
        """A fresh name beside the object's final place (same filesystem: rename is atomic)."""
        final = self._prepare(digest)
        return final.with_name(f".{final.name}.{os.urandom(16).hex()}.tmp")

    def install(self, temporary: Path, digest: str, restricted: bool) -> Path:
        """Make `temporary` the object for `digest`: read-only, then renamed into place (a
        concurrent writer of the same object wins harmlessly: the bytes are the same)."""
        final = self.path(digest)
        os.chmod(temporary, 0o400 if restricted else 0o444)
        if restricted and final.is_file():
            os.chmod(final, 0o400)  # the same bytes now also belong to restricted data
        os.replace(temporary, final)
        return final

    def add_file(self, source: Path, digest: str, restricted: bool,
                 vouched: bool = False) -> str:
        """Keep the bytes of the local file `source`, which hash to `digest`. `vouched`: the
        lock's stat cache vouches that the file, as it is now, has that digest, so the copy
        is trusted when the file did not change during it; otherwise the copy is hashed.
        Returns how it was copied, or 'present'. ValueError (nothing kept) when the bytes
        copied are not `digest`."""
        if self.has(digest):
            if restricted:
                os.chmod(self.path(digest), 0o400)
            return "present"
        temporary = self.temporary(digest)
        try:
            before = os.stat(source)
            how = clone_file(source, temporary)
            if _identity(before) != _identity(os.stat(source)):
                raise ValueError(f"{source} changed while it was being kept; lock again")
            if not vouched:
                found = _hash(temporary, digest.split(":", 1)[0])
                if found != digest:
                    raise ValueError(f"{source} changed since it was hashed ({digest}, now "
                                     f"{found}); lock again")
            self.install(temporary, digest, restricted)
            return how
        finally:
            temporary.unlink(missing_ok=True)

    def remove(self, digest: str) -> None:
        """Drop a damaged object (the next pull fetches it again)."""
        path = self.path(digest)
        try:
            os.chmod(path, statmod.S_IWUSR | statmod.S_IRUSR)
            path.unlink()
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        """Every object kept, as a digest."""
        if not self.root.is_dir():
            return
        for algorithm in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for fan in sorted(p for p in algorithm.iterdir() if p.is_dir()):
                for item in sorted(fan.iterdir()):
                    if not item.name.startswith("."):
                        yield f"{algorithm.name}:{fan.name}{item.name}"


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _hash(path: Path, algorithm: str) -> str:
    hasher = ALGORITHMS[algorithm]()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"
