"""How the last build started its transforms' process, kept to start the next one sooner.

`compile.early_runner` starts the transforms' process once the environment resolves, which
needs pydantic and the environment models (a quarter of a second of Python). The build that
last started or adopted such a process knows exactly how: its bubblewrap command, its
environment, its confinement request. `save` keeps that recipe, and the paths whose change
would make the transform stale, per derived dataset; the next `buildenv lock` (`cli.early`)
`launch`es from it before anything heavy is imported, and the build then checks the process
exactly as any early one (`early_runner.take`): a recipe that no longer matches costs a
restart, never a different sandbox. When the recipe guesses every file stale (the output is
missing, or the transform's module changed), `launch` starts the other processes a full build
of that many files uses too (`derive_claims`): they are ready when the build hands out files,
and each is checked the same way; one the build does not want is killed.

The recipe lives in the user's cache (`$XDG_CACHE_HOME/buildenv/start-recipes/`, else
`~/.cache/...`), never in the repository: a cloned repository could plant one there. It is
read only when owned by the user and writable by nobody else (its directory too), keyed by a
digest of the repository's real path, buildenv's version and the interpreter. It holds paths,
a command and an environment; never data, nor digests of it.

The recipe file itself (path, trust, staleness) is `compile.recipe_file`. Imports only the
standard library, `core.tempdirs` and `compile.derive_claims` (standard library only): it runs
before pydantic is imported.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from buildenv.compile.derive_claims import processes_for
from buildenv.compile.recipe_file import changed_since, load, recipe_path, stale, trusted, whole
from buildenv.core.process_tree import die_with_parent, kill_tree
from buildenv.core.tempdirs import owned_temp_dir, scratch_dir, sweep

__all__ = ["Started", "begin", "changed_since", "launch", "load", "others", "pending", "prune",
           "recipe_path", "save", "stale"]

_BROKER, _STATUS, _PRIVATE, _WORK = "<broker>", "<status>", "<private>", "<work>"


pending: list[Started] = []
"""The processes `begin` started (all from one entry), until `early_runner.take` adopts or
closes each."""


def begin(root: Path, names: list[str]) -> bool:
    """Start the process of the first derived dataset of the environments `names` (all:
    empty) that the recipe of the repository at `root` guesses stale (`stale`) -- and, when it
    guesses every file stale, the others a full build of it uses (`others`); whether the
    recipe answered (False: it knows none of these environments, `early_runner.begin`
    decides instead)."""
    if pending:
        return True  # already started (`cli.early.start_from_recipe`, before the quick lock)
    recipe = load(root)
    if recipe is None:
        return False
    entries = [e for e in recipe["entries"] if isinstance(e, dict)
               and (not names or e.get("environment") in names)]
    if not entries:
        return False
    for entry in entries:
        try:
            if not stale(entry):
                continue
        except (KeyError, TypeError, ValueError):
            return False
        started = launch(entry)
        if started is None:
            return False
        pending.append(started)
        atexit.register(_discard)
        try:
            more = others(entry)
        except (KeyError, TypeError, ValueError):
            more = 0
        for _ in range(more):
            other = launch(entry)
            if other is None:
                break
            pending.append(other)
        return True
    return True


def others(entry: dict[str, Any]) -> int:
    """How many processes besides the first the build of `entry`'s dataset will want, started
    now too: only when the recipe guesses every file stale (`whole`), as many as
    `derive_claims.processes_for` gives for the files the last build planned (`files`), the
    dataset's cap (`cap`) and the load now; none without a broker (the others ask it for
    their files). A one-file rebuild never gets a second interpreter it would wait for."""
    files, cap = entry.get("files"), entry.get("cap")
    if (type(files) is not int or not (cap is None or (type(cap) is int and cap >= 1))
            or not any(v == _BROKER for v in entry["env"].values()) or not whole(entry)):
        return 0
    return processes_for(files, cap) - 1


def _discard() -> None:
    while pending:
        pending.pop().close()


def save(root: Path, entry: dict[str, Any]) -> None:
    """Keep `entry` (one derived dataset's recipe, `early_runner.remember`) for the repository
    at `root`, replacing the dataset's previous one; atomically, mode 0600 in a 0700 directory.
    A cache that cannot be written only means no early start."""
    path = recipe_path(root)
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not trusted(os.stat(path.parent), True):
            return
        old = load(root) or {"entries": []}
        key = (entry.get("environment"), entry.get("dataset"))
        entries = [e for e in old["entries"] if isinstance(e, dict)
                   and (e.get("environment"), e.get("dataset")) != key]
        fd, tmp = tempfile.mkstemp(prefix=".recipe-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"entries": [*entries, entry]}, f)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        prune(path.parent)


KEEP = 64
"""Recipes kept in the user's cache: one per repository built lately. Every repository (a
test's or a CI job's temporary clone too) leaves one, so without a bound the cache grows for
ever; a repository whose recipe went only starts its process a little later, once."""

_HALF_WRITTEN_SECONDS = 3600  # a save killed between its temporary file and the rename


def prune(directory: Path, keep: int = KEEP) -> None:
    """Remove all but the `keep` recipes of `directory` written last (a recipe is rewritten by
    each build that uses it), and temporary files a killed save left over an hour ago. Only
    names this module writes are touched; a file another save removes first is skipped."""
    recipes: list[tuple[int, str]] = []
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if re.fullmatch(r"[0-9a-f]{32}\.json", entry.name):
                recipes.append((st.st_mtime_ns, entry.name))
            elif entry.name.startswith(".recipe-") and now - st.st_mtime > _HALF_WRITTEN_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    recipes.sort(reverse=True)
    for _, name in recipes[keep:]:
        with contextlib.suppress(OSError):
            os.unlink(directory / name)


class Started:
    """A process started from a recipe; `early_runner.take` adopts or closes it."""

    def __init__(self, entry: dict[str, Any], proc: subprocess.Popen, work: Path,
                 log: Any, ours: socket.socket | None, status: int | None, private: str | None):
        self.entry, self.proc, self.work, self.log = entry, proc, work, log
        self.ours, self.status, self.private = ours, status, private

    def signature(self) -> dict[str, Any]:
        """What it was started with, in its work directory, as `Sandbox.signature` says it
        (the private file, status pipe and broker socket by name)."""
        return _substitute({k: self.entry[k] for k in ("command", "env", "request",
                                                         "mechanism", "fds")},
                           {_WORK: str(self.work)})

    def asked(self) -> bool:
        """Whether it sent its broker anything (it must open nothing before its request)."""
        if self.ours is None:
            return False
        try:
            return bool(self.ours.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def close(self) -> None:
        """Kill its whole tree and remove its work directory."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill_tree(self.proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        _undo(self.work, [self.ours, self.log], () if self.status is None else (self.status,))
        self.ours = self.status = None


