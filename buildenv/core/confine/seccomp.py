"""A seccomp filter that keeps a process (and its children) off the network by construction:
`socket()` succeeds only for the address families given (unix sockets, and IP only where a
private network namespace makes it loopback-only), `io_uring_setup` fails (io_uring can open
sockets without calling `socket()`), and so do x32 system calls on x86_64 and calls made
through another architecture's ABI. Refused calls fail with EACCES; `socketpair()` and
inherited sockets keep working.

Like Landlock it binds the calling thread and what it starts: install it before threads.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
from collections.abc import Iterable

__all__ = ["SeccompError", "program", "restrict_sockets", "supported"]

# audit architecture, __NR_socket, __NR_io_uring_setup
_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
_X32_BIT = 0x40000000

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_DENY = 0x00050000 | errno.EACCES  # SECCOMP_RET_ERRNO
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (little endian)


class SeccompError(OSError):
    """The filter could not be installed."""


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


def supported() -> bool:
    """Whether this machine's architecture has a filter here."""
    return platform.machine() in _ARCH


def program(families: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """The BPF instructions (code, jump-if-true, jump-if-false, constant)."""
    arch, nr_socket, nr_io_uring = _ARCH[platform.machine()]
    allowed = sorted(set(families))
    prog = [(_LD_W_ABS, 0, 0, _OFFSET_ARCH), (_JEQ_K, 1, 0, arch), (_RET_K, 0, 0, _KILL_PROCESS),
            (_LD_W_ABS, 0, 0, _OFFSET_NR)]
    if platform.machine() == "x86_64":
        prog.append((_JGE_K, 0, 1, _X32_BIT))
        prog.append((_RET_K, 0, 0, _DENY))
    prog += [(_JEQ_K, 0, 1, nr_io_uring), (_RET_K, 0, 0, _DENY),
             (_JEQ_K, 0, len(allowed) + 2, nr_socket),  # not socket(): to the final ALLOW
             (_LD_W_ABS, 0, 0, _OFFSET_ARG0)]
    for index, family in enumerate(allowed):  # an allowed family jumps over the DENY
        prog.append((_JEQ_K, len(allowed) - index, 0, family))
    prog += [(_RET_K, 0, 0, _DENY), (_RET_K, 0, 0, _ALLOW)]
    return prog


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def restrict_sockets(families: Iterable[int]) -> None:
    """Install the filter on the calling thread (inherited by every process it starts)."""
    if not supported():
        raise SeccompError(f"no seccomp filter for the {platform.machine()} architecture")
    prog = program(families)
    array = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), array)
    libc = _libc()
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        raise _error("prctl(PR_SET_SECCOMP)")


def _error(what: str) -> SeccompError:
    code = ctypes.get_errno()
    return SeccompError(code, f"{what}: {os.strerror(code)}")
