"""Building derived datasets: what `buildenv lock` and a build run for `source: {transform}`.

In dependency order (a derived input first), for each derived dataset of an environment: check
the transform statically (its module and function exist; its `ctx.read` calls name inputs and
declared columns, `compile.check` as for a training), plan its output files
(`data.lock.derived.plan_derived`: one per file of the first input, keyed by code and input
digests), run the transform in the build's hermetic process for the files whose output is not
stored yet -- in one process, or in several at once when many files are stale
(`compile.derive_claims`) -- store each output under the key of the repository files the
code read in that run (`_keyed_by_reads`), lay the dataset out and pin it. A new day of input costs one day of transform; changing the transform's code reruns every
file; an unchanged dataset costs a stat per output.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from buildenv.compile import early_runner
from buildenv.compile.check import check_training
from buildenv.compile.derive_claims import Claims, processes_for
from buildenv.compile.derive_reports import Reports
from buildenv.compile.source_process import SourceProcess
from buildenv.compile.verify import located
from buildenv.core import progress
from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project, TrainingConfig
from buildenv.core.tempdirs import owned_temp_dir, sweep
from buildenv.data.lock.derived import (
    DerivedPlan,
    DerivedStore,
    OutputFile,
    Pinned,
    Staged,
    declared_files,
    materialize,
    narrowed,
    plan_derived,
)
from buildenv.data.lock.lockfile import RESTRICTED_OUTPUT, LockedDataset
from buildenv.data.lock.read_files import declared, locked_reads, pinnable
from buildenv.env.resolve import Resolved
from buildenv.env.source_rules import derived_order

__all__ = ["Built", "build_derived", "transform_problems"]


@dataclass
class Built:
    entries: dict[str, LockedDataset] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)
    ran: dict[str, int] = field(default_factory=dict)  # dataset -> output files built


def transform_problems(project: Project, res: Resolved, name: str) -> list[Diagnostic]:
    """Static problems of a derived dataset's transform: BE091 when its module or function is
    missing, else the training checks on an environment of its inputs (BE101, BE102, ...)."""
    ds = res.env.datasets[name]
    source = ds.source
    assert source is not None
    place = ("datasets", name, "source", "transform")
    path = project.root / source.module_path
    if not path.is_file():
        return [res.diag("BE091", f"dataset '{name}': transform module '{source.module_path}' "
                         "not found", *place, hints=("the transform is `path/relative/to/"
                                                     "root.py:function`",))]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=source.module_path)
    except SyntaxError as exc:
        return [Diagnostic("BE100", f"syntax error: {exc.msg}", source.module_path, exc.lineno,
                           exc.offset)]
    if not any(isinstance(n, ast.FunctionDef) and n.name == source.function for n in tree.body):
        return [res.diag("BE091", f"dataset '{name}': '{source.module_path}' defines no "
                         f"top-level function '{source.function}'", *place)]
    unmatched = declared(project.root, source.files)[1]
    if unmatched:
        return [res.diag("BE090", f"dataset '{name}': `files` glob '{g}' matches no file of "
                         "the repository", "datasets", name, "source", "files",
                         source.files.index(g), hints=(
                             "globs are relative to the repository root (`config/*.yaml`, "
                             "`lookups/**/*.csv`); fix the glob or drop it",))
                for g in unmatched]
    view = Resolved(narrowed(res.env, list(source.inputs)), res.chain, res.raw, res.origin)
    config = TrainingConfig(entry=source.transform)
    found = check_training(project, f"transform of dataset '{name}'", config, view)
    return [_not_an_input(p, res, name) for p in found]


def _not_an_input(problem: Diagnostic, res: Resolved, name: str) -> Diagnostic:
    """BE101 of a dataset the environment declares: what is wrong is that the transform does
    not list it among its inputs (the check saw the inputs only). The dataset comes from the
    finding's `subject`, never from its wording."""
    read = problem.subject if problem.code == "BE101" else None
    if read is None or read not in res.env.datasets:
        return problem
    source = res.env.datasets[name].source
    assert source is not None
    hint = (f"a derived dataset cannot read its own output, nor a dataset made from it: read "
            f"an input ({', '.join(source.inputs)})" if _made_from(res, read, name) else
            f"add '{read}' to datasets.{name}.source.inputs, or read an input")
    return replace(problem, message=f"dataset '{read}' is not an input of derived dataset "
                   f"'{name}' (inputs: {', '.join(source.inputs)})", hints=(hint,))


