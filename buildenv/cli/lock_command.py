"""`buildenv lock`'s work, without typer: the typer command (`data_commands.lock_cmd`) and the
plain command line (`quick_lock.run_full`) both run it.

A `buildenv lock` that the lock's plan cannot answer (an environment edited, a first lock) pays
the whole start-up; typer and its conversion of the command's parameters are about a tenth of
it, so a plain command line (what `quick_lock` parses) runs this without them, with the
outcome the typer command has (`outcome.guarded`: the same diagnostics and exit codes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from buildenv.cli import collector
from buildenv.cli.outcome import Format, emit, open_project, progress_shown, quieted
from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.data.lock import quick

if TYPE_CHECKING:  # the quick path imports this module: the lock file's module loads later
    from buildenv.data.lock.lockfile import Lock

__all__ = ["lock", "summary"]

# Deferred imports (buildenv): the quick path imports this module (for `summary`); the lock's
# rooms (the environment models, pydantic) load only when the full lock runs.


def summary(name: str, datasets: int, rows: int, changed: bool, labels: str = "",
            withheld: int = 0) -> str:
    """The line `buildenv lock` prints for one environment; `rows` of the datasets whose counts
    the lock shows, `withheld` how many it withholds (docs/privacy.md)."""
    state = "updated" if changed else "unchanged"
    kept = f", rows of {withheld} withheld" if withheld else ""
    return (f"{name}: {state} ({datasets} dataset{'' if datasets == 1 else 's'}, {rows:,} rows"
            f"{kept}{labels})")


def _labels_text(lock: Lock) -> str:
    """', 2 label set(s), 1,200 annotations' -- the annotations of the sets whose counts the
    lock shows (not those computed over restricted data)."""
    if not lock.labels:
        return ""
    shown = [e.annotations for e in lock.labels.values() if e.annotations is not None]
    withheld = len(lock.labels) - len(shown)
    if not shown:
        return f", {len(lock.labels)} label set(s), counts withheld"
    return (f", {len(lock.labels)} label set(s), {sum(shown):,} annotations"
            + (f" (counts of {withheld} withheld)" if withheld else ""))


def lock(envs: Optional[list[str]], root: Optional[Path], algorithm: str, check: bool,
         executor: Optional[str], fmt: Format, progress: Optional[bool], quiet: bool) -> None:
    """Pin every dataset's content digest in environments/<name>.lock.json; an exit code other
    than 0 is raised (SystemExit), a DiagnosticError is the caller's to render."""
    from buildenv.compile.locking import checked_lock, lock_environments
    from buildenv.data.executor import make_executor
    from buildenv.env.resolve import Multiverse

    collector.resume()  # the imports are done (`buildenv.cli.collector`)
    if algorithm not in ("sha256", "blake3"):
        raise DiagnosticError([Diagnostic("BE004", f"unknown digest algorithm '{algorithm}'",
                                          hints=("use sha256 or blake3",))], 2)
    multiverse = Multiverse(open_project(root))
    project = multiverse.project
    # what a plan of this lock is valid for, read before the lock reads anything
    inputs = (None if check or executor else
              quick.inputs_digest(project.root, project.environments_dir, algorithm))
    names = list(envs or multiverse.names())
    for name in names:
        multiverse.require(name)
    if check:
        resolved, problems = multiverse.resolve_all(names)
        config_error = any(p.is_error for p in problems)  # invalid environment files
        with progress_shown(progress, quiet), make_executor(executor, multiverse.project) as runner:
            for res in resolved.values():
                try:
                    # data made by code that this checkout lacks is rebuilt from the lock
                    problems.extend(checked_lock(multiverse, res, executor=runner)[1])
                except DiagnosticError as exc:  # unreadable lock file (BE054, BE013), Ray
                    problems.extend(exc.diagnostics)
                    config_error = True
        if fmt is Format.text and not quieted(problems, fmt, quiet):  # --quiet: warnings too
            print(f"{len(resolved)} lock(s) up to date")
        emit(quieted(problems, fmt, quiet), fmt)
        if any(p.is_error for p in problems):
            raise SystemExit(2 if config_error else 1)
        return
    with progress_shown(progress, quiet), make_executor(executor, multiverse.project) as runner:
        results, problems = lock_environments(multiverse, names, algorithm, executor=runner)
    if not problems and project.config.executor == "local":
        # the next `buildenv lock` of these environments, unchanged, needs none of the above
        resolved = {name: multiverse.resolve(name) for name, _, _ in results}
        quick.record(project, resolved, results, algorithm, inputs, multiverse.meanings())
    if fmt is Format.text and not quiet:
        for name, lock, changed in results:
            print(summary(name, len(lock.datasets),
                          sum(d.rows for d in lock.datasets.values() if d.rows is not None),
                          changed, _labels_text(lock),
                          sum(d.rows is None for d in lock.datasets.values())))
    elif fmt is Format.text and results:
        updated = sum(changed for _, _, changed in results)
        print(f"{len(results)} lock(s): {updated} updated, {len(results) - updated} unchanged")
    emit(quieted(problems, fmt, quiet), fmt)
    if any(p.is_error for p in problems):
        # an invalid environment file is a configuration error (2); bad data is 1
        raise SystemExit(2 if any(p.is_error and not _found(p.code) for p in problems)
                         else 1)


# Problems of the data itself, or of the code that makes data (exit 1), not of the environment
# files (exit 2).
_DATA_CODES = {"BE053", "BE056", "BE061", "BE062", "BE065", "BE067", "BE853", "BE854", "BE855", "BE856",
               "BE857", "BE858", "BE860", "BE862", "BE863", "BE867"}
_CODE_CODES = {"BE091", "BE094", "BE870", "BE871", "BE872", "BE873", "BE874", "BE876", "BE877",
               "BE322", "BE323", "BE324", "BE327"}  # and what the sandbox refused user code


def _found(code: str) -> bool:
    """Whether an error is found in the data or in user code (transforms, labeling
    functions, their static checks BE1xx and runs BE34x) rather than in the configuration."""
    return code in _DATA_CODES or code in _CODE_CODES or code.startswith(("BE1", "BE34"))
