"""Dropping every Linux capability of the calling process, for good.

Root without capabilities is still uid 0 (it owns root's files), but cannot override file
permissions, trace other processes or read their environment, mount, or regain capabilities
by executing a program (no_new_privs is set first). The bounding set is emptied when this
process may (CAP_SETPCAP); inside bubblewrap it already is.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

__all__ = ["CapabilityError", "drop_all"]

_CAPSET = {"x86_64": 126, "aarch64": 91}
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_PR_SET_NO_NEW_PRIVS = 38
_VERSION_3 = 0x20080522


class CapabilityError(OSError):
    """Capabilities could not be dropped."""


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def drop_all() -> None:
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            last = int(handle.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):  # EPERM without CAP_SETPCAP: the set is someone else's to empty
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    number = _CAPSET.get(platform.machine())
    if number is None:
        raise CapabilityError(f"capset is not known on {platform.machine()}")
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()  # two words of zeros: no capability
    if libc.syscall(number, ctypes.byref(header), data) != 0:
        raise _error("capset")


def _error(what: str) -> CapabilityError:
    code = ctypes.get_errno()
    return CapabilityError(code, f"{what}: {os.strerror(code)}")
