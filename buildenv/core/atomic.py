"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from buildenv.core.mutex import dir_mutex
from buildenv.core.tempdirs import (
    owned_temp_dir,
    owned_temp_file,
    record_made,
    remove_empty,
    sweep,
)

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text", "create_new_text",
           "install_dir"]


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True,
                       scratch: Path | None = None) -> None:
    """Replace `path` with `data` in one step. `durable=False` skips the fsync, for caches
    only: a crash may then leave the old file, or an unreadable one (a cache miss), but a
    reader still never sees half of the new one.

    The temp file is named by its owner process (`core.tempdirs`): what a killed writer
    leaves is removed by a sweep. It is written in `scratch` (a directory on the same
    filesystem that the caller sweeps) when given, else beside `path`; then this write first
    removes the temp files of `path` that killed writers left beside it (a lock killed while it
    wrote `.buildenv/lockplan.json`): this user's, named for this file, owner gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        sweep(path.parent, path.name)  # dead writers' temp files of this target only
    fd, tmp = owned_temp_file(scratch or path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno != errno.EXDEV or scratch is None:
            raise
        atomic_write_bytes(path, data, durable=durable)  # scratch on another filesystem
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True,
                      scratch: Path | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, scratch=scratch)


def create_new_text(path: Path, text: str) -> bool:
    """Write a file that must not exist yet, complete or not at all: the text goes to a temp
    file that is then hard-linked into place, which fails if `path` appeared meanwhile.
    False (and nothing written) when `path` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent, path.name)  # what writers killed before their link left
    fd, tmp = owned_temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path, scratch: Path | None = None) -> Iterator[Path]:
    """Yield an empty temp dir; on success it replaces `final` in one rename.

    The temp dir lives in `scratch` (e.g. `.buildenv/tmp/`) when that is on the same
    filesystem as `final`, else beside `final`; its name records the owning process. A
    process killed inside the block leaves only that temp dir, which a later run removes
    once its owner is gone (never a directory another process is still writing). `final`
    is either the old complete directory or the new one. A block that fails also removes
    the (empty) parents of `final` it created: a failed `dist/<training>/<env>` leaves no
    `dist/<training>/` behind (nothing partial), and a parent that existed stays as it was.
    With `scratch`, those parents are recorded there first: a block killed outright (SIGKILL)
    cannot remove them, and the next sweep of `scratch` (the next build's) does, if empty.
    """
    made = _missing_parents(final)
    record = record_made(scratch, made) if made and scratch is not None else None
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        parent = _temp_parent(final, scratch)
        sweep(parent)
        if parent != final.parent:
            sweep(final.parent)  # left there by an older buildenv or a fallback
        tmp = owned_temp_dir(parent, final.name)
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the result private
        install_dir(tmp, final)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(made)
        raise
    finally:
        if record is not None:
            record.unlink(missing_ok=True)


def _missing_parents(final: Path) -> list[Path]:
    """The parents of `final` that do not exist yet, deepest first."""
    missing = []
    for parent in final.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def install_dir(source: Path, final: Path) -> None:
    """Move directory `source` to `final` (same filesystem), replacing what is there.

    Where the kernel can exchange two paths (Linux renameat2), readers never see `final`
    missing; otherwise the old directory is moved aside for an instant. Concurrent
    installs into one parent directory are serialised.
    """
    for attempt in range(3):  # a failed build beside this one may remove an empty parent
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            _install(source, final)
            return
        except FileNotFoundError:
            if attempt == 2 or final.parent.exists() or not source.exists():
                raise


def _install(source: Path, final: Path) -> None:
    with dir_mutex(final.parent):
        if not final.exists():
            os.replace(source, final)
            return
        if _exchange(source, final):
            shutil.rmtree(source, ignore_errors=True)  # now holds the old directory
            return
        old = owned_temp_dir(source.parent, final.name)
        os.replace(final, old)  # onto the empty dir just made
        os.replace(source, final)
        shutil.rmtree(old, ignore_errors=True)


def _temp_parent(final: Path, scratch: Path | None) -> Path:
    if scratch is None:
        return final.parent
    try:
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)  # private: rows may pass by
        if scratch.stat().st_dev == final.parent.stat().st_dev:
            return scratch
    except OSError:
        pass
    return final.parent


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the platform cannot."""
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _renameat2() -> Callable[..., int] | None:
    global _RENAMEAT2
    if _RENAMEAT2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            func = libc.renameat2
            func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_uint]
            func.restype = ctypes.c_int
            _RENAMEAT2 = func
        except (OSError, AttributeError):
            _RENAMEAT2 = False
    return _RENAMEAT2 or None


_RENAMEAT2: Callable[..., int] | Literal[False] | None = None  # False: the libc has none
