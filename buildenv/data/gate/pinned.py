"""The bytes of one file, fixed while they are read, and their digest.

Local files: one open descriptor for the whole read, which decoders read with pread (their own
position each, no re-open by path; a small file in one pread, decoded from memory); hashed by a thread with pread, or vouched for by the lock's
stat cache when the open file is, by its identity, the file the cache hashed. Remote objects:
copied into memory while hashed, then decoded from memory. In a sandboxed training the build
opens the file (or copies the object into a sealed memory file) and hands the descriptor over
(`handover`): the same reads follow.
"""

from __future__ import annotations

import io
import os
import threading

import pyarrow as pa

from buildenv.data.gate import handover
from buildenv.data.lock.digests import ALGORITHMS, CHUNK
from buildenv.data.storage import Location, Stat

__all__ = ["WHOLE_FILE", "Changed", "Pinned"]

WHOLE_FILE = 16 << 20  # files up to 16 MiB are decoded from memory (a few at once at most)


class Pinned:
    """The bytes of one file, fixed while they are read, and their digest.

    Local files: one open file descriptor for the whole read (the same inode even if the path
    is replaced); decoders and a hashing thread read it with pread. Remote objects: streamed
    into memory while hashed, then decoded from memory, or, sandboxed, handed over as a sealed
    memory file.
    """

    def __init__(self, location: Location, algorithm: str):
        self.location = location
        self.algorithm = algorithm
        self._fd: int | None = None
        self._buffer: pa.Buffer | None = None
        self._digest: str | None = None
        self._size = 0
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_memory = False  # a sealed memory file handed over for a remote object
        if handover.active():
            self._fd, self._in_memory = handover.open_pinned(location.key)
            self._stat = os.fstat(self._fd)
        elif location.local is not None:
            self._fd = os.open(location.local, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._stat = os.fstat(self._fd)
        else:
            self._copy_remote()

    def open(self) -> pa.NativeFile:
        """A random-access file over the pinned bytes, with its own position. A local file of
        at most `WHOLE_FILE` bytes is read into memory once (one pread) and decoded from there:
        pyarrow then reads natively, where a file object calls back into Python (taking the GIL)
        for every read, a quarter more CPU and no decoding in parallel; a larger one is read
        through such a file object, so memory stays bounded whatever the file's size."""
        if self._buffer is not None:
            return pa.BufferReader(self._buffer)
        assert self._fd is not None
        if self._stat.st_size <= WHOLE_FILE:
            self._buffer = pa.py_buffer(self._read_whole())
            return pa.BufferReader(self._buffer)
        return pa.PythonFile(_PreadFile(self._fd, self._stat.st_size), mode="r")

    def _read_whole(self) -> bytearray:
        """Every byte of the pinned local file (fewer if it was cut short meanwhile: the
        decoder then fails and `changed()` says why)."""
        assert self._fd is not None
        data = bytearray(self._stat.st_size)
        view, offset = memoryview(data), 0
        while offset < len(data):
            n = os.preadv(self._fd, [view[offset:]], offset)
            if not n:
                del view
                return data[:offset]
            offset += n
        return data

    @property
    def identity(self) -> Stat | None:
        """What the stat cache knows a local file by: size, mtime, ctime, inode, device."""
        if self._fd is None or self._in_memory:
            return None
        st = self._stat
        return Stat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def vouch(self, digest: str) -> None:
        """Take `digest` without hashing: the file open here is, by its identity, the very
        file the stat cache hashed (a verified snapshot); `changed()` still guards the read."""
        if self._thread is None and self._digest is None:
            self._digest = digest
            self._size = self._stat.st_size  # the vouched file's: manifests of reads need it

    def start_hashing(self) -> None:
        """Hash the pinned file in a thread (once), while the caller decodes it."""
        if self._fd is not None and self._thread is None and self._digest is None:
            self._thread = threading.Thread(target=self._hash_local, daemon=True,
                                            name="buildenv-gate-hash")
            self._thread.start()

    def _hash_local(self) -> None:
        assert self._fd is not None
        hasher = ALGORITHMS[self.algorithm]()
        offset = 0
        buffer = bytearray(CHUNK)  # one buffer, reused: no allocation per chunk
        view = memoryview(buffer)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while not self._cancel.is_set():
                n = os.preadv(self._fd, [buffer], offset)
                if not n:
                    break
                hasher.update(view[:n])
                offset += n
            self._size = offset
            self._digest = f"{self.algorithm}:{hasher.hexdigest()}"
        except BaseException as exc:  # re-raised by digest()
            self._error = exc

    def _copy_remote(self) -> None:
        hasher = ALGORITHMS[self.algorithm]()
        parts = []
        with self.location.open() as stream:
            while True:
                chunk = stream.read_buffer(CHUNK)
                if chunk.size == 0:
                    break
                hasher.update(memoryview(chunk))
                parts.append(chunk.to_pybytes())
        data = b"".join(parts)
        self._size = len(data)
        self._buffer = pa.py_buffer(data)
        self._digest = f"{self.algorithm}:{hasher.hexdigest()}"

    def digest(self) -> str:
        """The digest of every byte (waits for the hashing thread). Raises `Changed` when a
        local file was written while it was read."""
        self.start_hashing()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        if self.changed():  # checked after every pass, not only the first
            raise Changed()
        assert self._digest is not None
        return self._digest

    def changed(self) -> bool:
        """Whether the pinned local file was written since it was opened. Any write moves
        mtime and ctime; ctime also moves when the path is replaced (the old file loses its
        link), which changes nothing we read, so then size and mtime decide."""
        if self._fd is None:
            return False
        now, before = os.fstat(self._fd), self._stat
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return True
        return now.st_nlink == before.st_nlink and now.st_ctime_ns != before.st_ctime_ns

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffer = None


class Changed(Exception):
    """The file was written while it was being read."""


class _PreadFile(io.RawIOBase):
    """A read-only view of a shared descriptor with a position of its own: every read is a
    pread, so several readers (decoders, the hashing thread) never move each other's offset,
    and nothing re-opens the file by a path (which a sandbox may not show)."""

    def __init__(self, fd: int, size: int):
        super().__init__()
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        count = os.preadv(self._fd, [buffer], self._pos)
        self._pos += count
        return count

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data
