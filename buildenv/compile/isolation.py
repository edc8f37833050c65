"""What isolation this machine offers the training process (`buildenv doctor`).

Detection runs the real thing, because the hints (sysctls, a container) are neither necessary
nor sufficient: bubblewrap with the sandbox's own namespace flags, first with a user namespace,
then without one (root may mount without it); Landlock's ABI version; whether a seccomp filter
exists for this architecture. The verdict is cached per process (about 15 ms to find out).
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

from buildenv.compile.bwrap import probe
from buildenv.core.confine import landlock, seccomp
from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["MECHANISM_VAR", "Support", "detect"]

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


def detect() -> Support:
    """What this machine offers (cached), within `BUILDENV_SANDBOX_MECHANISM`."""
    limit = (os.environ.get(MECHANISM_VAR) or "auto").strip().lower()
    if limit not in _LIMITS:
        raise DiagnosticError([Diagnostic(
            "BE004", f"{MECHANISM_VAR} must be one of {', '.join(_LIMITS)}, not '{limit}'")], 2)
    return _detect(limit)


@functools.cache
def _detect(limit: str) -> Support:
    if not sys.platform.startswith("linux"):
        why = f"not on Linux ({sys.platform})"
        return Support(None, False, None, why, 0, why, False, ())
    if limit == "auto":
        bwrap, userns, version, problem = _bwrap()
    else:
        bwrap, userns, version, problem = None, False, None, f"not used ({MECHANISM_VAR}={limit})"
    abi = landlock.abi() if limit != "none" else 0
    why = None if abi else (f"not used ({MECHANISM_VAR}=none)" if limit == "none" else
                            "not offered by this kernel (Linux 5.13+ with the Landlock LSM "
                            "enabled; a container's seccomp profile may block it)")
    return Support(bwrap, userns, version, problem, abi, why,
                   seccomp.supported() and _has_seccomp(), () if bwrap else tuple(_hints()))


def _bwrap() -> tuple[str | None, bool, str | None, str | None]:
    path = shutil.which("bwrap")
    if path is None:
        return None, False, None, ("not installed (Debian/Ubuntu: `apt-get install "
                                   "bubblewrap`; Fedora: `dnf install bubblewrap`)")
    version = _run([path, "--version"])[1].strip() or None
    problem = "it failed"
    for userns in (True, False):
        code, out = _run(probe(path, userns))
        if code == 0:
            return path, userns, version, None
        lines = [line for line in out.strip().splitlines() if line.strip()]
        problem = lines[-1] if lines else f"exit code {code}"
    return None, False, version, problem


def _run(args: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, done.stdout + done.stderr


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