def _made_from(res: Resolved, dataset: str, name: str) -> bool:
    """Whether `dataset` is `name` or derived from it, directly or not."""
    seen, todo = set(), [dataset]
    while todo:
        current = todo.pop()
        if current == name:
            return True
        ds = res.env.datasets.get(current)
        if current in seen or ds is None or ds.source is None:
            continue
        seen.add(current)
        todo.extend(ds.source.inputs)
    return False


def build_derived(project: Project, res: Resolved, pins: dict[str, Pinned],
                  only: set[str] | None = None) -> Built:
    """Build and pin the derived datasets of `res` (all, or `only` those), given the pins of
    its other datasets."""
    store = DerivedStore(project)
    sweep(store.scratch)  # what a killed build left, records included
    built = Built()
    try:
        _build_all(project, res, pins, only, store, built)
    finally:  # a process started early that nothing took: nothing derived is stale
        early_runner.discard()
    return built


def _build_all(project: Project, res: Resolved, pins: dict[str, Pinned], only: set[str] | None,
               store: DerivedStore, built: Built) -> None:
    current = dict(pins)
    previous = locked_reads(project, res.name)
    for name in derived_order(res.env):
        ds = res.env.datasets[name]
        assert ds.source is not None
        if only is not None and name not in only:
            continue
        if any(i not in current for i in ds.source.inputs):
            continue  # an input failed: its problem is reported
        plan = todo = None
        processes: list[SourceProcess] = []
        try:
            if (project.root / ds.source.module_path).is_file():
                plan = plan_derived(project, res.env, name, current,
                                    previous.get(("datasets", name), ()))
                todo = [f for f in plan.files if store.get(f.key) is None]
                if todo:  # it imports while the code is checked (or since the command began)
                    inputs = list(ds.source.inputs)
                    start = (project, res, (ds.source.module_path,), narrowed(res.env, inputs),
                             {i: m for i in inputs if (m := current[i].manifest) is not None})
                    processes.append(early_runner.take(*start) or SourceProcess.start(*start))
                    early_runner.remember(project, res, name, processes[0], len(plan.files))
                    if processes[0].box.brokered:  # the others ask it for their files
                        for _ in range(processes_for(len(todo), ds.source.processes) - 1):
                            processes.append(early_runner.take(*start)
                                             or SourceProcess.start(*start))
                    early_runner.discard()  # started for a larger build than this one
            found = transform_problems(project, res, name)
            built.problems.extend(found)
            if any(p.is_error for p in found):
                continue
            assert plan is not None and todo is not None  # the module exists
            if processes:
                with progress.task(f"derive {name} ({len(todo)} of {len(plan.files)} files)"):
                    problems, plan = _run(project, processes, res, plan, todo, current,
                                          store)
                built.problems.extend(problems)
                if any(p.is_error for p in problems):
                    continue
                built.ran[name] = len(todo)
        finally:  # every process, on every way out (a failure, Ctrl-C)
            for process in processes:
                process.close()
        value, manifest, withheld = materialize(project, plan, store)
        if withheld:
            built.problems.append(res.diag(
                "BE095", f"dataset '{name}': {withheld:,} aggregate row(s) summarise fewer "
                "input rows than the minimum group size and were withheld", "datasets", name,
                "source", "aggregation", severity=Severity.WARNING))
        # a restricted output's exact size and rows say how many rows the user's code kept
        # (a relock differences them), and so do its files' (each file's count is the code's
        # choice): the lock pins it by digests alone; the store keeps the counts
        withheld = res.env.restricted(name)
        if withheld and manifest is not None:
            manifest = manifest.withhold()
        digest = manifest.digest if manifest is not None else value.digest
        built.entries[name] = LockedDataset(
            ds.uri, "parquet", digest, None if withheld else value.size,
            None if withheld else value.rows, manifest, derived=plan.record(),
            counts_withheld=RESTRICTED_OUTPUT if withheld else None)
        current[name] = Pinned(digest, manifest)


