"""The build's side of the sandboxed gate: it opens the files the lock pins and hands the
training their descriptors (`handover` is the training's side).

A `Broker` serves one training on a socket pair: `open` for a file this build pins (a dataset
file, each file of a partitioned dataset's manifest, a label export or mapping of the
environment) answers with a read-only descriptor of a regular file, opened without following
a final symlink (never a directory: a directory descriptor would reach past the sandbox);
a remote object is copied into a sealed memory file first, so credentials and the network
stay out here. `vouch` answers from the lock's stat cache for a file it handed over, by that
file's identity as the broker opened it. `audit` appends a record of a restricted read to the
audit log of this project's data, in the state directory the broker knows (never one the
training names), and only for this environment's datasets. The build may register further
services (`services`: op name -> handler of the request, answering a JSON-able reply), for
state a higher room owns.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.handover import ENV_VAR, MAX_MESSAGE
from buildenv.data.lock.digests import CHUNK, StatCache
from buildenv.data.lock.manifest import Manifest
from buildenv.data.storage import Location, Stat, locate
from buildenv.env.spec import Environment

__all__ = ["Broker", "Service", "pinned_locations"]

Service = Callable[[dict[str, Any]], dict[str, Any]]

_SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


def pinned_locations(project: Project, env: Environment, manifests: Mapping[str, Manifest]
                     ) -> dict[str, Location]:
    """Every file a build of `env` may read, by location key: dataset files (each file of a
    partitioned dataset's or a table version's manifest), label exports and their mapping
    files."""
    uris = []
    for name, spec in env.datasets.items():
        manifest = manifests.get(name)
        if spec.uri.endswith("/") or spec.is_table:  # a table's files live under its base
            base = manifest.base if manifest is not None and manifest.base else spec.uri
            base = base if base.endswith("/") else base + "/"
            uris += [base + entry.path for entry in (manifest.files if manifest else ())]
        else:
            uris.append(spec.uri)
    for label_set in env.labels.values():
        uris.append(label_set.uri)
        uris += [reuse.mapping for reuse in label_set.reuse if reuse.mapping]
    out = {}
    for uri in uris:
        location = locate(uri, project)
        out[location.key] = location
    return out


class Broker:
    """Serves one sandboxed training; `child_fd` goes to the training (`ENV_VAR`)."""

    def __init__(self, project: Project, env: Environment, allowed: dict[str, Location],
                 services: Mapping[str, Service] | None = None):
        self.project, self.env, self.allowed = project, env, allowed
        self._services = dict(services or {})
        self._opened: dict[str, Stat] = {}
        self._stat_cache: StatCache | None = None
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # served from `started` on: starting a thread waits for it to run, which on a busy
        # machine takes milliseconds better spent while the training starts (its requests
        # wait in the socket meanwhile)
        self._thread = threading.Thread(target=self._serve, name="buildenv-broker", daemon=True)

    @property
    def child_fd(self) -> int:
        return self._theirs.fileno()

    def child_env(self) -> dict[str, str]:
        return {ENV_VAR: str(self.child_fd)}

    def started(self, serve: bool = True) -> None:
        """The training has its end: close ours of it (its exit then ends the serving loop),
        and serve it (`serve` False: from `hand_over` on; its requests wait meanwhile)."""
        self._theirs.close()
        if serve:
            self.serve()

    def add_service(self, op: str, service: Service) -> None:
        """Answer `op` with `service` from now on (before the training is asked anything)."""
        self._services[op] = service

    def serve(self) -> None:
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def asked(self) -> bool:
        """Whether the training has sent a request not answered yet."""
        try:
            return bool(self._ours.recv(MAX_MESSAGE, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # a broken socket: not a process to hand files to

    def hand_over(self, env: Environment, allowed: dict[str, Location]) -> None:
        """Serve `env`'s files `allowed` (a process started before the build knew them)."""
        self.env, self.allowed = env, allowed
        self.serve()

    def use_socket(self, ours: socket.socket) -> None:
        """Serve the training holding the other end of `ours` (started from a recipe,
        `compile.start_recipe`) instead of the one this broker made."""
        self._ours.close()
        self._theirs.close()
        self._ours = ours

    def close(self) -> None:
        try:
            self._ours.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        self._ours.close()
        if self._theirs.fileno() >= 0:
            self._theirs.close()

    # --- serving -------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            try:
                message = self._ours.recv(MAX_MESSAGE)
            except OSError:
                return
            if not message:
                return  # the training exited
            fd = None
            try:
                request = json.loads(message)
                op = request.get("op") if isinstance(request, dict) else None
                if op == "open":
                    reply, fd = self._open(str(request.get("key")))
                elif op == "vouch":
                    reply = self._vouch(request)
                elif op == "audit":
                    reply = self._audit(request.get("record"))
                elif isinstance(op, str) and op in self._services:
                    reply = self._service(op, request)
                else:
                    reply = {"ok": False, "errno": errno.EINVAL, "error": f"unknown op {op!r}"}
            except (ValueError, TypeError, AttributeError) as exc:
                reply = {"ok": False, "errno": errno.EINVAL, "error": f"bad request: {exc}"}
            try:
                socket.send_fds(self._ours, [json.dumps(reply, default=str).encode()],
                                [fd] if fd is not None else [])
            except OSError:
                return
            finally:
                if fd is not None:
                    os.close(fd)

    def _service(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._services[op](request)
        except DiagnosticError as exc:
            return {"ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics]}
        except Exception as exc:  # a failed service must answer, not leave the training waiting
            return {"ok": False, "errno": errno.EIO,
                    "error": f"{op}: {type(exc).__name__}: {exc}"}

    def _open(self, key: str) -> tuple[dict[str, Any], int | None]:
        location = self.allowed.get(key)
        if location is None:
            return {"ok": False, "errno": errno.EACCES,
                    "error": "not a file this build's lock pins"}, None
        try:
            fd = self._open_local(location.local) if location.local is not None \
                else self._copy_remote(location)
        except OSError as exc:
            return {"ok": False, "errno": exc.errno or errno.EIO,
                    "error": exc.strerror or str(exc)}, None
        if location.local is not None:
            st = os.fstat(fd)
            self._opened[key] = Stat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                     st.st_dev)
        return {"ok": True, "memory": location.local is None}, fd

    @staticmethod
    def _open_local(path: Path) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        return fd

    @staticmethod
    def _copy_remote(location: Location) -> int:
        fd = os.memfd_create("buildenv-object", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with location.open() as stream:
                while True:
                    chunk = stream.read_buffer(CHUNK)
                    if chunk.size == 0:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            seals = 0
            for name in _SEALS:
                seals |= getattr(fcntl, name)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _vouch(self, request: dict[str, Any]) -> dict[str, Any]:
        identity = self._opened.get(str(request.get("key")))
        if identity is None:
            return {"ok": True, "digest": None}
        if self._stat_cache is None:
            self._stat_cache = StatCache(self.project.state_dir / "statcache.json")
        hit = self._stat_cache.get(str(request["key"]), identity, str(request.get("algorithm")),
                                   str(request.get("format")))
        return {"ok": True, "digest": hit.digest if hit is not None else None}

    def _audit(self, record: object) -> dict[str, Any]:
        if not isinstance(record, dict) or record.get("environment") != self.env.name \
                or record.get("dataset") not in self.env.datasets:
            return {"ok": False, "errno": errno.EINVAL,
                    "error": "an audit record names another environment or dataset"}
        try:
            appended = AuditLog(self.project.data_state_dir).append(**record)
        except DiagnosticError as exc:
            return {"ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics]}
        except TypeError as exc:
            return {"ok": False, "errno": errno.EINVAL, "error": f"bad audit record: {exc}"}
        return {"ok": True, "record": appended}