def launch(entry: dict[str, Any]) -> Started | None:
    """Start the process `entry` recipes, as `SourceProcess.start` would (in a fresh work
    directory of the repository's scratch, its own session, dead with its parent); None when
    the entry is not one (any problem: no early start)."""
    try:
        scratch = scratch_dir(Path(entry["state_dir"]))
        command, env = list(entry["command"]), dict(entry["env"])
        if not (all(isinstance(a, str) for a in command)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    sweep(scratch)
    work = owned_temp_dir(scratch, "source")
    ours = theirs = None
    status: tuple[int, int] | None = None
    log = None
    try:
        for sub in ("out", "home", "tmp"):
            (work / sub).mkdir()
        log = open(work / "output.log", "wb")  # noqa: SIM115 -- closed by Started.close
        values = {_WORK: str(work)}
        pass_fds = []
        if any(v == _BROKER for v in env.values()):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            values[_BROKER] = str(theirs.fileno())
            pass_fds.append(theirs.fileno())
        private = None
        if _STATUS in command:
            private = tempfile.mkdtemp(prefix="buildenv-sandbox-", dir=work)
            os.close(os.open(os.path.join(private, "blank"), os.O_CREAT | os.O_WRONLY, 0o000))
            status = os.pipe()
            values.update({_STATUS: str(status[1]), _PRIVATE: private})
            pass_fds.append(status[1])
        if len(pass_fds) != entry["fds"]:
            raise ValueError("the recipe's descriptors are not the sandbox's")
        if entry.get("request") is not None:
            (work / "sandbox.json").write_text(json.dumps(
                {"sandbox": _substitute(entry["request"], values), "root": entry["cwd"]}))
        proc = subprocess.Popen(
            _substitute(command, values), cwd=entry["cwd"], env=_substitute(env, values),
            stdin=subprocess.PIPE, pass_fds=tuple(pass_fds), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    except BaseException as e:
        _undo(work, [ours, theirs, log], status or ())
        if isinstance(e, Exception):
            return None
        raise
    if theirs is not None:
        theirs.close()
    if status is not None:
        os.close(status[1])
    return Started(entry, proc, work, log, ours, status[0] if status else None, private)


def _undo(work: Path, closing: list[Any], fds: tuple[int, ...]) -> None:
    """Undo a start that failed: close what it opened, remove its work directory."""
    import shutil  # deferred: only on failure

    for thing in closing:
        if thing is not None:
            thing.close()
    for fd in fds:
        os.close(fd)
    shutil.rmtree(work, ignore_errors=True)


def _substitute(value: Any, values: dict[str, str]) -> Any:
    """`value` with each placeholder (or, for the work directory, prefix) replaced."""
    if isinstance(value, str):
        for placeholder, real in values.items():
            value = value.replace(placeholder, real)
        return value
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value
