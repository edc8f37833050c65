"""Commands about data: lock, validate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.app import (
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    emit,
    finish,
    open_project,
    progress_shown,
    quieted,
)
from buildenv.core.diagnostics import Diagnostic, DiagnosticError


@app.command("lock")
@command
def lock_cmd(envs: Optional[list[str]] = typer.Argument(None, help="Environments (default: all)."),
             root: Optional[Path] = RootOpt,
             algorithm: str = typer.Option("sha256", "--algorithm",
                                           help="sha256 (default) or blake3"),
             check: bool = typer.Option(False, "--check", help="Only report locks that are "
                                        "missing or stale; write nothing."),
             fmt: Format = FormatOpt, progress: Optional[bool] = ProgressOpt,
             quiet: bool = QuietOpt) -> None:
    """Pin every dataset's content digest in environments/<name>.lock.json."""
    from buildenv.data.lock import check_lock, lock_environments
    from buildenv.env.resolve import Multiverse

    if algorithm not in ("sha256", "blake3"):
        raise DiagnosticError([Diagnostic("BE004", f"unknown digest algorithm '{algorithm}'",
                                          hints=("use sha256 or blake3",))], 2)
    mv = Multiverse(open_project(root))
    names = list(envs or mv.names())
    for name in names:
        mv.require(name)
    if check:
        resolved, problems = mv.resolve_all(names)
        config_error = any(p.is_error for p in problems)  # invalid environment files
        with progress_shown(progress, quiet):
            for res in resolved.values():
                try:
                    problems.extend(check_lock(mv, res)[1])
                except DiagnosticError as exc:  # unreadable lock file (BE054, BE013)
                    problems.extend(exc.diagnostics)
                    config_error = True
        if fmt is Format.text and not quieted(problems, fmt, quiet):  # --quiet: warnings too
            print(f"{len(resolved)} lock(s) up to date")
        emit(quieted(problems, fmt, quiet), fmt)
        if any(p.is_error for p in problems):
            raise typer.Exit(2 if config_error else 1)
        return
    with progress_shown(progress, quiet):
        results, problems = lock_environments(mv, names, algorithm)
    if fmt is Format.text and not quiet:
        for name, lock, changed in results:
            rows = sum(d.rows for d in lock.datasets.values())
            state = "updated" if changed else "unchanged"
            print(f"{name}: {state} ({len(lock.datasets)} datasets, {rows} rows)")
    elif fmt is Format.text and results:
        updated = sum(changed for _, _, changed in results)
        print(f"{len(results)} lock(s): {updated} updated, {len(results) - updated} unchanged")
    emit(quieted(problems, fmt, quiet), fmt)
    if any(p.is_error for p in problems):
        # an invalid environment file is a configuration error (2); unreadable data is 1
        raise typer.Exit(2 if any(p.is_error and p.code != "BE053" for p in problems) else 1)


@app.command("validate")
@command
def validate_cmd(env: str = typer.Argument(..., help="Environment name."),
                 dataset: Optional[list[str]] = typer.Option(None, "--dataset",
                                                             help="Only these datasets."),
                 root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
                 progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Check every dataset against its declared columns."""
    from buildenv.data.validate import validate_env
    from buildenv.env.resolve import Multiverse

    mv = Multiverse(open_project(root))
    res = mv.resolve(env)
    for name in dataset or []:
        if name not in res.env.datasets:
            from buildenv.core.diagnostics import did_you_mean

            hint = did_you_mean(name, res.env.datasets)
            raise DiagnosticError([Diagnostic("BE009", f"unknown dataset '{name}' in "
                                              f"environment {env}",
                                              hints=(hint,) if hint else ())], 2)
    with progress_shown(progress, quiet):
        problems = validate_env(res, mv.project, datasets=list(dataset) if dataset else None)
    if fmt is Format.text and not quieted(problems, fmt, quiet):  # --quiet: warnings too
        print(f"{env}: {len(dataset or res.env.datasets)} dataset(s) valid")
    finish(problems, fmt, quiet)
