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
"""

from __future__ import annotations

import atexit
import os

from buildenv.compile.source_process import SourceProcess
from buildenv.core.project import Project
from buildenv.data.lock.derived import narrowed
from buildenv.data.lock.lockfile import lock_path, stat_cache_path
from buildenv.data.lock.manifest import Manifest
from buildenv.data.storage import locate
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.source_rules import derived_order
from buildenv.env.spec import Environment

__all__ = ["begin", "discard", "outcomes", "started_pid", "take"]

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
    paths = [project.root / module]
    for name in inputs:
        location = locate(res.env.datasets[name].uri, project)
        if location.local is None:
            return True  # an object store: no cheap answer
        paths.append(location.local)
    for path in paths:
        try:
            if path.stat().st_ctime_ns >= since:
                return True
            if path.is_dir() and _newer_inside(str(path), since):
                return True
        except OSError:
            return True
    return False


def _newer_inside(folder: str, since: int) -> bool:
    for entry in os.scandir(folder):
        st = entry.stat(follow_symlinks=False)
        if st.st_ctime_ns >= since or (entry.is_dir(follow_symlinks=False)
                                       and _newer_inside(entry.path, since)):
            return True
    return False


def take(project: Project, res: Resolved, modules: tuple[str, ...], reads: Environment,
         manifests: dict[str, Manifest]) -> SourceProcess | None:
    """The process started early, if it is the one `SourceProcess.start` would start now
    (`SourceProcess.adopt`); None after closing it otherwise, or when there is none."""
    if not _held:
        return None
    process = _held.pop()
    try:
        adopted = process.adopt(project, res, modules, reads, manifests)
    except BaseException:
        process.close()
        raise
    if adopted:
        outcomes.append("adopted")
        return process
    process.close()
    outcomes.append("restarted")
    return None


def discard() -> None:
    """Kill the process started early if nothing took it, and remove its work directory."""
    while _held:
        _held.pop().close()
        outcomes.append("discarded")


def started_pid() -> int | None:
    """The pid of the process started early and not yet taken (bubblewrap's, when it wraps
    the runner)."""
    return _held[-1].proc.pid if _held else None

