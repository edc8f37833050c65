"""Commands about label sets: labels, tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import DataFormat, Format, RootOpt, app, command, emit, open_project

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("labels")
@command
def labels_cmd(env: str = typer.Argument(..., help="Environment name."),
               root: Optional[Path] = RootOpt,
               fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                              help="yaml (for people) or json")) -> None:
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


@app.command("tasks")
@command
def tasks_cmd(env: str = typer.Argument(..., help="Environment name."),
              labels: str = typer.Option(..., "--labels", help="The label set the tasks are for "
                                         "(its UI version and taxonomy)."),
              out: Path = typer.Option(..., "--out", help="A new (or empty) directory: one "
                                       "Label Studio import file per annotator."),
              select: str = typer.Option("unlabeled", "--select",
                                         help="unlabeled | relabel | disagreement | conflict"),
              overlap: int = typer.Option(1, "--overlap", help="Annotators per example."),
              annotators: str = typer.Option(..., "--annotators",
                                             help="Comma-separated annotator ids."),
              seed: int = typer.Option(0, "--seed", help="Order and assignment seed."),
              root: Optional[Path] = RootOpt,
              fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                             help="yaml (for people) or json")) -> None:
    """Annotation tasks for a label set, one file per annotator, with no double exposure."""
    from buildenv.compile.locking import checked_lock
    from buildenv.compile.tasks_export import export_tasks
    from buildenv.core.diagnostics import DiagnosticError
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    lock, problems = checked_lock(multiverse, res)
    if lock is None or any(p.is_error for p in problems):
        raise DiagnosticError(problems, 1)
    names = [a.strip() for a in annotators.split(",")]
    done = export_tasks(multiverse, res, lock, labels, out, select, overlap, names, seed)
    if fmt is DataFormat.json:
        print(json.dumps({"label_set": done.label_set, "select": done.select,
                          "examples": done.examples, "overlap": overlap,
                          "per_annotator": done.per_annotator, "out": done.out},
                         sort_keys=True))
    else:
        print(f"{done.examples:,} example(s) of label set '{done.label_set}' ({done.select}), "
              f"{overlap} annotator(s) each, written to {done.out}:")
        for name, n in done.per_annotator.items():
            print(f"  {name}.json  {n:,} task(s)")