def _run(project: Project, processes: list[SourceProcess], res: Resolved, plan: DerivedPlan,
         todo: list[OutputFile], current: dict[str, Pinned], store: DerivedStore
         ) -> tuple[list[Diagnostic], DerivedPlan]:
    """Run the transform over `todo` in `processes` (several: each asks for its next file,
    `compile.derive_claims`) and store every output once all succeeded; the problems of the
    first failure in the files' order, and the plan keyed by the files the code read."""
    source = plan.ds.source
    assert source is not None
    first = current[source.inputs[0]]
    entries = {f.path: f for f in first.manifest.files} if first.manifest is not None else {}
    aggregation = None
    if source.aggregation is not None:
        aggregation = {"count": source.aggregation.count,
                       "min_group_size": source.aggregation.min_group_size
                       or res.env.privacy.min_group_size}
    claims = Claims(len(todo)) if len(processes) > 1 else None
    runs: list[_Runner] = []
    claimed = None
    try:
        for number, process in enumerate(processes):
            runs.append(_Runner.open(process, plan.name, todo, store))
            if claims is not None:
                process.box.add_service("claim", claims.service(number))
        pins = {i: current[i].digest for i in source.inputs}
        manifests = {i: m for i in source.inputs if (m := current[i].manifest) is not None}
        for run in runs:
            files = [{"input_path": f.input_path,
                      "entry": entries[f.input_path].to_json() if f.input_path else None,
                      "values": dict(f.values), "out": str(run.work / f"{i}.parquet")}
                     for i, f in enumerate(todo)]
            run.job = {"kind": "transform", "dataset": plan.name, "transform": source.transform,
                       "inputs": list(source.inputs),
                       "columns": [[c, col.dtype] for c, col in plan.ds.columns.items()],
                       "partitions": list(plan.partitions), "aggregation": aggregation,
                       "files": files, "claim": claims is not None,
                       "reports": str(run.reports.fifo) if run.reports is not None else None}

        def call(run: _Runner) -> dict[str, Any]:
            return run.process.run(res, [run.job], pins, manifests, source.timeout,
                                   source.module_path,
                                   f"raise `datasets.{plan.name}.source.timeout`")

        _execute(runs, claims, call)
        failed = _first_failure(runs)
        if failed is not None:
            return [located(res, d) for d in failed.get("diagnostics", [])] or [res.diag(
                "BE345", f"dataset '{plan.name}': the transform's process reported no result",
                "datasets", plan.name, "source")], plan
        owner = claims.owner if claims is not None else dict.fromkeys(range(len(todo)), 0)
        claimed = owned_temp_dir(store.scratch, "derive-claim")
        final = _keyed_by_reads(project, res, plan, todo, runs, current, store)
        keys = {f.key: g.key for f, g in zip(plan.files, final.files)}
        return _store(res, plan, todo, runs, owner, claimed, store, keys), final
    finally:
        for run in runs:
            run.close()
        if claimed is not None:
            shutil.rmtree(claimed, ignore_errors=True)


def _keyed_by_reads(project: Project, res: Resolved, plan: DerivedPlan,
                    todo: list[OutputFile], runs: list[_Runner], current: dict[str, Pinned],
                    store: DerivedStore) -> DerivedPlan:
    """The plan whose keys hold the repository files the code read in this run (beside its
    modules), when they are not the ones the plan was made with (the last lock's): every file
    built, exactly those; some files built, those added to the last lock's (the others' outputs
    were made without reading the new ones, and are stored under their new keys too)."""
    read: set[str] = set()
    for run in runs:
        for paths in (run.result or {}).get("reads") or []:
            read.update(p for p in paths if isinstance(p, str))
    kept = set(pinnable(project, res.env, plan.code, read))
    kept.update(declared_files(project, res.env, plan.name, plan.code))
    if len(todo) < len(plan.files):
        kept |= set(plan.reads)
    if kept == set(plan.reads):
        return plan
    final = plan_derived(project, res.env, plan.name, current, sorted(kept))
    built = {f.key for f in todo}
    for before, after in zip(plan.files, final.files):
        if before.key not in built:
            store.alias(before.key, after.key)
    return final


def _execute(runs: list[_Runner], claims: Claims | None,
             call: Callable[[_Runner], dict[str, Any]]) -> None:
    """`call` each process's run, the first in this thread and the others in threads of their
    own; on any way out every process has ended (Ctrl-C kills them)."""
    def execute(run: _Runner) -> None:
        try:
            run.result = call(run)
        except Exception as exc:  # a bug here: raised in the build's thread below
            run.error = exc
        finally:
            run.staged = run.reports.stop() if run.reports is not None else {}
            if claims is not None and not (run.result or {}).get("ok"):
                claims.stop()  # the others end after their current file

    others = [threading.Thread(target=execute, args=(run,), name="derive-runner", daemon=True)
              for run in runs[1:]]
    for thread in others:
        thread.start()
    try:
        execute(runs[0])
        for thread in others:
            thread.join()
    except BaseException:  # Ctrl-C: the other processes go too, which ends their threads
        for run in runs[1:]:
            run.process.kill()
        for thread in others:
            thread.join()
        raise
    for run in runs:
        if run.error is not None:
            raise run.error


