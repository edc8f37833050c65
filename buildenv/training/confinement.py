"""The runner's side of the sandbox: confine this process first thing, then tell what the
training tried that the sandbox refused, at the user's line (docs/sandbox.md).

`Guard.enter` applies the request's `Confinement` (capabilities, sockets, Landlock) while the
runner is still single-threaded, makes the runner the subreaper of whatever the training
starts, and installs an audit hook that notes attempts the sandbox refuses: opening a hidden
path or one outside the sandbox, writing outside the output, reaching the network, running
`mount`/`umount` or a program named with a hidden path. The hook only explains; the sandbox
(namespaces, Landlock, seccomp) is what refuses, for child processes and native code too.

`explain` turns a training's exception caused by a refusal into BE322 (hidden or outside
path), BE323 (a write), BE324 (the network) or BE327 (mounts); `swallowed` reports a direct
data access the training caught (the build still fails: data comes through `ctx` only);
`reap` stops what the training left running (BE328, a warning).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildenv.core import process_tree
from buildenv.core.confine import Confinement, apply
from buildenv.training.user_frames import current_frame, exception_frame

__all__ = ["Guard", "refused", "swallowed"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.listdir": 0, "os.scandir": 0, "os.mkdir": 0, "os.remove": 0,
                "os.rmdir": 0, "os.rename": 0, "os.replace": 0, "os.truncate": 0,
                "os.chmod": 0, "os.symlink": 1, "os.link": 1, "shutil.rmtree": 0}
_MUTATING = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.replace", "os.truncate",
             "os.chmod", "os.symlink", "os.link", "shutil.rmtree"}
_MOUNT_TOOLS = {"mount", "umount", "unshare", "nsenter", "chroot", "pivot_root", "fusermount",
                "fusermount3", "capsh", "setpriv"}
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED,
                   errno.EAFNOSUPPORT}
_LIMIT = 64  # attempts kept
_EVENTS = {"open", *_PATH_EVENTS, "socket.__new__", "socket.connect", "socket.sendto",
           "socket.getaddrinfo", "socket.gethostbyname", "subprocess.Popen", "os.exec",
           "os.posix_spawn", "os.system"}


@dataclass(frozen=True)
class Attempt:
    kind: str  # data | outside | write | network | mount
    path: str | None  # absolute: what was opened (or what a program's arguments name)
    detail: str | None  # an address, a host, a program's command line
    where: tuple[str | None, int | None, list[str]]


class Guard:
    active: Guard | None = None
    """The guard this process entered (the sources runner's jobs ask it)."""

    def __init__(self, spec: dict, root: Path, own: Path):
        self.root, self.own = root, own
        self.subject = "the training"
        """Who the diagnostics name: the training, a derived dataset's transform, ..."""
        self.hidden = tuple(spec["hidden"])  # data: datasets, exports, locks, state
        self.private = tuple(spec.get("private") or ())  # credentials, the machine's secrets
        self.readable = tuple(spec["readable"])
        # the interpreter's own trees shown inside a hidden one (a toolchain in `.buildenv/`)
        self.inner = tuple(spec.get("inner") or ())
        self.writable = tuple(spec["writable"])
        self.network = bool(spec["network"])
        self.loopback = bool(spec["loopback"])  # a private network namespace
        # every file the training (and each import) opens passes `_kind`: prefix tuples,
        # matched by one C-level startswith each, instead of a Python loop per tree
        self._private, self._hidden = _Trees(self.private), _Trees(self.hidden)
        self._writable, self._readable = _Trees(self.writable), _Trees(self.readable)
        self._inner = _Trees(self.inner)
        self.attempts: list[Attempt] = []
        self.applied: dict = {}
        self._restricted = False  # set once the training read restricted data

    @classmethod
    def enter(cls, spec: dict | None, root: Path) -> Guard | None:
        """Confine this process as `spec` (the request's `sandbox`) says; None without one."""
        if not spec:
            return None
        guard = cls(spec, root, Path(__file__).resolve().parents[1])
        guard.applied = apply(Confinement.from_json(spec["confinement"]))
        process_tree.become_subreaper()
        sys.addaudithook(guard._hook)
        cls.active = guard
        return guard

    # --- noting attempts ------------------------------------------------------------------
    @contextmanager
    def unnoted(self) -> Iterator[None]:
        """buildenv's own calls in the training process (the pre-check's process and its
        channel): what they open is not an attempt of the training's."""
        noted = len(self.attempts)
        try:
            yield
        finally:
            del self.attempts[noted:]

    def _hook(self, event: str, args: tuple) -> None:
        if len(self.attempts) >= _LIMIT or event not in _EVENTS:
            return
        try:
            self._event(event, args)
        except Exception:  # an audit hook's error would break the audited call
            pass

    def _event(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (args + (None, None))[:3]
            writing = bool(flags and flags & _WRITE_FLAGS) or \
                (isinstance(mode, str) and any(c in mode for c in "wax+"))
            self._path(path, writing)
        elif event in _PATH_EVENTS:
            listing = event in ("os.listdir", "os.scandir")
            self._path(args[_PATH_EVENTS[event]] if args else ".", event in _MUTATING,
                       listing)
        elif event == "socket.__new__" and not self.network and not self.loopback:
            if len(args) > 1 and args[1] in (socket.AF_INET, socket.AF_INET6):
                self._note("network", None, "open a network socket")
            elif len(args) > 1 and args[1] == socket.AF_UNIX:  # refused under Landlock alone
                self._note("network", None, "open a unix socket (one could reach a service "
                           "of the host, such as Docker's)")
        elif event in ("socket.connect", "socket.sendto") and not self.network:
            self._address(args[1] if len(args) > 1 else None)
        elif event in ("socket.getaddrinfo", "socket.gethostbyname") and not self.network:
            host = args[0] if args else None
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if isinstance(host, str) and host not in ("localhost", "127.0.0.1", "::1", ""):
                self._note("network", None, f"resolve '{host}'")
        elif event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"):
            self._program(event, args)

    def _path(self, path: Any, writing: bool, listing: bool = False) -> None:
        if isinstance(path, int):
            return
        try:
            text = os.fsdecode(path if path is not None else ".")
        except (TypeError, ValueError):
            return
        full = os.path.abspath(text)  # relative to the working directory, like the call
        kind = self._kind(full, writing)
        if kind is not None and not (listing and kind == "outside"):  # imports list dirs
            self._note(kind, full, None)

    def _kind(self, full: str, writing: bool) -> str | None:
        if self._other_process(full) or self._private.holds(full):
            return "outside"
        if self._writable.holds(full):  # a source's output lies in buildenv's hidden state
            return None
        if self._hidden.holds(full) and not self._inner.holds(full):
            return "data"
        if not self._readable.holds(full):
            return "outside"
        return "write" if writing else None

    @staticmethod
    def _other_process(full: str) -> bool:
        """/proc/<pid>/... of another process: its view of the filesystem, its memory."""
        if not full.startswith("/proc/"):
            return False
        parts = full.split("/")
        return len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit() and \
            int(parts[2]) != os.getpid() and parts[3] in ("root", "cwd", "fd", "environ",
                                                            "mem", "map_files", "exe")

    def _address(self, address: Any) -> None:
        if isinstance(address, (str, bytes)) and address and address[:1] not in ("\0", b"\0"):
            path = os.path.abspath(os.fsdecode(address))
            if self._kind(path, False) is not None:  # a host's service (the docker socket)
                self._note("network", None, f"connect to the unix socket '{path}'")
            return
        if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
            return
        host = address[0]
        local = host in ("localhost", "::1") or host.startswith("127.")
        port = address[1] if len(address) > 1 else ""
        if local and self.loopback:
            self._note("network", None, f"connect to {host}:{port} (the sandbox's own "
                       "loopback: no server of the host is there)")
        else:
            self._note("network", None, f"connect to {host}:{port}")

    def _program(self, event: str, args: tuple) -> None:
        argv: list[Any]
        if event == "os.system":
            argv = [str(args[0])] if args else []
        else:
            raw = args[1] if len(args) > 1 else None
            argv = [raw] if isinstance(raw, (str, bytes)) else list(raw or [])
        words = [os.fsdecode(a) for a in argv if isinstance(a, (str, bytes, os.PathLike))]
        line = " ".join(words)
        tool = os.path.basename(line.split()[0]) if line.split() else ""
        if tool in _MOUNT_TOOLS:
            self._note("mount", None, line)
            return
        for hole in self.hidden:
            rel = os.path.relpath(hole, self.root)
            names = [hole] + ([rel] if not rel.startswith("..") else [])
            if any(name in line for name in names):
                self._note("data", hole, line)
                return

    def _note(self, kind: str, path: str | None, detail: str | None) -> None:
        self.attempts.append(Attempt(kind, path, detail, current_frame(self.root, self.own)))

    def _what(self, attempt: Attempt) -> str:
        """An attempt as the user reads it; after restricted reads, a program's arguments
        and the part of a path below what the sandbox hides are left out (they could have
        been built from row values)."""
        if attempt.kind in ("mount", "data") and attempt.detail is not None:
            line = attempt.detail
            if self._restricted:
                line = line.split()[0] + " …" if line.split() else line
            named = f", which names '{self._shown(attempt.path)}'" if attempt.path else ""
            # the program by its name: an interpreter's path (a toolchain's is long) would
            # push what the command names out of the shown part
            program, _, rest = line.partition(" ")
            shown = " ".join(filter(None, (os.path.basename(program), rest)))
            return f"run `{shown[:120]}`{named}"
        if attempt.path is not None:
            return self._shown(attempt.path)
        return attempt.detail or ""

    def _shown(self, full: str) -> str:
        """A path as the user wrote it, relative to the root when inside; after restricted
        reads only the hidden (or outer) part, in case the rest was built from row values."""
        if self._restricted:
            hole = next((h for h in self.hidden if _under(full, h)), None)
            full = hole if hole is not None else "/".join(full.split("/")[:2]) + "/…"
        rel = os.path.relpath(full, self.root)
        return full if rel.startswith("..") else rel

    # --- reporting ------------------------------------------------------------------------
    def explain(self, exc: BaseException, restricted: bool) -> dict | None:
        """The diagnostic for an exception the sandbox caused; None when it did not."""
        self._restricted = restricted
        chain, seen = [], set()
        item: BaseException | None = exc
        while item is not None and id(item) not in seen:
            seen.add(id(item))
            chain.append(item)
            item = item.__cause__ or item.__context__
        for err in chain:
            found = self._from_error(err)
            if found is not None:
                kind, what, located = found
                return self._diag(kind, what, located if located[0] else
                                  exception_frame(exc, self.root, self.own))
        kinds = ("data", "mount", "network") if isinstance(exc, OSError) else \
            ("data", "mount")  # a failed program, say: what it tried explains it
        for kind in kinds:
            attempt = next((a for a in self.attempts if a.kind == kind), None)
            if attempt is not None:
                return self._diag(kind, self._what(attempt), attempt.where)
        return None

    def _from_error(self, err: BaseException) -> tuple[str, str, Any] | None:
        empty: tuple[None, None, list[str]] = (None, None, [])
        if isinstance(err, socket.gaierror) and not self.network:
            attempt = next((a for a in reversed(self.attempts) if a.kind == "network"), None)
            return "network", self._what(attempt) if attempt else "resolve a host name", \
                attempt.where if attempt else empty
        if not isinstance(err, OSError):
            return None
        if err.filename is not None and not isinstance(err.filename, int):
            full = os.path.abspath(os.fsdecode(err.filename))
            match = next((a for a in self.attempts if a.path == full), None)
            if match is not None:
                return match.kind, self._what(match), match.where
            if err.errno == errno.EROFS or (err.errno in (errno.EACCES, errno.EPERM) and
                                            self._kind(full, False) is None):
                return "write", self._shown(full), empty
            kind = self._kind(full, False)
            return (kind, self._shown(full), empty) if kind else None
        named = [a for a in err.args if isinstance(a, str)] + re.findall(r"'([^']+)'", str(err))
        for text in named:  # pandas and pyarrow name the file in the message
            full = os.path.abspath(text.strip())
            if self._kind(full, False) == "data":
                return "data", self._shown(full), empty
        if not self.network and (err.errno in _NETWORK_ERRNOS or isinstance(err, (
                ConnectionError, TimeoutError)) or err.errno == errno.EACCES):
            attempt = next((a for a in reversed(self.attempts) if a.kind == "network"), None)
            if attempt is not None:
                return "network", self._what(attempt), attempt.where
        return None

    def swallowed(self, restricted: bool) -> list[dict]:
        """Direct data accesses the training caught and went on from: still an error."""
        self._restricted = restricted
        attempt = next((a for a in self.attempts if a.kind == "data"), None)
        return [self._diag("data", self._what(attempt), attempt.where)] if attempt else []

    def _diag(self, kind: str, what: str, where: Any) -> dict:
        path, line, trail = where
        hints = [f"called from {t}" for t in trail[:-1]]
        if kind == "data":
            code = "BE322"
            action = f"tried to {what}" if what.startswith("run ") else \
                f"opened '{what}' directly"
            message = (f"{self.subject} {action}: the sandbox hides dataset files, label "
                       "exports, locks and buildenv's state")
            hints.insert(0, "read data through ctx.read(...) or ctx.scan(...) (and labels "
                         "through ctx.labels())")
        elif kind == "outside":
            code = "BE322"
            message = (f"{self.subject} opened '{what}', which the sandbox does not show: it "
                       "sees the repository, its Python environment and system directories")
            hints.insert(0, "declare extra read-only paths in the training's `sandbox` table "
                         "(`read_only = [...]`)" if self.subject == "the training" else
                         "code-made sources read their declared inputs through ctx, and "
                         "the repository's code; nothing else")
        elif kind == "write":
            code = "BE323"
            message = (f"{self.subject} wrote to '{what}': in the sandbox only its output "
                       "and a private temporary directory (TMPDIR, HOME) are writable")
            hints.insert(0, "write scratch files under tempfile.gettempdir(); the model is "
                         "what train(ctx) returns")
        elif kind == "network":
            code = "BE324"
            message = f"{self.subject} tried to {what}: the sandbox has no network"
            hints.insert(0, 'if the training must reach the network, declare `network = '
                         '"allow"` and a `reason` in its `sandbox` table (not with restricted '
                         'data)' if self.subject == "the training" else
                         "code-made sources never reach the network: declare what they need "
                         "as a dataset and read it through ctx")
        else:
            code = "BE327"
            message = f"{self.subject} tried to {what}: mounts and namespaces cannot change " \
                      "inside the sandbox"
            hints.insert(0, "the sandbox's view of the filesystem is fixed when it starts")
        return {"code": code, "message": message, "path": path, "line": line, "col": None,
                "severity": "error", "hints": hints}

    def reap(self) -> dict | None:
        """Kill what the training left running, and reap it. Processes that left the
        runner's session (to outlive it) are reported: BE328, a warning."""
        session = os.getsid(0)
        detached = 0
        for pid in process_tree.descendants(os.getpid()):
            try:
                detached += os.getsid(pid) != session
            except OSError:
                pass
        process_tree.kill_tree(os.getpid(), include_root=False)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not detached:
            return None
        return {"code": "BE328", "message": f"{self.subject} left {detached} process(es) running "
                "in a session of their own; they were stopped", "path": None, "line": None,
                "col": None, "severity": "warning",
                "hints": ["wait for the processes a training starts (join pools, use context "
                          "managers)"]}


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


class _Trees:
    """Whether a path is one of some trees or inside one (`_under` any of them), fast."""

    def __init__(self, trees: tuple[str, ...]):
        self._exact = frozenset(trees)
        self._prefixes = tuple(tree.rstrip("/") + "/" for tree in trees)

    def holds(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)


def refused(exc: BaseException, restricted: bool, where: str = "") -> dict | None:
    """What the active sandbox refused, when `exc` comes from it (BE322-BE327), with `where`
    (the input file) added; None outside a sandbox or for another error."""
    guard = Guard.active
    denied = guard.explain(exc, restricted) if guard is not None else None
    return None if denied is None else {**denied, "message": denied["message"] + where}


def swallowed(restricted: bool, where: str = "") -> dict | None:
    """A direct data access the code caught and went on from (BE322): still an error."""
    guard = Guard.active
    found = guard.swallowed(restricted) if guard is not None else []
    return {**found[0], "message": found[0]["message"] + where} if found else None
