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
from collections.abc import Callable
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
                       "pyproject.toml or environments/; env BUILDENV_ROOT).")
FormatOpt = typer.Option(Format.text, "--format", help="Diagnostics as text, json or sarif.")
ExecutorOpt = typer.Option(None, "--executor", help="Where the per-file work on partitioned "
                           "datasets runs: local (this process) or ray (BUILDENV_RAY_ADDRESS / "
                           "RAY_ADDRESS, else a local Ray). Default: [tool.buildenv] executor, "
                           "else local.")


def open_project(root: Optional[Path], data_root: Optional[Path] = None):
    from buildenv.core.project import Project

    return Project.discover(root, data_root)


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


def finish(diagnostics: list[Diagnostic], fmt: Format) -> None:
    emit(diagnostics, fmt)
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise typer.Exit(1)


# --- environments ------------------------------------------------------------------------
