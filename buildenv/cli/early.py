"""Start hashing (and a transforms' process) before the command line is even parsed:
`buildenv lock` only.

A lock is a hash of every dataset; the command's own start-up (typer, the environment models,
resolving `extends`) is a third of a second of Python before the first byte would be hashed,
which on a few hundred megabytes is most of the time a lock takes. So, before anything heavy
is imported, this reads the environment files the command names (YAML through the C loader),
and starts hashing the single-file datasets they declare in background threads
(`digests.prefetch`); the real command later takes each digest if the file's stat has not
changed since, and hashes again if it has. Nothing here decides anything: a guess that is
wrong (a format inferred wrongly, an environment that does not resolve) only costs a hash
nobody uses. Errors are swallowed; the command reports them properly.

When the environments declare derived datasets, it also starts the process that runs their
transforms (`compile.early_runner`), which the build adopts only if its sandbox is the one the
build computes.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

# Deferred imports (buildenv, yaml, tomllib): this module runs before the rest of buildenv is
# imported, to start hashing early.

__all__ = ["prefetch", "start"]

_FLAGS_WITH_VALUE = ("--algorithm", "--root", "--format", "--executor")


def start(argv: list[str]) -> None:
    """Begin prefetching for `buildenv lock ...` (no-op for every other command)."""
    if len(argv) < 2 or argv[1] != "lock" or os.environ.get("BUILDENV_NO_PREFETCH"):
        return
    # The hashing thread needs the GIL back after every chunk, while this thread imports (GIL
    # held): with the default 5 ms switch interval it would wait up to 5 ms a chunk.
    sys.setswitchinterval(0.0005)
    # The transforms' process first: a derived rebuild waits for its start-up, and the hashing
    # thread's imports would hold up this thread's (the YAML reader) by a few milliseconds.
    _start_runner(argv[2:])
    prefetch(argv[2:])


_prefetching: list[bool] = []  # whether `prefetch` started its thread in this process


def prefetch(args: list[str]) -> None:
    """Start hashing the single-file datasets of `buildenv lock ARGS`'s environments in a
    thread, once per process: `head_start` calls it first when the lock's plan cannot say
    which files the lock pins (a first lock), `start` otherwise."""
    if _prefetching:
        return
    _prefetching.append(True)
    threading.Thread(target=_prefetch, args=(args,), name="buildenv-early", daemon=True).start()


def _start_runner(args: list[str]) -> None:
    """When the environments named declare derived datasets, start their transforms' process
    now, in this (the main) thread: it dies with it (`compile.early_runner` says why)."""
    try:
        names, options = _options(args)
        if "--check" in options:
            return  # it builds nothing unless the lock pins what this checkout lacks
        from buildenv.compile import start_recipe

        # the recipe before the YAML: it only exists where a build ran transforms, the build
        # adopts its process only if it is the one it computes, and reading YAML (its import)
        # would delay the start
        if start_recipe.begin(_root(options.get("--root")), names):
            return  # started from the last build's recipe, or nothing it knows is stale
        env_dir, _ = _config(_root(options.get("--root")))
        if not any(isinstance(ds.get("source"), dict) and "transform" in ds["source"]
                   for ds in _datasets(env_dir, names, ("source",))):
            return
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while it starts: as during the command
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        return
    from buildenv.compile import early_runner

    try:
        early_runner.begin(options.get("--root"), names)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while it starts: as during the command
        early_runner.discard()
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    names, options = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            if key in _FLAGS_WITH_VALUE and not eq and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            options[key] = value
        elif not arg.startswith("-"):
            names.append(arg)
        i += 1
    return names, options


def _root(option: str | None) -> Path:
    if option:
        return Path(option).resolve()
    if os.environ.get("BUILDENV_ROOT"):
        return Path(os.environ["BUILDENV_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() or (candidate / "environments").is_dir():
            return candidate
    return here


def _prefetch(args: list[str]) -> None:
    try:
        names, options = _options(args)
        if options.get("--executor") == "ray":
            return
        algorithm = options.get("--algorithm", "sha256")
        if algorithm not in ("sha256", "blake3"):
            return
        root = _root(options.get("--root"))
        env_dir, cache_dir = _config(root)
        datasets = _single_files(env_dir, names)
        from buildenv.data.lock.digests import StatCache, prefetch
        from buildenv.data.storage import locate

        cache = StatCache(root / cache_dir / "statcache.json")

        class _Root:  # what `locate` needs of a Project
            data_base = root

        for uri, fmt in datasets:
            if "://" in uri and not uri.startswith("file://"):
                continue  # object stores: the command's own pass streams them
            prefetch(locate(uri, _Root()), fmt, algorithm, cache)  # type: ignore[arg-type]
    except Exception:
        return


def _single_files(env_dir: Path, names: list[str]) -> dict[tuple[str, str], None]:
    """(uri, format) of every single-file dataset the environments name, read from their YAML
    without the environment model: pydantic is still importing."""
    from buildenv.env.uris import names_directory

    datasets: dict[tuple[str, str], None] = {}
    for ds in _datasets(env_dir, names, ("uri", "format")):
        uri, fmt = ds.get("uri"), ds.get("format") or "parquet"
        if isinstance(uri, str) and not names_directory(uri) and isinstance(fmt, str):
            datasets[(uri, fmt)] = None
    return datasets


def _datasets(env_dir: Path, names: list[str], keys: tuple[str, ...]) -> list[dict]:
    """The `keys` of each dataset of the environments `names` (all: empty), from their YAML
    with `extends` followed."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs: dict[str, dict] = {}

    def doc(name: str) -> dict:
        if name not in docs:
            path = env_dir / f"{name}.yaml"
            data = (yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
                    if path.is_file() else None)
            docs[name] = data if isinstance(data, dict) else {}
        return docs[name]

    wanted = names or sorted(p.stem for p in env_dir.glob("*.yaml"))
    out: list[dict] = []
    for name in wanted:
        chain = [name]
        while isinstance(doc(chain[-1]).get("extends"), str) and len(chain) < 32:
            chain.append(doc(chain[-1])["extends"])
        merged: dict[str, dict] = {}
        for link in reversed(chain):  # root first, as `extends` overlays
            for ds_name, ds in (doc(link).get("datasets") or {}).items():
                if ds is None:
                    merged.pop(ds_name, None)
                elif isinstance(ds, dict):
                    merged.setdefault(ds_name, {}).update(
                        {k: v for k, v in ds.items() if k in keys})
        out += merged.values()
    return out


def _config(root: Path) -> tuple[Path, str]:
    env_dir, cache_dir = "environments", ".buildenv"
    path = root / "pyproject.toml"
    if path.is_file():
        import tomllib

        tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {}).get(
            "buildenv", {})
        env_dir = str(tool.get("environments_dir", env_dir))
        cache_dir = str(tool.get("cache_dir", cache_dir))
    return root / env_dir, cache_dir
