"""Landlock: a process takes away its own access to files (and, from ABI 4, TCP ports).

Linux 5.13+ with the Landlock LSM enabled. A ruleset lists what stays allowed beneath given
paths; everything else of the handled kinds is denied (EACCES) to the calling thread and to
every process it starts, for good. `restrict_self` acts on the calling thread only (before
ABI 8), so callers restrict before any thread exists. Rules bind to the inode and mount a path
names now: a file reached another way (a descriptor re-opened through /proc/self/fd) is judged
by where it really lives. Landlock never restricts `stat` or path lookup itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat

__all__ = ["LandlockError", "abi", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # one number on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a file rule may hold
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
READ = EXECUTE | READ_FILE | READ_DIR


class LandlockError(OSError):
    """Landlock is unavailable or refused a ruleset."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when there is none (an old kernel, the LSM
    not enabled, or a seccomp profile that blocks the syscalls)."""
    try:
        found = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                                ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return int(found) if found > 0 else 0


def _fs_rights(version: int) -> int:
    """Every filesystem right the ABI knows: 13 in ABI 1, REFER in 2, TRUNCATE in 3,
    IOCTL_DEV in 5."""
    bits = 13 + (version >= 2) + (version >= 3) + (version >= 5)
    return (1 << bits) - 1


def restrict(read: list[str], list_only: list[str], write: list[str], *,
             deny_tcp: bool) -> int:
    """Allow reading (and executing) beneath `read`, listing `list_only` directories, and
    everything beneath `write`; deny every other file access, and TCP bind/connect when
    `deny_tcp` (ABI 4+). Signals and abstract unix sockets stay inside (ABI 6+). Sets
    no_new_privs. Returns the ABI used; LandlockError when it cannot apply."""
    libc = _libc()
    version = abi()
    if not version:
        raise LandlockError("Landlock is not available")
    handled = _fs_rights(version)
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if deny_tcp and version >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if version >= 6 else 0
    attr = _RulesetAttr(handled, net, scoped)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        for paths, rights in ((read, READ), (list_only, READ_DIR), (write, handled)):
            for path in paths:
                _add(libc, ruleset, path, rights & handled)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: required to restrict
            raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return version


def _add(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
            if not rights:
                return
        rule = _PathBeneath(rights, fd)
        if libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            raise _error(f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def _error(what: str) -> LandlockError:
    code = ctypes.get_errno()
    return LandlockError(code, f"{what}: {os.strerror(code)}")
