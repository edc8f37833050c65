"""Commands about label sets: labels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.app import DataFormat, Format, RootOpt, app, command, emit, open_project

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("labels")
@command
def labels_cmd(env: str = typer.Argument(..., help="Environment name."),
               root: Optional[Path] = RootOpt,
               fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                              help="text (yaml) or json")) -> None:
    """Label sets of an environment: counts, classes, annotators, agreement, reuse."""
    from buildenv.compile.label_analysis import function_figures
    from buildenv.compile.locking import checked_lock
    from buildenv.core.diagnostics import Diagnostic, DiagnosticError
    from buildenv.env.resolve import Multiverse
    from buildenv.labels.report import label_report, render_json, render_text

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    computed = None
    notes: list[Diagnostic] = []
    if any(spec.source is not None for spec in res.env.labels.values()):
        lock, found = checked_lock(multiverse, res)
        if lock is None:
            raise DiagnosticError(found, 1)
        computed, notes = function_figures(multiverse.project, res, lock)
    report, problems = label_report(multiverse.project, multiverse, res, computed)
    problems = notes + problems
    if fmt is DataFormat.json:
        print(render_json(report, problems))
    else:
        print(render_text(report))
        emit(problems, Format.text)
    if any(p.is_error for p in problems):
        raise typer.Exit(1)
