"""The sandboxed side of the gate: dataset bytes arrive as descriptors the build hands over.

Inside the training's sandbox no dataset, label export, lock or state directory is visible
at its path. The build process (`broker.Broker`) holds the other end of a socket the training
inherits (`BUILDENV_HANDOVER_FD`): `open_pinned` asks it for a read-only descriptor of one file
the lock pins (a sealed in-memory copy for a remote object), `vouched` for the digest its stat
cache holds for exactly that file, and `audit` to append a record of a restricted read to the
audit log, which happens before the rows are handed to the training; `ask` reaches the other
services the build offers (the privacy budget ledger, remembered releases). Only the process
the build started may ask (a forked worker shares the socket and would read its replies); a
process it forks on purpose (the pre-check's, `training.precheck_fork`) asks through a channel of
its own (`pair`, `use`), whose requests the training process forwards (`relay`).

Messages are JSON, one per datagram (SOCK_SEQPACKET); a descriptor travels with its reply.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from typing import Any

from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["ENV_VAR", "MAX_MESSAGE", "active", "ask", "audit", "open_pinned", "pair", "relay",
           "use", "vouched"]

ENV_VAR = "BUILDENV_HANDOVER_FD"
MAX_MESSAGE = 1 << 17  # under the kernel's default socket buffer (208 KiB)

_lock = threading.Lock()
_channel: tuple[int, socket.socket] | None = None  # (owner pid, socket)


def active() -> bool:
    """Whether this process reads through handed-over descriptors (it runs sandboxed)."""
    return ENV_VAR in os.environ


def _socket() -> socket.socket:
    global _channel
    if _channel is None:
        fd = int(os.environ[ENV_VAR])
        os.set_inheritable(fd, False)  # programs the training runs do not get it
        _channel = (os.getpid(), socket.socket(fileno=fd))
    if _channel[0] != os.getpid():
        raise PermissionError(errno.EPERM, "read data in the training process: a forked worker "
                              "cannot ask the build for dataset files")
    return _channel[1]


def pair() -> tuple[socket.socket, socket.socket]:
    """(this process's end, the forked process's end) of a channel like the build's."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def use(sock: socket.socket) -> None:
    """In a process forked on purpose: ask through `sock`, which the parent `relay`s, instead
    of the build's channel (which only the parent may use)."""
    global _channel, _lock
    _lock = threading.Lock()  # the parent's may have been held by a thread the fork left behind
    _channel = (os.getpid(), sock)


def relay(sock: socket.socket) -> None:
    """Forward each request arriving on `sock` (the parent's end of `pair`) to the build, and
    its reply (with its descriptor) back, until the forked process closes its end. The build
    sees the requests as this process's own: the same checks, the same audit records."""
    with sock:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
            except OSError:
                return
            for fd in fds:  # a request carries no descriptor
                os.close(fd)
            if not message:
                return
            try:
                with _lock:
                    channel = _socket()
                    channel.sendall(message)
                    reply, got, _, _ = socket.recv_fds(channel, MAX_MESSAGE, 1)
            except OSError:
                return  # the forked process sees its channel close, as when the build goes
            try:
                if got:
                    socket.send_fds(sock, [reply], got)
                else:
                    sock.sendall(reply)
            except OSError:
                return
            finally:
                for fd in got:
                    os.close(fd)


def _call(request: dict[str, Any], want_fd: bool = False) -> tuple[dict[str, Any], int | None]:
    message = json.dumps(request).encode()
    if len(message) > MAX_MESSAGE:
        raise OSError(errno.EMSGSIZE, f"a request to the build of {len(message)} bytes is "
                      f"more than {MAX_MESSAGE}")
    with _lock:
        sock = _socket()
        sock.sendall(message)
        message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1 if want_fd else 0)
    if not message:
        raise ConnectionError("the build process closed the data channel")
    reply = json.loads(message)
    fd = fds[0] if fds else None
    if not isinstance(reply, dict) or (fd is None and want_fd and reply.get("ok")):
        raise ConnectionError("malformed reply on the data channel")
    return reply, fd


def open_pinned(key: str) -> tuple[int, bool]:
    """A read-only descriptor of the pinned file known by `key` (a location key), and whether
    it is an in-memory copy (a remote object). OSError, as `open` would raise, when the build
    refuses (not a file this build pins) or cannot open it."""
    reply, fd = _call({"op": "open", "key": key}, want_fd=True)
    if not reply.get("ok"):
        code = int(reply.get("errno") or errno.EACCES)
        raise OSError(code, str(reply.get("error") or os.strerror(code)), key)
    assert fd is not None
    return fd, bool(reply.get("memory"))


def vouched(key: str, algorithm: str, fmt: str) -> str | None:
    """The digest the lock's stat cache holds for the file handed over as `key`, if it still
    is the very file the cache hashed."""
    reply, _ = _call({"op": "vouch", "key": key, "algorithm": algorithm, "format": fmt})
    digest = reply.get("digest") if reply.get("ok") else None
    return digest if isinstance(digest, str) else None


def ask(op: str, **fields: Any) -> dict[str, Any]:
    """The build's reply to `op` (one of the services it registered for this training)."""
    reply, _ = _call({**fields, "op": op})
    return reply


def audit(record: dict[str, Any]) -> dict[str, Any]:
    """Append `record` to the audit log (the build writes it); the appended record, or
    DiagnosticError (BE801) when the log refused it."""
    reply, _ = _call({"op": "audit", "record": record})
    appended = reply.get("record")
    if reply.get("ok") and isinstance(appended, dict):
        return appended
    found = [Diagnostic.from_json(d) for d in reply.get("diagnostics") or []] or [Diagnostic(
        "BE801", "the build did not append the audit record; restricted data is not read")]
    raise DiagnosticError(found, 1)
