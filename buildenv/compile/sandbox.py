"""Running the training sandboxed (docs/sandbox.md): the policy's verdict on this machine,
and everything starting the runner needs.

`Sandbox` picks the mechanism (`isolation.detect`): bubblewrap with Landlock inside it, else
Landlock with seccomp and dropped capabilities, else none, which `required` refuses (BE320)
and `preferred` accepts with a warning, once per process (BE321). It opens the broker that
hands the training the files its lock pins, wraps the runner's command (bubblewrap's line) and
environment (no cloud credentials; HOME and TMPDIR private), tells the runner what to confine
itself to, and records what applied: the lineage's `isolation`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from buildenv.compile import bwrap
from buildenv.compile.isolation import Support, detect, forget
from buildenv.compile.sandbox_policy import SandboxPolicy, sandbox_policy, source_policy
from buildenv.compile.sandbox_services import privacy_services
from buildenv.compile.sandbox_view import View, filesystem_view, is_under
from buildenv.core import process_tree
from buildenv.core.confine import Confinement
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity
from buildenv.core.project import Project, TrainingConfig
from buildenv.data.gate.broker import Broker, Service, pinned_locations
from buildenv.data.lock.manifest import Manifest
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Environment

__all__ = ["CLOUD_PREFIXES", "SIGNATURE_NAMES", "Sandbox", "check_available"]

CLOUD_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_")  # credentials: never in a sandbox
# The names `Sandbox.signature` gives its own private file, status pipe and broker socket, and
# `compile.start_recipe` the runner's work directory.
SIGNATURE_NAMES = ("<status>", "<private>", "<broker>", "<work>")
_warned = threading.Event()
# Trees Landlock alone lets the runner read besides its view: its own /proc (the interpreter
# and the libraries read it) and the device nodes.
_LANDLOCK_SHOWN = ["/proc", "/dev"]


def check_available(policy: SandboxPolicy) -> None:
    """Refuse a `required` policy on a machine without isolation (BE320, exit 2), before
    anything else of the build runs."""
    if policy.mode == "required" and detect().mechanism == "none":
        raise DiagnosticError([_unavailable(policy, detect())], 2)


def _unavailable(policy: SandboxPolicy, support: Support) -> Diagnostic:
    return Diagnostic(
        "BE320", f"the sandbox is required ({policy.source}) and this machine offers no "
        f"isolation: {'; '.join(support.reasons())}",
        hints=("install bubblewrap, or run where user namespaces or Landlock are allowed; "
               "`buildenv doctor` says what this machine supports and why not",
               *support.hints))


def _warning(support: Support) -> dict:
    return Diagnostic(
        "BE321", "trainings run without a sandbox on this machine (they can read any file and "
        f"reach the network): {'; '.join(support.reasons())}", severity=Severity.WARNING,
        hints=("install bubblewrap, or allow user namespaces or Landlock; `buildenv doctor` "
               "explains; `sandbox = \"required\"` makes this an error, `\"off\"` silences it",
               *support.hints)).to_json()


class Sandbox:
    """The sandbox of one training run; use as a context manager around the process."""

    def __init__(self, project: Project, config: TrainingConfig, res: Resolved,
                 policy: SandboxPolicy, out_dir: Path, work: Path,
                 manifests: dict[str, Manifest], python: str, release_key: str | None = None,
                 runtime: tuple[str, ...] = (), *, reads: Environment | None = None,
                 modules: tuple[str, ...] = ()):
        self.policy = policy
        self.support = detect() if policy.mode != "off" else None  # "off" probes nothing
        self.mechanism = self.support.mechanism if self.support else "none"
        self.request: dict | None = None
        self._prefix: list[str] = []
        self._broker: Broker | None = None
        self._status: tuple[int, int] | None = None
        self._private: str | None = None
        self._work = work
        if self.mechanism == "none":
            if policy.mode == "required" and self.support is not None:
                raise DiagnosticError([_unavailable(policy, self.support)], 2)
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("home", "tmp"):
            (work / sub).mkdir(exist_ok=True)
        readable = policy.read_only_paths
        if policy.network:  # a resolver's configuration may live outside /etc (systemd)
            readable += (os.path.dirname(os.path.realpath("/etc/resolv.conf")),)
        view = filesystem_view(project, res.env, config, python, readable, (work, out_dir),
                               runtime, modules)
        if reads is None:  # a training: its environment's data, and the privacy services
            self._broker = Broker(project, res.env,
                                  pinned_locations(project, res.env, manifests),
                                  privacy_services(project, res.env, release_key))
        else:  # code-made sources: their declared inputs only
            self._broker = Broker(project, reads, pinned_locations(project, reads, manifests))
        loopback = self.mechanism.startswith("bwrap") and not policy.network
        # What the runner's guard counts as shown: Landlock alone also lets it read /proc and
        # /dev (`_confinement`), so reading them is nothing the sandbox refuses -- neither a
        # cause to blame for a later error, nor an attempt to note (a stack walk each: the
        # runner's own scan of /proc for leftover processes noted 64 of them, ~20 ms)
        shown = [] if self.mechanism.startswith("bwrap") else _LANDLOCK_SHOWN
        self.request = {"confinement": self._confinement(view, work, out_dir).to_json(),
                        "hidden": list(view.data()), "private": list(view.private),
                        "readable": [*view.read, *view.inner, *shown], "inner": list(view.inner),
                        "writable": list(view.write), "network": policy.network,
                        "loopback": loopback, "mechanism": self.mechanism}
        if self.mechanism.startswith("bwrap"):
            # code-made sources: in their owned work directory, swept after a killed build
            self._private = tempfile.mkdtemp(prefix="buildenv-sandbox-",
                                             dir=work if reads is not None else None)
            blank = os.path.join(self._private, "blank")
            os.close(os.open(blank, os.O_CREAT | os.O_WRONLY, 0o000))
            self._status = os.pipe()
            assert self.support is not None and self.support.bwrap is not None
            self._prefix = bwrap.command(self.support.bwrap, self.support.bwrap_userns,
                                         policy.network, view, blank,
                                         str(project.root.resolve()), self._status[1])

    @classmethod
    def prepare(cls, project: Project, config: TrainingConfig, res: Resolved,
                policy: SandboxPolicy | None, out_dir: Path, work: Path,
                manifests: dict[str, Manifest], python: str,
                release_key: str | None = None, runtime: tuple[str, ...] = ()) -> Sandbox:
        """The sandbox of a run; `policy` None: the training's configured one. `release_key`
        names what a private release of its evaluation figures is remembered under. `runtime`:
        trees the runner's interpreter needs besides its own (a toolchain's runner directory),
        shown even inside buildenv's hidden state directory."""
        if policy is None:
            name = next(n for n, c in project.trainings.items() if c is config)
            policy = sandbox_policy(project, name, config, res)
        return cls(project, config, res, policy, out_dir, work, manifests, python, release_key,
                   runtime)

    @classmethod
    def for_sources(cls, project: Project, res: Resolved, modules: tuple[str, ...],
                    reads: Environment, manifests: dict[str, Manifest], work: Path,
                    out_dir: Path, python: str, runtime: tuple[str, ...]) -> Sandbox:
        """The sandbox of the process running code-made sources (`modules`: the transform's
        or the labeling functions' modules), under `compile.sandbox_policy.source_policy`:
        the data of `reads` (their declared inputs) through the broker, `work` and `out_dir`
        writable, nothing else."""
        policy = source_policy(project, res)
        config = TrainingConfig(entry=f"{modules[0]}:_")
        return cls(project, config, res, policy, out_dir, work, manifests, python,
                   runtime=runtime, reads=reads, modules=modules[1:])

    def finish(self, result: dict) -> dict:
        """The runner's result, with what applied (`isolation`) and, the first time a
        `preferred` sandbox was missing in this process, the warning that says so."""
        if self.mechanism == "none" and self.policy.mode == "preferred" \
                and self.support is not None and not _warned.is_set():
            _warned.set()
            result.setdefault("diagnostics", []).append(_warning(self.support))
        result["isolation"] = self.applied()
        return result

    # --- what the runner gets -------------------------------------------------------------
    def _confinement(self, view: View, work: Path, out_dir: Path) -> Confinement:
        # bubblewrap: IP is its own loopback, unix paths only what it shows. Landlock alone
        # cannot tell a private unix socket from the docker socket: no new ones at all.
        sockets = None if self.policy.network else (
            ("unix", "inet", "inet6", "netlink") if self.mechanism.startswith("bwrap")
            else ("netlink",))
        if self.mechanism.startswith("bwrap"):  # bubblewrap hides; Landlock keeps writes in
            return Confinement(("/",), (), (str(work), str(out_dir), "/tmp", "/dev"), sockets,
                               tcp_rules=False)
        read, listed = _expand(view)
        return Confinement(tuple(read + _LANDLOCK_SHOWN), tuple(listed),
                           (*view.write, "/dev/shm", "/dev/null", "/dev/zero", "/dev/full"),
                           sockets, tcp_rules=not self.policy.network)

    def command(self, argv: list[str]) -> list[str]:
        return [*self._prefix, *argv]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        if self.request is None:
            return base
        env = {k: v for k, v in base.items() if not k.startswith(CLOUD_PREFIXES)}
        env.update(HOME=str(self._work / "home"), TMPDIR=str(self._work / "tmp"))
        # The bytecode cache is read-only here (one training must not plant code another
        # runs): Python reads it and writes nothing, instead of trying once per import.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        assert self._broker is not None
        env.update(self._broker.child_env())
        return env

    @property
    def pass_fds(self) -> tuple[int, ...]:
        fds = [] if self._broker is None else [self._broker.child_fd]
        return tuple(fds + ([self._status[1]] if self._status else []))

    @property
    def brokered(self) -> bool:
        """Whether the runner reaches the build through a broker (any mechanism but none)."""
        return self._broker is not None

    def add_service(self, op: str, service: Service) -> None:
        """Offer the runner `op` through its broker (`handover.ask`); only when `brokered`."""
        assert self._broker is not None
        self._broker.add_service(op, service)

    def started(self, serve: bool = True) -> None:
        """The runner has started: the build closes its copies of the runner's ends (`serve`
        False: the broker answers from `hand_over` on)."""
        if self._broker is not None:
            self._broker.started(serve)
        if self._status is not None:
            os.close(self._status[1])
            self._status = (self._status[0], -1)

    def stop(self, proc: subprocess.Popen) -> None:
        """Kill the runner's whole tree (a detached child too: the runner adopts orphans).
        Nothing once the runner is reaped: its children were handed on when it exited, and
        its pid may be another process's by now (and the walk of /proc, twice per call, is
        milliseconds on the tail of every derived rebuild)."""
        if proc.returncode is None:
            process_tree.kill_tree(proc.pid)

    def signature(self, argv: list[str], base_env: dict[str, str]) -> dict[str, Any]:
        """What the runner is started with and confined to (`command`, `env`, `request`), but
        for the names of this sandbox's own private file, status pipe and broker socket: two
        sandboxes of equal signatures confine the runner alike."""
        command = self.command(argv)
        env = dict(self.env(base_env))
        if any(name in json.dumps([command, env, self.request]) for name in SIGNATURE_NAMES):
            # A path or variable that spells one of the names itself would make two different
            # sandboxes look alike: such a signature equals no other, and no runner is adopted.
            return {"unique": os.urandom(16).hex()}
        if self._status is not None and "--json-status-fd" in command:
            at = command.index("--json-status-fd") + 1
            command[at] = "<status>"
        if self._private is not None:
            command = [a.replace(self._private, "<private>") for a in command]
        if self._broker is not None:
            env.update(dict.fromkeys(self._broker.child_env(), "<broker>"))
        return {"command": command, "env": env, "request": self.request,
                "mechanism": self.mechanism, "policy": self.policy,
                "fds": len(self.pass_fds)}

    def hand_over(self, computed: Sandbox) -> bool:
        """Serve the files `computed` (this sandbox as the build computed it, once it knew the
        pins) allows; False when the runner asked the broker for anything before (it must open
        nothing before its request)."""
        if self._broker is None or computed._broker is None:
            return self._broker is computed._broker
        if self._broker.asked():
            return False
        self._broker.hand_over(computed._broker.env, computed._broker.allowed)
        return True

    def adopt_started(self, ours: socket.socket | None, status: int | None,
                      private: str | None) -> None:
        """Become the sandbox of a runner started from a recipe (`compile.start_recipe`) whose
        `signature` is this one's: its broker socket, status pipe and private file replace
        this sandbox's own, and its broker serves the files this one allows."""
        if self._broker is not None and ours is not None:
            self._broker.use_socket(ours)
            self._broker.serve()
        if self._status is not None and status is not None:
            for fd in self._status:
                if fd >= 0:
                    os.close(fd)
            self._status = (status, -1)
        if self._private is not None and private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = private

    # --- what happened --------------------------------------------------------------------
    def applied(self) -> dict[str, Any]:
        """The isolation that applied, for the lineage."""
        network = "allow" if self.policy.network or self.mechanism == "none" else (
            "loopback" if self.mechanism.startswith("bwrap") else "none")
        out: dict[str, Any] = {"mechanism": self.mechanism, "policy": self.policy.mode,
                               "network": network,
                               "data": "paths" if self.mechanism == "none" else
                               "handed-over descriptors"}
        if self.policy.read_only:
            out["read_only"] = list(self.policy.read_only)
        if self.policy.network and self.policy.reason:
            out["network_reason"] = self.policy.reason
        return out

    def setup_failure(self, output: str) -> dict | None:
        """BE326 when bubblewrap could not start the runner at all (its own error)."""
        if self._status is None:
            return None
        os.set_blocking(self._status[0], False)
        try:
            text = os.read(self._status[0], 1 << 16).decode(errors="replace")
        except (BlockingIOError, OSError):
            text = ""
        if "child-pid" in text:
            return None
        lines = [line for line in output.splitlines() if line.startswith("bwrap:")]
        reason = lines[-1] if lines else "bubblewrap exited before starting it"
        hints = ["`buildenv doctor` checks this machine's sandbox"]
        if self.support is not None and self.support.recalled:  # it ran here before
            forget()
            hints.append("an earlier build found that bubblewrap runs here; the next build "
                         "checks again")
        return Diagnostic("BE326", f"the sandbox could not start the training: {reason}",
                          hints=tuple(hints)).to_json()

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
        if self._status is not None:
            for fd in self._status:
                if fd >= 0:
                    os.close(fd)
            self._status = None
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _expand(view: View) -> tuple[list[str], list[str]]:
    """The view as Landlock rules, which only ever allow: each readable tree with hidden paths
    in it becomes its other entries, recursively (symlinks skipped: a rule would follow one
    out), and the directories on the way may only be listed."""
    read: list[str] = list(view.inner)
    listed: list[str] = list(view.listable)

    def walk(tree: str, holes: list[str]) -> None:
        if tree in holes:
            return
        inside = [h for h in holes if is_under(h, tree)]
        if not inside:
            read.append(tree)
            return
        listed.append(tree)
        try:
            entries = sorted(os.scandir(tree), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if not entry.is_symlink():
                walk(entry.path, inside)

    for tree in view.read:
        walk(tree, list(view.hidden))
    return read, listed

