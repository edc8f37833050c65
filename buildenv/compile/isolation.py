"""What isolation this machine offers the training process (`buildenv doctor`).

Detection runs the real thing, because the hints (sysctls, a container) are neither necessary
nor sufficient: bubblewrap with the sandbox's own namespace flags, first with a user namespace,
then without one (root may mount without it); Landlock's ABI version; whether a seccomp filter
exists for this architecture. The verdict is cached per process (about 15 ms to find out,
much more on a loaded machine), and bubblewrap's success also across processes
(`probe_cache`: keyed by the boot, the binary and this process's privileges), so that a build
does not start bubblewrap twice to find out; `buildenv doctor` always probes afresh.
The sandbox prefers bubblewrap, with Landlock inside it too (root may otherwise re-open a
handed-over descriptor for writing through /proc); without bubblewrap, Landlock with seccomp
and dropped capabilities confines the runner by itself. `BUILDENV_SANDBOX_MECHANISM=landlock`
(or `none`) makes buildenv behave as on a machine without bubblewrap (or without either).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from buildenv.compile import probe_cache
from buildenv.compile.bwrap import probe
from buildenv.core.confine import landlock, seccomp
from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["MECHANISM_VAR", "Support", "detect", "forget"]

MECHANISM_VAR = "BUILDENV_SANDBOX_MECHANISM"
_LIMITS = ("auto", "landlock", "none")


@dataclass(frozen=True)
class Support:
    bwrap: str | None
    """The bubblewrap binary, when a sandbox starts with it."""
    bwrap_userns: bool
    """Whether it runs with a user namespace of its own (else as root without one)."""
    bwrap_version: str | None
    bwrap_problem: str | None
    """Why bubblewrap cannot be used (the last line it printed)."""
    landlock: int
    """Landlock ABI version, 0 when there is none."""
    landlock_problem: str | None
    seccomp: bool
    hints: tuple[str, ...]
    """Facts about this machine that explain a missing mechanism."""
    recalled: bool = False
    """Whether bubblewrap's verdict came from an earlier probe (`probe_cache`), not a run."""

    @property
    def mechanism(self) -> str:
        """`bwrap+landlock`, `bwrap`, `landlock`, or `none`."""
        if self.bwrap:
            return "bwrap+landlock" if self.landlock else "bwrap"
        return "landlock" if self.landlock and self.seccomp else "none"

    def reasons(self) -> list[str]:
        """Why each mechanism is unavailable, for messages."""
        out = []
        if not self.bwrap:
            out.append(f"bubblewrap: {self.bwrap_problem}")
        if not self.landlock:
            out.append(f"Landlock: {self.landlock_problem}")
        elif not self.seccomp:
            out.append("seccomp: no socket filter for this architecture, so Landlock alone "
                       "cannot close the network")
        return out

    def to_json(self) -> dict:
        return {"mechanism": self.mechanism, "bwrap": self.bwrap,
                "bwrap_userns": self.bwrap_userns, "bwrap_version": self.bwrap_version,
                "bwrap_problem": self.bwrap_problem, "landlock_abi": self.landlock,
                "landlock_problem": self.landlock_problem, "seccomp": self.seccomp, "hints": list(self.hints)}


def detect(fresh: bool = False) -> Support:
    """What this machine offers (cached), within `BUILDENV_SANDBOX_MECHANISM`; `fresh`: run
    every probe again, whatever earlier ones found."""
    limit = (os.environ.get(MECHANISM_VAR) or "auto").strip().lower()
    if limit not in _LIMITS:
        raise DiagnosticError([Diagnostic(
            "BE004", f"{MECHANISM_VAR} must be one of {', '.join(_LIMITS)}, not '{limit}'")], 2)
    if fresh:
        _detect.cache_clear()
    return _detect(limit, fresh)


def forget() -> None:
    """Bubblewrap failed to start a sandbox after all: the next detection probes again."""
    path = shutil.which("bwrap")
    if path is not None:
        probe_cache.forget(probe_cache.entry_path(path, probe(path, True)))
    _detect.cache_clear()


@functools.cache
def _detect(limit: str, fresh: bool = False) -> Support:
    if not sys.platform.startswith("linux"):
        why = f"not on Linux ({sys.platform})"
        return Support(None, False, None, why, 0, why, False, ())
    recalled = False
    if limit == "auto":
        bwrap, userns, version, problem, recalled = _bwrap(fresh)
    else:
        bwrap, userns, version, problem = None, False, None, f"not used ({MECHANISM_VAR}={limit})"
    abi = landlock.abi() if limit != "none" else 0
    why = None if abi else (f"not used ({MECHANISM_VAR}=none)" if limit == "none" else
                            "not offered by this kernel (Linux 5.13+ with the Landlock LSM "
                            "enabled; a container's seccomp profile may block it)")
    return Support(bwrap, userns, version, problem, abi, why,
                   seccomp.supported() and _has_seccomp(), () if bwrap else tuple(_hints()),
                   recalled)


def _bwrap(fresh: bool) -> tuple[str | None, bool, str | None, str | None, bool]:
    path = shutil.which("bwrap")
    if path is None:
        return None, False, None, ("not installed (Debian/Ubuntu: `apt-get install "
                                   "bubblewrap`; Fedora: `dnf install bubblewrap`)"), False
    entry = probe_cache.entry_path(path, probe(path, True))
    kept = None if fresh else probe_cache.recall(entry)
    if kept is not None:
        return path, True, kept or None, None, True
    # the version and the first probe at once: two processes started, one wait
    asked = _start([path, "--version"])
    problem = "it failed"
    for userns in (True, False):
        code, out = _finish(_start(probe(path, userns)))
        if code == 0:
            version = _finish(asked)[1].strip() or None
            if userns:
                probe_cache.remember(entry, version)
            return path, userns, version, None, False
        lines = [line for line in out.strip().splitlines() if line.strip()]
        problem = lines[-1] if lines else f"exit code {code}"
    return None, False, _finish(asked)[1].strip() or None, problem, False


def _start(args: list[str]) -> subprocess.Popen | str:
    try:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True,
                                env={"PATH": "/usr/bin:/bin"})
    except OSError as exc:
        return str(exc)


def _finish(proc: subprocess.Popen | str) -> tuple[int, str]:
    if isinstance(proc, str):
        return 1, proc
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        return 1, str(exc)
    return proc.returncode, out


def _has_seccomp() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            return any(line.startswith("Seccomp:") for line in handle)
    except OSError:
        return False


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _hints() -> list[str]:
    out = []
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        out.append("kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+): "
                   "unprivileged user namespaces need an AppArmor profile for bwrap, or the "
                   "sysctl set to 0")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        out.append("kernel.unprivileged_userns_clone = 0: unprivileged user namespaces are "
                   "off (set it to 1)")
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        out.append("user.max_user_namespaces = 0: user namespaces are off")
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        out.append("running in a container: Docker's default seccomp profile blocks the "
                   "namespaces bubblewrap needs (Landlock still works there)")
    if os.geteuid() != 0 and not out:
        out.append("not root: bubblewrap needs unprivileged user namespaces")
    return out
