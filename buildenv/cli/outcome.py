"""What every command does with its outcome, without typer: diagnostics rendered, exit codes.

The typer application (`application`) builds its commands on these; `lock_command` uses them
alone, so that a plain `buildenv lock` that the lock's plan cannot answer runs the full lock
without importing typer (`quick_lock.run_full`). Exit codes: 0 success, 1 the command ran and
found errors, 2 usage or configuration error, 3 an internal error (a bug: please report it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from buildenv.core.diagnostics import (
    Diagnostic,
    DiagnosticError,
    Severity,
    render,
    sort_diagnostics,
)

__all__ = ["Format", "emit", "guarded", "open_project", "progress_shown", "quieted"]

# Deferred imports (buildenv): the project's models (pydantic) and the progress view load only
# when a command opens a project or shows progress.


class Format(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


def open_project(root: Optional[Path], data_root: Optional[Path] = None) -> Any:
    """The project the command works on; BE040 (exit 2) outside of one."""
    from buildenv.core.project import Project

    return Project.open(root, data_root)


def emit(diagnostics: list[Diagnostic], fmt: Format, stream: Any = None) -> None:
    stream = stream or (sys.stdout if fmt is not Format.text else sys.stderr)
    if diagnostics or fmt is not Format.text:
        print(render(sort_diagnostics(diagnostics), fmt.value), file=stream)


def guarded(work: Callable[[], Any], fmt: Format,
            exits: type[BaseException] | tuple[type[BaseException], ...] = (),
            exit_with: Callable[[int], BaseException] = SystemExit) -> Any:
    """`work()`, with a DiagnosticError rendered (`emit`) and its exit code, Ctrl-C 130, a
    closed stdout 0, and any other exception (a bug, not bad input) exit 3 with a hint, never a
    traceback (unless BUILDENV_DEBUG); each exit code raised as `exit_with(code)`. `exits` (the
    command line library's own exit) pass through."""
    try:
        return work()
    except DiagnosticError as exc:
        emit(exc.diagnostics, fmt)
        raise exit_with(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise exit_with(130) from None
    except exits:
        raise
    except BrokenPipeError:  # `buildenv schema | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise exit_with(0) from None
    except Exception as exc:  # a bug, not bad input
        if os.environ.get("BUILDENV_DEBUG"):
            raise
        print(f"buildenv: internal error: {type(exc).__name__}: {exc}\n"
              "  hint: rerun with BUILDENV_DEBUG=1 for the traceback, and please report it",
              file=sys.stderr)
        raise exit_with(3) from None


def quieted(diagnostics: list[Diagnostic], fmt: Format, quiet: bool) -> list[Diagnostic]:
    """--quiet keeps errors only, in text; machine formats (json, sarif) are never trimmed."""
    if quiet and fmt is Format.text:
        return [d for d in diagnostics if d.severity is Severity.ERROR]
    return diagnostics


@contextmanager
def progress_shown(progress: Optional[bool], quiet: bool = False) -> Iterator[None]:
    """Show the progress of the work inside the block on stderr (docs/progress.md).

    Wrap the work, not the output: the live view is erased when the block ends, before the
    command prints its results. `--progress`/`--no-progress` win over BUILDENV_PROGRESS;
    `--quiet` turns progress off unless `--progress` is given."""
    from buildenv.cli import progress_view
    from buildenv.core import progress as tasks

    try:
        mode = progress_view.chosen_mode(progress, quiet)
    except ValueError as exc:
        raise DiagnosticError([Diagnostic("BE004", str(exc))], 2) from None
    try:
        reporter = progress_view.renderer(sys.stderr, mode)
    except ValueError as exc:
        raise DiagnosticError([Diagnostic("BE004", str(exc))], 2) from None
    with tasks.installed(reporter):
        yield
