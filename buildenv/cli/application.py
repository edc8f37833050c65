"""The `buildenv` command line (SPEC §6).

Thin: each command parses flags, calls the library, and renders diagnostics.
Exit codes: 0 success, 1 the command ran and found errors, 2 usage or
configuration error, 3 an internal error (a bug: please report it).
Heavy libraries (pandas, sklearn, mlflow) are imported inside the commands
that need them, so `envs`, `check` and no-op builds start fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from buildenv.core.diagnostics import (
    Diagnostic,
    DiagnosticError,
    Severity,
    render,
    sort_diagnostics,
)

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.

app = typer.Typer(
    name="buildenv",
    help="Compile ML training code against declarative, locked build environments.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


class DataFormat(str, Enum):
    yaml = "yaml"
    json = "json"


RootOpt = typer.Option(None, "--root", help="Repository root (default: nearest parent with "
                       "a [tool.buildenv] table in pyproject.toml or an environments/ "
                       "directory; env BUILDENV_ROOT).")
FormatOpt = typer.Option(Format.text, "--format", help="Diagnostics as text, json or sarif.")
ExecutorOpt = typer.Option(None, "--executor", help="Where the per-file work on partitioned "
                           "datasets runs: local (this process) or ray (BUILDENV_RAY_ADDRESS / "
                           "RAY_ADDRESS, else a local Ray). Default: [tool.buildenv] executor, "
                           "else local.")
# Every long command (lock, validate, drift, build, retrain, image) takes these two.
ProgressOpt = typer.Option(None, "--progress/--no-progress",
                           help="Progress on stderr: a live view on a terminal, status lines "
                           "otherwise (default: on; env BUILDENV_PROGRESS=auto|live|plain|off).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print errors and the final summary only "
                        "(and no progress unless --progress).")


def open_project(root: Optional[Path], data_root: Optional[Path] = None):
    """The project the command works on; BE040 (exit 2) outside of one."""
    from buildenv.core.project import Project

    return Project.open(root, data_root)


def _print_version(value: bool) -> None:
    if value:
        from buildenv import __version__

        print(f"buildenv {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version,
                                       is_eager=True, help="Print buildenv's version and exit."),
          ) -> None:
    """Compile ML training code against declarative, locked build environments."""


def emit(diagnostics: list[Diagnostic], fmt: Format, stream=None) -> None:
    stream = stream or (sys.stdout if fmt is not Format.text else sys.stderr)
    if diagnostics or fmt is not Format.text:
        print(render(sort_diagnostics(diagnostics), fmt.value), file=stream)


def command(func: Callable) -> Callable:
    """Turn DiagnosticError into rendered diagnostics + exit code; never a traceback for input."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        fmt = kwargs.get("fmt", Format.text)
        if not isinstance(fmt, Format):
            fmt = Format.text
        try:
            return func(*args, **kwargs)
        except DiagnosticError as exc:
            emit(exc.diagnostics, fmt)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except BrokenPipeError:  # `buildenv schema | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug, not bad input
            if os.environ.get("BUILDENV_DEBUG"):
                raise
            print(f"buildenv: internal error: {type(exc).__name__}: {exc}\n"
                  "  hint: rerun with BUILDENV_DEBUG=1 for the traceback, and please report it",
                  file=sys.stderr)
            raise typer.Exit(3) from None

    return wrapper


def finish(diagnostics: list[Diagnostic], fmt: Format, quiet: bool = False) -> None:
    emit(quieted(diagnostics, fmt, quiet), fmt)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(1)


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


# --- environments ------------------------------------------------------------------------
