"""The bubblewrap command line that runs the training in its own namespaces (docs/sandbox.md).

New user (when allowed), mount, PID, IPC, UTS and, unless the network is allowed, network
namespaces; no capabilities; a new session; it dies with the build. The root is empty but for
an allow-list: the system trees, the readable trees of the `View` read-only, hidden paths
replaced by empty unlistable directories (or unreadable files), the work and output
directories writable, a private /tmp, /dev and /proc. Later mounts cover earlier ones, so the
order is: readable trees, holes, trees inside holes, writable trees, then everything made
read-only again (a hole is a tmpfs; `/` itself is the tmpfs bubblewrap builds on).

A readable tree reached through a symlink (Pants links its caches into each sandbox: a venv
at `<sandbox>/.cache/pex_root/venvs/...` whose site-packages link `../../installed_wheels/..`)
is not bound at the linked path, where relative links inside it would point at nothing: the
link itself is recreated, pointing at the tree bound at its real path.
"""

from __future__ import annotations

import os
import stat

from buildenv.compile.sandbox_view import SYSTEM_TREES, View, is_under

__all__ = ["base_args", "command", "probe"]


def base_args(bwrap: str, userns: bool, network: bool) -> list[str]:
    """Namespaces, capabilities, lifetime and the bare system: what every sandbox (and the probe
    that checks this machine can run one) starts from."""
    args = [bwrap]
    if userns:
        args += ["--unshare-user", "--disable-userns"]
    if not network:
        args.append("--unshare-net")
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
             "--new-session", "--cap-drop", "ALL", "--dev", "/dev", "--proc", "/proc",
             "--tmpfs", "/tmp"]
    return args


def _tree(path: str) -> list[str]:
    """Bind `path` read-only at itself; a symlink (`/bin` -> `usr/bin`) stays a symlink."""
    if os.path.islink(path) and os.path.dirname(path) == "/":
        return ["--symlink", os.readlink(path), path]
    return ["--ro-bind", path, path]


def _first_link(path: str) -> str | None:
    """The first component of `path` that is a symlink."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def _linked_tree(path: str, read: tuple[str, ...], linked: set[str]) -> list[str]:
    """`path` that goes through a symlink: its real tree bound, and the link recreated (once,
    unless a readable tree already shows it)."""
    link = _first_link(path)
    if link is None:
        return ["--ro-bind", path, path]
    real = os.path.realpath(path)
    others = [t for t in read if t != path]
    args = [] if any(is_under(real, t) for t in others) else ["--ro-bind", real, real]
    if link not in linked and not any(is_under(link, t) for t in others):
        linked.add(link)
        args += ["--symlink", os.path.realpath(link), link]
    return args


def probe(bwrap: str, userns: bool) -> list[str]:
    """A sandbox with the system trees only, running `true`: whether this machine runs one."""
    args = base_args(bwrap, userns, network=False)
    for tree in SYSTEM_TREES:
        if os.path.lexists(tree):
            args += _tree(tree)
    return [*args, "--", "true"]


def command(bwrap: str, userns: bool, network: bool, view: View, blank_file: str,
            cwd: str, status_fd: int) -> list[str]:
    """The bwrap arguments before `--` and the runner's own command. `blank_file` is an empty,
    unreadable file bound over hidden files."""
    args = base_args(bwrap, userns, network)
    linked: set[str] = set()
    for tree in view.read:
        if os.path.islink(tree) and os.path.dirname(tree) == "/":
            args += _tree(tree)
        else:
            args += _linked_tree(tree, view.read, linked)
    holes = []
    for hole in view.hidden:
        try:
            is_dir = stat.S_ISDIR(os.stat(hole).st_mode)
        except OSError:
            continue
        if is_dir:  # traversable (a tree inside stays reachable), not listable, no files
            args += ["--perms", "0111", "--tmpfs", hole]
            holes.append(hole)
        else:
            args += ["--ro-bind", blank_file, hole]
    for tree in view.inner:
        args += ["--ro-bind", tree, tree]
    for tree in view.write:
        args += ["--bind", tree, tree]
    for hole in holes:
        args += ["--remount-ro", hole]
    args += ["--remount-ro", "/", "--chdir", cwd, "--json-status-fd", str(status_fd), "--"]
    return args
