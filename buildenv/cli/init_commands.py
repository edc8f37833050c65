"""`buildenv init`: make a directory a project, and write its first environment from data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import (
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    emit,
    progress_shown,
    quieted,
)
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@app.command("init")
@command
def init_cmd(env: Optional[str] = typer.Option(None, "--env", help="Write environments/ENV.yaml "
                                               "inferred from the --data files."),
             data: list[str] = typer.Option([], "--data", help="[NAME=]PATH of a data file "
                                            "(CSV or Parquet) or a directory of Parquet files; "
                                            "repeat for each dataset."),
             restricted: list[str] = typer.Option([], "--restricted", help="A dataset whose "
                                                  "values must not be written (repeatable)."),
             label: Optional[str] = typer.Option(None, "--label", help="DATASET.COLUMN the "
                                                 "model predicts (default: a guess)."),
             training: str = typer.Option("model", "--training", help="Name of the training "
                                          "declared when the project has none."),
             root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
             progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Make this directory a buildenv project; with --env and --data, infer an environment."""
    from buildenv.core.atomic import create_new_text
    from buildenv.core.project import Project, find_root
    from buildenv.core.scaffold import plan_project, write_plan

    if (env is None) != (not data):
        raise DiagnosticError([Diagnostic("BE004", "--env and --data go together: --env names "
                                          "the environment the --data files are inferred into",
                                          hints=("buildenv init --env prod --data "
                                                 "data/events.csv",))], 2)
    for name, what in ((env, "--env"), (training, "--training")):
        if name is not None and not _NAME.match(name):
            raise DiagnosticError([Diagnostic(
                "BE004", f"{what} '{name}' is not a usable name (letters, digits, '_', '-', "
                "'.'; it names a file)")], 2)
    base = root.resolve() if root else find_root(required=False)
    project = Project.discover(base)
    drafted = None
    notes: list[Diagnostic] = []
    if env is not None:
        target = project.environments_dir / f"{env}.yaml"
        if target.exists():
            raise DiagnosticError([Diagnostic(
                "BE041", f"{project.rel(target)} already exists; init writes new environments "
                "only", hints=("choose another --env name, or move the file away first",))], 2)
        with progress_shown(progress, quiet):
            drafted, notes = _infer(project, env, data, restricted, label)
    plan = plan_project(project.root, training, drafted[1] if drafted else None)
    lines = write_plan(project.root, plan)
    if drafted is not None:
        text, _, summary = drafted
        if not create_new_text(target, text):
            raise DiagnosticError([Diagnostic("BE041", f"{project.rel(target)} appeared while "
                                              "init was inferring it; it was not overwritten")],
                                  1)
        lines.append(f"wrote {project.rel(target)}: {summary}")
        lines.append(f"next: read {project.rel(target)} through, then `buildenv lock {env}`"
                     + ("" if _declares_trainings(plan) else
                        f" and `buildenv build {training} --env {env}`"))
    elif not lines:
        lines.append(f"{project.root} is already a buildenv project")
    emit(quieted(notes, fmt, quiet), fmt)
    if fmt is Format.text:  # machine formats print the diagnostics document alone
        print("\n".join(lines))


def _declares_trainings(plan: list) -> bool:
    """Whether the project declared trainings before init (then init wrote no stub)."""
    return not any(item.path.name.endswith(".py") for item in plan)


def _infer(project, env: str, data: list[str], restricted: list[str], label: Optional[str]):
    """(file text, the model a training stub fits, summary), and the warnings."""
    from buildenv.data.infer.datasets import infer_dataset, label_candidate, parse_sources
    from buildenv.data.infer.draft import draft_environment

    sources = parse_sources(project, data, Path.cwd())
    names = [s.name for s in sources]
    for name in restricted:
        if name not in names:
            hint = did_you_mean(name, names) or f"the datasets are: {', '.join(names)}"
            raise DiagnosticError([Diagnostic("BE009", f"--restricted {name}: no --data "
                                              f"dataset is named '{name}'", hints=(hint,))], 2)
    found, notes = [], []
    for source in sources:
        dataset, problems = infer_dataset(project, env, source, source.name in restricted)
        found.append(dataset)
        notes += problems
    if label is not None:
        ds_name, _, column = label.partition(".")
        match = next((d for d in found if d.name == ds_name), None)
        if match is None or column not in match.columns:
            known = [f"{d.name}.{c}" for d in found for c in d.columns]
            hint = did_you_mean(label, known) or "write DATASET.COLUMN"
            raise DiagnosticError([Diagnostic("BE010", f"--label {label}: no such column in "
                                              "the --data datasets", hints=(hint,))], 2)
        chosen: tuple[str, str] | None = (ds_name, column)
        guessed = False
    else:
        chosen, guessed = label_candidate(found), True
    text, stub, summary = draft_environment(env, found, chosen, guessed)
    return (text, stub, summary), notes
