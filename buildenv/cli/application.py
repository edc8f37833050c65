"""The `buildenv` command line (SPEC §6).

Thin: each command parses flags, calls the library, and renders diagnostics.
Exit codes: 0 success, 1 the command ran and found errors, 2 usage or
configuration error, 3 an internal error (a bug: please report it).
Heavy libraries (pandas, sklearn, mlflow) are imported inside the commands
that need them, so `envs`, `check` and no-op builds start fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum

import typer

from buildenv.cli.outcome import (  # noqa: F401 (the command modules import them from here)
    Format,
    emit,
    guarded,
    open_project,
    progress_shown,
    quieted,
)
from buildenv.core.diagnostics import Diagnostic, Severity

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


def command(func: Callable) -> Callable:
    """Turn DiagnosticError into rendered diagnostics + exit code; never a traceback for input
    (`outcome.guarded`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        fmt = kwargs.get("fmt", Format.text)
        if not isinstance(fmt, Format):
            fmt = Format.text
        return guarded(functools.partial(func, *args, **kwargs), fmt, typer.Exit, typer.Exit)

    return wrapper


def finish(diagnostics: list[Diagnostic], fmt: Format, quiet: bool = False) -> None:
    emit(quieted(diagnostics, fmt, quiet), fmt)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(1)


# --- environments ------------------------------------------------------------------------
