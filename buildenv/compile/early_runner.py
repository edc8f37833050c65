"""Starting the transforms' process before `buildenv lock` knows it needs one.

A rebuild of a derived dataset after one input file changed is two interpreters: the
command's own start-up (typer, the lock's modules, hashing) and then the process that runs the
transform (pandas, pyarrow, buildenv's gate), each about as long as the user's whole script.
So when the environments a `buildenv lock` names declare derived datasets, `cli.early` calls
`begin` right after the quick lock failed: it resolves the environment and starts the
transforms' process as `derive` would start it for the first derived dataset, in its sandbox
-- while the command imports the rest and hashes the inputs. Its broker serves nothing yet:
which files it may hand over depends on the digests.

`take` is what `derive` asks first: the process is adopted only if the sandbox, command and
environment the build computes now, in that process's work directory, equal those it was
started with, it is still waiting for its request and it has asked its broker for nothing;
the broker then gets the files the build computed. Anything else closes it and the build
starts its own, so the sandbox is always the one the build computes. `discard` kills a
process nobody took (at the end of the derived datasets' build, and at exit); it also dies
with the command (bubblewrap's and the kernel's parent-death signal).

Sooner still: `remember` keeps how the build started each derived dataset's process
(`compile.start_recipe`, in the user's cache), and `start_recipe.begin` starts the next one
from that before pydantic is even imported; `take` checks it the same way.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from buildenv.compile import start_recipe
from buildenv.compile.sandbox import CLOUD_PREFIXES
from buildenv.compile.source_process import SourceProcess, _sandbox, _signature
from buildenv.core.project import Project
from buildenv.core.tempdirs import scratch_dir
from buildenv.data.lock.derived import narrowed
from buildenv.data.lock.lockfile import lock_path, stat_cache_path
from buildenv.data.lock.manifest import Manifest
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.source_rules import derived_order
from buildenv.env.spec import Environment

__all__ = ["begin", "discard", "outcomes", "remember", "started_pid",
           "take"]

_held: list[SourceProcess] = []
outcomes: list[str] = []
"""What became of each process started early: `adopted`, `restarted` (the build's sandbox
differed, or the process was not waiting) or `discarded` (nothing took it)."""


def begin(root: str | None, names: list[str]) -> None:
    """Start the transforms' process of the first derived dataset (in the lock's order) of
    the environments `names` (all: empty) whose inputs or code changed since the lock, in the
    project at `root` (None: found from the working directory). Any problem only means no
    early start: the command reports it."""
    try:
        project = Project.open(root)
        multiverse = Multiverse(project)
        for name in sorted(names or multiverse.names()):
            res = multiverse.resolve(name)
            for ds_name in derived_order(res.env):
                source = res.env.datasets[ds_name].source
                assert source is not None
                if not (project.root / source.module_path).is_file():
                    continue  # its static check fails: `derive` starts nothing for it
                if not _changed_since_lock(project, res, ds_name, source.module_path,
                                           list(source.inputs)):
                    continue
                reads = narrowed(res.env, list(source.inputs))
                _held.append(SourceProcess.start(project, res, (source.module_path,), reads, {},
                                                 early=True))
                atexit.register(discard)
                return
    except Exception:  # an environment that does not resolve, no project, a sandbox refused
        discard()


def remember(project: Project, res: Resolved, name: str, process: SourceProcess,
             files: int) -> None:
    """Keep how `process` (started or adopted for derived dataset `name`, of `files` output
    files) was started, for the next lock's `start_recipe.begin`: its command, environment and
    confinement request (in its work directory's terms), the paths `start_recipe.stale` looks
    at, and the files and cap a full build's processes follow (`start_recipe.others`). Not
    with `BUILDENV_NO_PREFETCH`, which turns early starts off."""
    if os.environ.get("BUILDENV_NO_PREFETCH"):
        return
    signature = {k: process.signature.get(k) for k in ("command", "env", "request",
                                                        "mechanism", "fds")}
    env = signature.get("env") or {}
    if (signature.get("request") is None or "unique" in process.signature
            or any(str(k).startswith(CLOUD_PREFIXES) for k in env)):
        # No recipe for a runner without a sandbox (its environment is the caller's, with any
        # cloud credentials in it: they are never written to a file), nor for a signature that
        # equals no other.
        return
    try:
        text = json.dumps(signature)
    except (TypeError, ValueError):
        return
    source = res.env.datasets[name].source
    assert source is not None
    watch, remote = [str(project.root / source.module_path)], False
    for input_name in source.inputs:
        local = locate(res.env.datasets[input_name].uri, project).local
        remote = remote or local is None
        watch += [str(local)] if local is not None else []
    output = locate(res.env.datasets[name].uri, project).local
    entry: dict[str, Any] = {**json.loads(text.replace(json.dumps(str(process.work))[1:-1], "<work>")),
             "environment": res.name, "dataset": name, "cwd": str(project.root),
             "state_dir": str(project.data_state_dir), "watch": watch, "remote": remote,
             "output": None if output is None else str(output),
             "files": files, "cap": source.processes,
             "lock": str(lock_path(project, res.name)),
             "stat_cache": str(stat_cache_path(project))}
    start_recipe.save(project.root, entry)


def _changed_since_lock(project: Project, res: Resolved, name: str, module: str,
                        inputs: list[str]) -> bool:
    """Whether the transform's module or a local file of its inputs changed (its inode's
    change time, which no tool sets back) since the environment's lock was written, or there
    is no lock or no output of dataset `name`: a guess whether it is stale, so that a relock
    of unchanged data starts no process for nothing. A wrong guess costs a process (or the
    early start), never a result: the build decides."""
    output = locate(res.env.datasets[name].uri, project).local
    if output is not None and not output.exists():
        return True
    try:
        since = lock_path(project, res.name).stat().st_mtime_ns
    except OSError:
        return True
    try:  # a relock that changed nothing in the lock still records the files' new stats
        since = max(since, stat_cache_path(project).stat().st_mtime_ns)
    except OSError:
        pass
    paths = [str(project.root / module)]
    for name in inputs:
        location = locate(res.env.datasets[name].uri, project)
        if location.local is None:
            return True  # an object store: no cheap answer
        paths.append(str(location.local))
    return start_recipe.changed_since(paths, since)


def take(project: Project, res: Resolved, modules: tuple[str, ...], reads: Environment,
         manifests: dict[str, Manifest]) -> SourceProcess | None:
    """A process started early, if it is the one `SourceProcess.start` would start now
    (`SourceProcess.adopt`); None after closing it otherwise, or when there is none. A build
    of several processes asks once for each; `discard` then kills those left over."""
    if not _held and not start_recipe.pending:
        return None
    held: SourceProcess | start_recipe.Started = (
        start_recipe.pending.pop() if start_recipe.pending else _held.pop())
    try:
        if isinstance(held, start_recipe.Started):
            process = _adopt_started(held, project, res, modules, reads, manifests)
        else:
            process = held if held.adopt(project, res, modules, reads, manifests) else None
    except BaseException:
        held.close()
        raise
    if process is not None:
        outcomes.append("adopted")
        return process
    held.close()
    outcomes.append("restarted")
    return None


def _adopt_started(started: start_recipe.Started, project: Project, res: Resolved,
                   modules: tuple[str, ...], reads: Environment,
                   manifests: dict[str, Manifest]) -> SourceProcess | None:
    """`SourceProcess.adopt` for a process started from a recipe: adopted only if it still
    waits, has asked its broker nothing, and the sandbox the build computes in its work
    directory has the signature it was started with (then that sandbox takes over its broker
    socket, status pipe and private file)."""
    if started.proc.poll() is not None or Path(started.entry["cwd"]) != project.root \
            or started.work.parent != scratch_dir(project.data_state_dir):
        return None  # ended, or not where `SourceProcess.start` would have started it
    box, argv, base_env = _sandbox(project, res, modules, reads, manifests, started.work)
    signature = _signature(box, argv, base_env)
    computed = {k: signature[k] for k in ("command", "env", "request", "mechanism", "fds")}
    if json.loads(json.dumps(computed)) != started.signature() or started.asked():
        box.close()
        return None
    box.adopt_started(started.ours, started.status, started.private)
    started.ours = started.status = None  # the sandbox's now
    process = SourceProcess(project, started.proc, started.work, started.log, box)
    process.signature = signature
    return process


def discard() -> None:
    """Kill the process started early if nothing took it, and remove its work directory."""
    while _held:
        _held.pop().close()
        outcomes.append("discarded")
    while start_recipe.pending:
        start_recipe.pending.pop().close()
        outcomes.append("discarded")


def started_pid() -> int | None:
    """The pid of the process started early and not yet taken (bubblewrap's, when it wraps
    the runner)."""
    held = start_recipe.pending or _held
    return held[-1].proc.pid if held else None

