"""A training's toolchain: its lock (known before anything runs) and the interpreter that runs it.

`training_toolchain` answers "which exact distributions will this training run with": the
training's `lock` file as written, or the lock of its requirements, resolved once per distinct
input (requirements, indexes, constraints, interpreter, uv version) and kept in the store.
`runner_interpreter` then finds or creates the environment of that lock. In `interpreter`
mode (the Pants plugin's: the training's resolve is the interpreter running buildenv) the
toolchain is that interpreter, and its lock is the list of its installed distributions.
"""

from __future__ import annotations

import functools
import platform
import re
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.project import Project, TrainingConfig
from buildenv.env.resolve import Resolved
from buildenv.toolchain.lockfile import Lock, LockError, parse_lock
from buildenv.toolchain.pins import RUNNER
from buildenv.toolchain.requirements import RUNNER_ORIGIN, Wanted, training_requirements
from buildenv.toolchain.store import Store
from buildenv.toolchain.uv import UvFailure, UvSettings, run_uv, uv_version

__all__ = ["Interpreter", "Toolchain", "base_python", "ensure_environment", "environment_path",
           "environment_ready", "installed_packages", "resolve_lock", "runner_interpreter",
           "training_toolchain"]


@dataclass(frozen=True)
class Toolchain:
    """What a training runs with."""

    mode: str  # "resolve" | "interpreter"
    digest: str  # the lock's digest (interpreter mode: of its installed distributions)
    packages: dict[str, str]  # canonical name -> version
    source: str  # "resolved", the lock file's path, or "interpreter"
    python: str  # X.Y.Z
    lock: Lock | None = None
    wanted: tuple[Wanted, ...] = field(default=(), repr=False)

    def lineage(self) -> dict[str, object]:
        return {"mode": self.mode, "lock": self.digest, "source": self.source,
                "python": self.python, "packages": dict(self.packages)}


@dataclass(frozen=True)
class Interpreter:
    """How to start the runner: its Python, what goes on PYTHONPATH, extra variables."""

    python: str
    pythonpath: tuple[str, ...]
    env: dict[str, str]
    created: bool = False  # this call built the environment

    def runtime_paths(self) -> tuple[str, ...]:
        """What a sandbox must show the runner besides the interpreter's own trees: its
        PYTHONPATH (the runner's directory in the toolchain store) and, to read, its bytecode
        cache (a sandboxed runner cannot write there; Python then just skips the cache)."""
        cache = self.env.get("PYTHONPYCACHEPREFIX")
        return (*self.pythonpath, *([cache] if cache else []))

    def cache_trees(self) -> tuple[str, ...]:
        """Whose sources may go into its bytecode cache: the environment, the runner and the
        standard library the environment was made from (never the repository or data)."""
        venv = self.env.get("VIRTUAL_ENV")
        stdlib = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
        return (*([venv] if venv else []), *self.pythonpath, *sorted(p for p in stdlib if p))


def base_python() -> str:
    """The interpreter environments are made from: this one's base (not a venv's copy)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _python_key() -> dict[str, str]:
    return {"version": platform.python_version(), "implementation":
            platform.python_implementation(), "platform": sysconfig.get_platform(),
            "executable": base_python()}


@functools.cache
def installed_packages() -> dict[str, str]:
    """The distributions of the interpreter running buildenv: its lock in interpreter mode.
    Names and versions come from each metadata file's header lines (`_name_version`), not
    from parsing the whole file as an e-mail twice (`dist.metadata`, `dist.version`: the long
    description included; a tenth of the time, on the build's path before the training
    starts); a header the quick read does not find is taken the slow way."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = _name_version(dist)
        if name:
            out.setdefault(canonicalize_name(name), version)
    return dict(sorted(out.items()))