def _store(res: Resolved, plan: DerivedPlan, todo: list[OutputFile], runs: list[_Runner],
           owner: dict[int, int], claimed: Path, store: DerivedStore, keys: dict[str, str]
           ) -> list[Diagnostic]:
    """Store every output of a build whose processes all succeeded, each from the process it
    was handed to (moved into `claimed` first, or its copy taken while the process ran),
    under its key in `keys` (the plan's key -> the key by what the code read)."""
    source = plan.ds.source
    assert source is not None
    taken: dict[int, Path] = {}
    for index, f in enumerate(todo):
        run = runs[owner[index]] if index in owner else None
        out = str(run.work / f"{index}.parquet") if run is not None else ""
        if run is None or out not in (run.result or {}).get("outputs", {}):
            return [res.diag(  # a transform that asked for files itself
                "BE345", f"dataset '{plan.name}': the transform's processes reported no "
                f"output of input file '{f.input_path or source.inputs[0]}'",
                "datasets", plan.name, "source", "transform",
                hints=("a transform builds the file it is called for; it asks the build "
                       "for nothing",))]
        if index in run.staged:
            continue
        path = _claim(run.fd, f"{index}.parquet", claimed)
        if path is None:
            return [res.diag(
                "BE322", f"dataset '{plan.name}': the transform {source.transform} left "
                f"something else than the file it wrote in place of the output of input "
                f"file '{f.input_path or source.inputs[0]}' (a link, or a special "
                "file): the build never reads through it; nothing was stored",
                "datasets", plan.name, "source", "transform",
                hints=("a transform returns its rows; it does not touch its output files",))]
        taken[index] = path
    for index, f in enumerate(todo):
        run = runs[owner[index]]
        outputs = (run.result or {})["outputs"]
        withheld = int(outputs[str(run.work / f"{index}.parquet")]["withheld"])
        copy = run.staged.get(index)
        if copy is not None:  # the bytes hashed while the runner ran
            store.commit(keys[f.key], copy, withheld)
        else:
            store.put(keys[f.key], taken[index], withheld)
    return []


def _first_failure(runs: list[_Runner]) -> dict[str, Any] | None:
    """The result to report of processes that failed: one that failed outside any file (a
    time limit, a crash, the sandbox) first, else the one whose failing file comes first."""
    failed = [run.result or {} for run in runs if not (run.result or {}).get("ok")]
    if not failed:
        return None
    return min(failed, key=lambda r: (isinstance(r.get("failed"), int), r.get("failed") or 0))


@dataclass
class _Runner:
    """One process's part of a build: its output directory (held open: what the transform
    renames, or links in its place, later is never followed), its reports, its result."""

    process: SourceProcess
    work: Path
    fd: int
    reports: Reports | None
    job: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: Exception | None = None
    staged: dict[int, Staged] = field(default_factory=dict)

    @classmethod
    def open(cls, process: SourceProcess, name: str, todo: list[OutputFile],
             store: DerivedStore) -> _Runner:
        work = owned_temp_dir(process.out, f"derive-{name}")
        fd = os.open(work, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
        try:  # outputs are copied and hashed as the runner names them, while it goes on
            reports = Reports.start(work, [f.key for f in todo], store)
        except BaseException:
            os.close(fd)
            shutil.rmtree(work, ignore_errors=True)
            raise
        return cls(process, work, fd, reports)

    def close(self) -> None:
        os.close(self.fd)
        if self.reports is not None:
            self.reports.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _claim(work_fd: int, name: str, claimed: Path) -> Path | None:
    """Move output `name` out of the directory the build holds open (`work_fd`: the one it
    made, wherever the transform moved it or whatever it left at its path) into this
    build's own scratch, and return it there when it is the plain file the runner wrote.
    None for anything else (missing, a link, a special file: a transform could leave a link
    to a file its sandbox hides, an input's raw rows): the build never reads through it.
    A rename moves the entry itself, never what a link names."""
    target = claimed / name
    try:
        os.rename(name, target, src_dir_fd=work_fd)
        st = os.lstat(target)
    except OSError:
        return None
    return target if stat.S_ISREG(st.st_mode) else None

