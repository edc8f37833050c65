"""`buildenv import gx|tfdv`: environment columns from another tool's schema (the adoption path).

The YAML goes to stdout; what could not be translated, or only in part, goes to stderr as
warnings (BE903 expectation, BE904 TFDV field, BE905 approximation), each with its reason and
the line of the source file when known. Exit 0 when the file was read (1 with --strict when
anything was left out), 2 when it is not a suite or schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import Format, RootOpt, app, command, emit, open_project
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.

import_app = typer.Typer(name="import", no_args_is_help=True,
                         help="Print environment columns translated from a Great Expectations "
                              "suite or a TFDV schema, or datasets from a Feast feature "
                              "service.")
app.add_typer(import_app, name="import")

DatasetOpt = typer.Option(..., "--dataset", help="Dataset name the columns are printed under.")
StrictOpt = typer.Option(False, "--strict", help="Exit 1 when anything was not translated "
                         "exactly.")


@import_app.command("gx")
@command
def import_gx(suite: Path = typer.Argument(..., help="Expectation suite JSON file (GX 0.x or "
                                           "1.x)."),
              dataset: str = DatasetOpt, strict: bool = StrictOpt) -> None:
    """Translate a Great Expectations expectation suite into environment columns."""
    from buildenv.env.importers.gx import GxError, import_suite

    text = _read(suite)
    try:
        imported = import_suite(text)
    except GxError as exc:
        raise DiagnosticError([Diagnostic("BE901", str(exc), str(suite), exc.line, exc.col)],
                              2) from None
    _print(imported, suite, dataset, "gx", "BE903", strict)


@import_app.command("tfdv")
@command
def import_tfdv(schema: Path = typer.Argument(..., help="TFDV schema in protobuf text format "
                                              "(schema.pbtxt)."),
                dataset: str = DatasetOpt, strict: bool = StrictOpt) -> None:
    """Translate a TFDV schema (text proto) into environment columns."""
    from buildenv.env.importers.tfdv import TfdvError, import_schema

    text = _read(schema)
    try:
        imported = import_schema(text)
    except TfdvError as exc:
        raise DiagnosticError([Diagnostic("BE902", str(exc), str(schema), exc.line, exc.col)],
                              2) from None
    _print(imported, schema, dataset, "tfdv", "BE904", strict)


@import_app.command("feast")
@command
def import_feast(repo: Path = typer.Argument(..., help="Feast feature repository (the "
                                             "directory with feature_store.yaml)."),
                 feature_service: str = typer.Option(..., "--feature-service",
                                                     help="The feature service to import."),
                 env: Optional[str] = typer.Option(None, "--env", help="Write (or update) "
                                                   "environments/ENV.yaml instead of "
                                                   "printing."),
                 root: Optional[Path] = RootOpt, strict: bool = StrictOpt) -> None:
    """Datasets of a Feast feature service: served and training-only features, keys, dtypes."""
    import yaml  # only this command reads an environment's YAML

    from buildenv.env.importers.feast_import import (
        FeastError,
        describe_service,
        environment_text,
        translate,
    )

    project = open_project(root)
    try:
        imported = translate(describe_service(project, repo, feature_service),
                             feature_service, repo, project)
    except FeastError as exc:
        raise DiagnosticError([Diagnostic(exc.code, exc.message, str(repo),
                                          hints=tuple(h for h in exc.hints if h))],
                              1 if exc.code == "BE909" else 2) from None
    header = (f"buildenv import feast {repo} --feature-service {feature_service}"
              + (f" --env {env}" if env else ""))
    if env is None:
        print(environment_text(imported, None, None, header), end="")
    else:
        path = project.environments_dir / f"{env}.yaml"
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        from buildenv.core.atomic import atomic_write_text

        atomic_write_text(path, environment_text(imported, env, existing, header))
        print(f"{project.rel(path)}: {'updated' if existing else 'written'} "
              f"({len(imported.datasets)} dataset(s) from feature service {feature_service})")
    warnings = [Diagnostic("BE908", f"{item}: not translated", str(repo),
                           severity=Severity.WARNING) for item in imported.skipped]
    emit(warnings, Format.text)
    if strict and warnings:
        raise typer.Exit(1)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DiagnosticError([Diagnostic("BE900", f"cannot read '{path}': {reason}")],
                              2) from None


def _print(imported, path: Path, dataset: str, tool: str, code: str, strict: bool) -> None:
    from buildenv.env.importers.common import render_yaml

    print(render_yaml(imported, dataset, f"buildenv import {tool} {path.name} --dataset "
                      f"{dataset}"), end="")
    warnings = [Diagnostic("BE905" if s.approximate else code,
                           f"{s.what}: {'approximate' if s.approximate else 'not translated'}"
                           f": {s.reason}", str(path), s.line, None, Severity.WARNING)
                for s in imported.skipped]
    emit(warnings, Format.text)
    if strict and warnings:
        raise typer.Exit(1)
