"""Remembering that bubblewrap runs here, so that a build does not start it twice to find out.

Detection (`isolation.detect`) runs bubblewrap with the sandbox's own flags: two processes,
tens of milliseconds on a loaded machine, in every `buildenv build`. Its success depends on
the kernel and its boot-time and runtime settings, the bubblewrap binary, and what this
process is allowed (its namespaces, capabilities, seccomp filters). The verdict is kept in
`$XDG_CACHE_HOME/buildenv/sandbox-probe-<key>.json` (`~/.cache/...` without it), where the key
is a digest of exactly those facts: the boot (a new kernel, new boot settings), the user, the
binary's identity, the user-namespace sysctls, this process's namespaces, capabilities,
`no_new_privs` and seccomp state, and the probe's own command line. A change in any of them
is another key, so the probe runs again.

Only the best verdict is kept: bubblewrap with a user namespace of its own. A stale one can
then only promise too much, and the sandbox fails closed: bubblewrap refuses to start the
training (BE326), and the entry is forgotten (`forget`) so that the next build probes again.
A lesser verdict (root mode without a user namespace, no bubblewrap) is never kept, so
installing bubblewrap or allowing user namespaces takes effect at once. An entry is trusted
only in a directory and a file this user owns that nobody else may write.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from buildenv.core.atomic import atomic_write_text

__all__ = ["entry_path", "forget", "recall", "remember"]

_VERSION = 1  # of the entry's format and of what the key covers
_SYSCTLS = ("/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/unprivileged_userns_clone",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
_STATUS = ("CapEff:", "CapPrm:", "CapBnd:", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:")
_NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _facts(bwrap: str, probe: list[str]) -> dict | None:
    """What the probe's outcome depends on; None when the binary cannot be identified."""
    try:
        real = os.path.realpath(bwrap)
        st = os.stat(real)
    except OSError:
        return None
    status = [line for line in _read("/proc/self/status").splitlines()
              if line.startswith(_STATUS)]
    namespaces = []
    for name in _NAMESPACES:
        try:
            namespaces.append(os.readlink(f"/proc/self/ns/{name}"))
        except OSError:
            namespaces.append("")
    return {"version": _VERSION, "boot": _read("/proc/sys/kernel/random/boot_id"),
            "kernel": os.uname().release, "euid": os.geteuid(), "egid": os.getegid(),
            "bwrap": [real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                      st.st_mode, st.st_uid],
            "sysctls": [_read(path) for path in _SYSCTLS], "status": status,
            "namespaces": namespaces, "probe": probe}


def _directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "buildenv"


def entry_path(bwrap: str, probe: list[str]) -> Path | None:
    """Where the verdict for these facts is kept; None when they cannot be established."""
    facts = _facts(bwrap, probe)
    if facts is None or not facts["boot"]:
        return None
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]
    return _directory() / f"sandbox-probe-{key}.json"


def _trusted(path: Path) -> bool:
    """Owned by this user, writable by nobody else, in a directory alike."""
    try:
        for item in (path.parent, path):
            st = os.lstat(item)
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or \
                    stat.S_ISLNK(st.st_mode):
                return False
    except OSError:
        return False
    return True


def recall(path: Path | None) -> str | None:
    """The bubblewrap version of a kept verdict that bubblewrap runs with a user namespace;
    None when there is none to trust."""
    if path is None or not _trusted(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("userns") is not True:
        return None
    version = data.get("bwrap_version")
    return version if isinstance(version, str) else ""


def remember(path: Path | None, version: str | None) -> None:
    """Keep the verdict "bubblewrap runs here with a user namespace"; best effort."""
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"userns": True, "bwrap_version": version or ""}))
    except OSError:
        pass


def forget(path: Path | None) -> None:
    """Drop a kept verdict (bubblewrap failed to start a sandbox after all)."""
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass
