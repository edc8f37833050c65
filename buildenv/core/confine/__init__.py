"""Confining the calling process with what the Linux kernel offers without privileges:
capabilities dropped (`capabilities`), sockets limited to a few address families (`seccomp`),
and files limited to an allow-list (`landlock`).

`Confinement` says what stays allowed; `apply` installs it on the calling process, which must
still be single-threaded (both seccomp and Landlock bind the calling thread and what it starts
afterwards), and reports what applied. Every child process inherits all of it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from buildenv.core.confine import capabilities, landlock, seccomp

__all__ = ["Confinement", "ConfinementError", "apply", "thread_count"]


class ConfinementError(Exception):
    """The confinement asked for could not be installed (nothing ran unconfined after it)."""


@dataclass(frozen=True)
class Confinement:
    """What a confined process may still do. Paths are absolute."""

    read: tuple[str, ...]
    """Trees it may read and execute."""
    list_only: tuple[str, ...]
    """Directories it may list, but not read files in (ancestors of hidden paths)."""
    write: tuple[str, ...]
    """Trees it may read and change (its output, its private temporary directory)."""
    sockets: tuple[str, ...] | None
    """Address families `socket()` may create (`unix`, `inet`, `inet6`, `netlink`); None: any
    (the network is allowed). Pipes, socketpairs and inherited sockets always work."""
    tcp_rules: bool
    """Whether Landlock also denies TCP bind and connect (when IP is closed)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Confinement:
        sockets = data.get("sockets")
        return cls(tuple(data["read"]), tuple(data["list_only"]), tuple(data["write"]),
                   None if sockets is None else tuple(sockets), bool(data["tcp_rules"]))


def thread_count() -> int:
    """Threads of this process, native ones included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


_FAMILIES = {"unix": socket.AF_UNIX, "inet": socket.AF_INET, "inet6": socket.AF_INET6,
             "netlink": socket.AF_NETLINK}


def apply(confinement: Confinement) -> dict[str, Any]:
    """Drop capabilities, then restrict sockets, then files. Returns what applied
    (`landlock` ABI, `seccomp`); ConfinementError when any part fails."""
    if thread_count() != 1:
        raise ConfinementError("the process already runs threads: they would stay unconfined")
    try:
        capabilities.drop_all()
        if confinement.sockets is not None:
            seccomp.restrict_sockets(_FAMILIES[name] for name in confinement.sockets)
        version = landlock.restrict(list(confinement.read), list(confinement.list_only),
                                    list(confinement.write), deny_tcp=confinement.tcp_rules)
    except OSError as exc:
        raise ConfinementError(str(exc)) from None
    return {"landlock": version, "seccomp": confinement.sockets is not None}
