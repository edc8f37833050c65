"""`buildenv lock`'s hash started in the command's first milliseconds, from the lock's plan.

A lock of a few hundred megabytes is mostly one sha256 pass, and its floor is a bare Python
process that hashes the file (bench/bench_lock.py). Even the lock answered from the plan
(`quick_lock`) imports about fifty milliseconds of modules before it would hash the first
byte; `early` (the full command's head start) parses the environments' YAML first. This
module runs before either: it reads the plan the last lock recorded
(`<cache_dir>/lockplan.json`, `data.lock.quick`) and the stat cache, and starts an `early_hash`
pass (a thread) over each local file the plan pins for the environments named that the stat
cache does not vouch for; then the command imports while the passes run. It imports nothing but
the standard library's `json` and `early_hash`, so a pass starts a few milliseconds after the
interpreter is up, about when a bare process's would.

Nothing here decides anything: the plan is read as it is, without checking that it still
applies; the command takes a pass's digest only if the file's stat is still the one hashed
under (`digests.digest_location`), so a wrong guess (a void plan, another root, a file changed)
costs a hash nobody uses. Errors are swallowed; the command reports them. Off with
`BUILDENV_NO_PREFETCH=1`, as `early` is.
"""

from __future__ import annotations

import os
import sys

from buildenv.data.lock import early_hash

# Deferred imports (json, tomllib, early): only a lock reads the plan; tomllib only for a
# pyproject.toml that names `cache_dir`; `early` (pathlib, YAML) only when there is no plan.

__all__ = ["start"]

_VALUED = ("--root", "--algorithm", "--format", "--executor")
_RACY_NS = 1_000_000_000  # `digests.RACY_NS`: a local file's window (it has an inode)


def start(argv: list[str]) -> None:
    """For `buildenv lock ...` (`argv` as `sys.argv`), start the head start's thread; no-op for
    every other command."""
    if len(argv) < 2 or argv[1] != "lock" or os.environ.get("BUILDENV_NO_PREFETCH") or any(
            arg in ("--help", "-h") for arg in argv[2:]):
        return
    # The passes need the GIL back after every chunk while the command imports (GIL held):
    # with the default 5 ms switch interval each chunk would wait up to 5 ms (as in `early`).
    sys.setswitchinterval(0.0005)
    if not _from_plan(argv[2:]):
        # No plan that names the environments (a first lock, an environment added): the
        # command will run the full lock; `early`'s prefetch from their YAML starts now rather
        # than after the plan's path gave up (a tenth of a second later).
        from buildenv.cli import early

        early.prefetch(argv[2:])


def _from_plan(args: list[str]) -> bool:
    """Start a pass over each file the plan pins for the lock `args`; whether the plan named
    every environment the lock will read."""
    try:
        parsed = _parse(args)
        if parsed is None:
            return False  # another algorithm or executor: `early` knows what to do with it
        names, root = parsed
        if root is None:
            return False
        paths = _pinned(root, names)
        if paths is None:
            return False
        for path in paths:
            early_hash.begin(path)
        return True
    except Exception:  # the command decides, and says what is wrong
        return False


def _parse(args: list[str]) -> tuple[list[str], str | None] | None:
    """(environment names, the project root as the command would find it) of a lock that
    hashes with sha256 on this machine; None for any other."""
    names: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            if key in _VALUED and not eq and i + 1 < len(args):
                i += 1
                value = args[i]
            options[key] = value
        elif not arg.startswith("-"):
            names.append(arg)
        i += 1
    if options.get("--algorithm", "sha256") != "sha256" or options.get(
            "--executor", "local") != "local":
        return None
    return names, _root(options.get("--root"))


def _root(option: str | None) -> str | None:
    """`--root`, `BUILDENV_ROOT`, else the nearest directory up from here holding a
    `pyproject.toml` or an `environments/` directory (`core.roots.find_root`, roughly)."""
    given = option or os.environ.get("BUILDENV_ROOT")
    if given:
        return os.path.realpath(given)
    here = os.path.realpath(os.getcwd())
    while True:
        if os.path.isfile(os.path.join(here, "pyproject.toml")) or os.path.isdir(
                os.path.join(here, "environments")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _pinned(root: str, names: list[str]) -> list[str] | None:
    """The local files the plan under `root` pins for the environments `names` (all: every
    environment in the plan), each once, as resolved paths (`storage.locate`'s keys); None
    when the plan names none of them."""
    import json

    cache_dir = _cache_dir(root)
    with open(os.path.join(root, cache_dir, "lockplan.json"), encoding="utf-8") as handle:
        plan = json.load(handle)
    if plan.get("algorithm") != "sha256":
        return None
    envs = plan["envs"]
    if not isinstance(envs, dict) or not any(isinstance(envs.get(n), dict)
                                             for n in names or envs):
        return None
    cached = _stat_cache(os.path.join(root, cache_dir, "statcache.json"))
    paths: dict[str, None] = {}
    for name in names or sorted(envs):
        entry = envs.get(name)
        if not isinstance(entry, dict):
            continue
        for ds in entry["datasets"]:
            uri = ds["uri"]
            if ds["format"] == "csv" or not isinstance(uri, str):
                continue  # a CSV's rows are counted from the bytes as they are hashed
            if "?" in uri or "#" in uri:
                continue  # what `locate` would read otherwise
            if uri.startswith("file:///"):
                uri = uri[len("file://"):]
            elif ":" in uri:
                continue  # another scheme (an object store)
            path = os.path.realpath(os.path.join(root, uri))
            try:
                if _vouched(cached.get(f"sha256:{ds['format']}:{path}"), os.stat(path)):
                    continue  # the stat cache answers: nothing to hash
            except OSError:
                continue
            paths[path] = None
    return list(paths)


def _stat_cache(path: str) -> dict[str, object]:
    """The stat cache's entries (`digests.StatCache`, version 2), or none."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == 2 else None
    return entries if isinstance(entries, dict) else {}


def _vouched(entry: object, st: os.stat_result) -> bool:
    """Whether the stat cache's `entry` gives the digest of the local file whose stat is `st`,
    by `digests.StatCache.get`'s rule: then the command hashes nothing, and neither does this."""
    if type(entry) is not list or len(entry) != 9:
        return False
    return entry[:5] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev] \
        and st.st_mtime_ns < entry[5] - _RACY_NS


def _cache_dir(root: str) -> str:
    """`[tool.buildenv] cache_dir` (default `.buildenv`); pyproject.toml is parsed only if it
    names the key."""
    try:
        with open(os.path.join(root, "pyproject.toml"), "rb") as handle:
            text = handle.read()
    except OSError:
        return ".buildenv"
    if b"cache_dir" not in text:
        return ".buildenv"
    import tomllib

    value = tomllib.loads(text.decode("utf-8")).get("tool", {}).get("buildenv", {}).get(
        "cache_dir", ".buildenv")
    return value if isinstance(value, str) else ".buildenv"