def _name_version(dist: metadata.Distribution) -> tuple[str | None, str]:
    """(Name, Version) of a distribution's metadata: the first of each header line, read up
    to the blank line that ends the headers; `dist.metadata` when either is missing or folded
    onto a continuation line."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    lines = text.split("\n\n", 1)[0].splitlines()
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in found:
            folded = i + 1 < len(lines) and lines[i + 1][:1] in (" ", "\t")
            if folded:
                break
            found[key] = value.lstrip(" \t")
    if len(found) < 2 or not all(found.values()):
        return dist.metadata["Name"], dist.version
    return found["Name"], found["Version"]


def training_toolchain(project: Project, training: str, config: TrainingConfig,
                       res: Resolved, upgrade: bool = False) -> Toolchain:
    """The toolchain of `training` in `res`: BE350-BE354 (exit 2) when it cannot be had."""
    python = platform.python_version()
    if project.config.toolchains.mode == "interpreter":
        packages = installed_packages()
        return Toolchain("interpreter", digest_json(packages), packages, "interpreter", python)
    if config.lock is not None:
        lock = _lock_file(project, training, config.lock)
        return Toolchain("resolve", lock.digest, lock.packages, config.lock, python, lock)
    wanted = training_requirements(project, training, config, res)
    lock = resolve_lock(project, wanted, f"training '{training}'", upgrade)
    return Toolchain("resolve", lock.digest, lock.packages, "resolved", python, lock,
                     tuple(wanted))


def resolve_lock(project: Project, wanted: list[Wanted], who: str, upgrade: bool = False,
                 pins: list[str] | None = None) -> Lock:
    """The lock of `wanted` (constrained to `pins`, `name==version` lines): from the store
    when these inputs were resolved before."""
    settings = UvSettings.of(project)
    text = "".join(f"{w.text}\n" for w in wanted)
    pinned = "".join(f"{p}\n" for p in pins or [])
    key = digest_json({"requirements": text, "pins": pinned, "settings": settings.key(),
                       "python": _python_key(), "uv": uv_version()}).split(":", 1)[1]
    store = Store(project.toolchains_dir)
    cached = None if upgrade else store.read_resolved(key)
    if cached is None:
        with store.resolving(key):
            cached = None if upgrade else store.read_resolved(key)
            if cached is None:
                cached = _compile(store, settings, text, pinned, wanted, who)
                store.save_resolved(key, cached)
    return parse_lock(cached)


def _compile(store: Store, settings: UvSettings, text: str, pinned: str,
             wanted: list[Wanted], who: str) -> str:
    (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="resolve-", dir=store.root / "tmp") as scratch:
        source = Path(scratch) / "requirements.in"
        source.write_text(text, encoding="utf-8")
        out = Path(scratch) / "requirements.lock"
        args = ["pip", "compile", "--no-config", "--quiet", "--generate-hashes",
                "--no-header", "--no-annotate", "--python", base_python(),
                *settings.index_args(), "--output-file", str(out), str(source)]
        constraints = list(settings.constraints)
        if pinned:
            constraints.append(Path(scratch) / "pins.txt")
            constraints[-1].write_text(pinned, encoding="utf-8")
        for constraint in constraints:
            args += ["--constraint", str(constraint)]
        try:
            run_uv(args, settings)
        except UvFailure as exc:
            raise DiagnosticError([_resolve_failure(exc, wanted, who, settings)], 2) from None
        return out.read_text(encoding="utf-8")


def _resolve_failure(exc: UvFailure, wanted: list[Wanted], who: str,
                     settings: UvSettings) -> Diagnostic:
    lines = exc.lines()
    url = exc.unreachable
    hints: tuple[str, ...]
    if url is not None or exc.offline_miss:
        if exc.offline_miss:
            message = (f"the requirements of {who} are not all in uv's cache, and the "
                       f"toolchains are offline: {_short(lines)}")
            hints = ("resolve once with the network (offline = false), or add a wheelhouse to "
                     "[tool.buildenv.toolchains] find_links",)
        else:
            message = (f"the package index did not answer while resolving {who}: {url} "
                       f"({_short(lines[-1:])})")
            hints = (f"check the network and the index ([tool.buildenv.toolchains] index_url; "
                     f"requests time out after {settings.timeout:g} s: `timeout`)",
                     "with the packages already in uv's cache, build offline: "
                     "[tool.buildenv.toolchains] offline = true (or UV_OFFLINE=1)")
        return Diagnostic("BE352", message, *_first_declared(wanted, ""), hints=hints)
    culprit = _first_declared(wanted, exc.stderr)
    where = [f"{w.text} ({w.where()})" for w in wanted if w.origin != RUNNER_ORIGIN]
    pins = ", ".join(f"{n}=={v}" for n, v in RUNNER.items())
    hints = ((f"requested: {', '.join(where)}",) if where else ()) + (
        f"loosen or change the conflicting requirement; buildenv's runner pins: {pins}",)
    return Diagnostic("BE351", f"the requirements of {who} cannot be resolved: "
                      f"{_short(lines)}", *culprit, hints=hints)


def _first_declared(wanted: list[Wanted], message: str) -> tuple[str | None, int | None]:
    """The location of the first requirement the resolver's message names (else the first
    one with a location)."""
    located = [w for w in wanted if w.path]
    named = [w for w in located if w.name in _names_in(message)]
    best = (named or located)[:1]
    return (best[0].path, best[0].line) if best else (None, None)


def _names_in(message: str) -> set[str]:
    return {canonicalize_name(m) for m in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", message)}


def _short(lines: list[str], limit: int = 600) -> str:
    text = " ".join(line for line in lines if not line.lower().startswith("no solution found"))
    text = text or " ".join(lines)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _lock_file(project: Project, training: str, relpath: str) -> Lock:
    path = project.root / relpath
    line = project.config_line("trainings", training, "lock")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiagnosticError([Diagnostic(
            "BE350", f"the lock file of training '{training}' cannot be read: {relpath} "
            f"({type(exc).__name__})", "pyproject.toml", line,
            hints=("write it with `buildenv toolchain TRAINING --env ENV --write-lock "
                   f"{relpath}`",))], 2) from None
    try:
        lock = parse_lock(text)
    except LockError as exc:
        raise DiagnosticError([Diagnostic("BE354", f"{exc}", relpath, exc.line, hints=(
            "a lock pins every distribution to one version with its hashes "
            "(`uv pip compile --generate-hashes`)",))], 2) from None
    missing = [name for name in RUNNER if canonicalize_name(name) not in lock.packages]
    problems = []
    if not lock.hashed:
        problems.append("not every entry has a --hash")
    if missing:
        problems.append("buildenv's runner needs " + ", ".join(missing))
    if problems:
        raise DiagnosticError([Diagnostic(
            "BE354", f"lock file {relpath} of training '{training}' cannot be used: "
            + "; ".join(problems), relpath, None,
            hints=("regenerate it: `buildenv toolchain TRAINING --env ENV --write-lock "
                   f"{relpath}` adds what the runner needs, with hashes",))], 2)
    return lock


def _env_key(toolchain: Toolchain) -> str:
    return digest_json({"lock": toolchain.digest, "python": _python_key()}).split(":", 1)[1]


def environment_path(project: Project, toolchain: Toolchain) -> Path | None:
    """Where the environment of `toolchain` is (or will be); None in interpreter mode."""
    if toolchain.lock is None:
        return None
    return Store(project.toolchains_dir).env_path(_env_key(toolchain))


def environment_ready(project: Project, toolchain: Toolchain) -> bool:
    """Whether `runner_interpreter` finds its interpreter without creating an environment."""
    return toolchain.lock is None or \
        Store(project.toolchains_dir).ready(_env_key(toolchain)) is not None


def ensure_environment(project: Project, toolchain: Toolchain) -> tuple[Path, bool]:
    """The environment of a resolved toolchain, created when it is new (BE352/BE353, exit 2);
    and whether this call created it."""
    assert toolchain.lock is not None
    store = Store(project.toolchains_dir)
    settings = UvSettings.of(project)
    try:
        return store.ensure_env(_env_key(toolchain), toolchain.lock, base_python(), settings)
    except UvFailure as exc:
        raise DiagnosticError([_install_failure(exc, toolchain, settings)], 2) from None


def runner_interpreter(project: Project, toolchain: Toolchain, package_parent: Path
                       ) -> Interpreter | None:
    """The interpreter a training runs in, creating its environment when it is new; None
    for the interpreter running buildenv (interpreter mode)."""
    if toolchain.mode == "interpreter" or toolchain.lock is None:
        return None
    env, created = ensure_environment(project, toolchain)
    store = Store(project.toolchains_dir)
    runner = store.runner_path(package_parent / "buildenv")
    store.pycache.mkdir(parents=True, exist_ok=True)  # a sandbox shows only what exists
    # Bytecode of what the training imports goes to the store, not beside the sources: the
    # environment stays as installed, the repository clean, and later builds start fast.
    return Interpreter(str(Store.python(env)), (str(runner),),
                       {"PYTHONPYCACHEPREFIX": str(store.pycache), "VIRTUAL_ENV": str(env)},
                       created)


def _install_failure(exc: UvFailure, toolchain: Toolchain, settings: UvSettings) -> Diagnostic:
    lines = exc.lines()
    if exc.unreachable is not None or exc.offline_miss:
        return Diagnostic(
            "BE352", f"could not download the locked packages ({toolchain.source}): "
            f"{_short(lines)}",
            hints=("check the network and the index ([tool.buildenv.toolchains] index_url, "
                   f"timeout {settings.timeout:g} s)",
                   "offline: the packages must be in uv's cache or a find_links wheelhouse"))
    hint = ("a hash in the lock does not match the file the index serves: the lock was edited, "
            "or the index replaced the file" if "hash" in exc.stderr.lower() else
            "the hints above are uv's; `buildenv toolchain TRAINING --env ENV` shows the lock")
    return Diagnostic("BE353", f"could not install the training's environment "
                      f"({toolchain.source}): {_short(lines)}", hints=(hint,))
