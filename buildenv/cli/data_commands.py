"""Commands about data: lock, validate, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import (
    DataFormat,
    ExecutorOpt,
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    finish,
    open_project,
    progress_shown,
    quieted,
)
from buildenv.cli.lock_command import lock
from buildenv.core.diagnostics import Diagnostic, DiagnosticError

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.


@app.command("lock")
@command
def lock_cmd(envs: Optional[list[str]] = typer.Argument(None, help="Environments (default: all)."),
             root: Optional[Path] = RootOpt,
             algorithm: str = typer.Option("sha256", "--algorithm",
                                           help="sha256 (default) or blake3"),
             check: bool = typer.Option(False, "--check", help="Only report locks that are "
                                        "missing or stale; write nothing."),
             executor: Optional[str] = ExecutorOpt,
             fmt: Format = FormatOpt, progress: Optional[bool] = ProgressOpt,
             quiet: bool = QuietOpt) -> None:
    """Pin every dataset's content digest in environments/<name>.lock.json."""
    lock(envs, root, algorithm, check, executor, fmt, progress, quiet)


@app.command("validate")
@command
def validate_cmd(env: str = typer.Argument(..., help="Environment name."),
                 dataset: Optional[list[str]] = typer.Option(None, "--dataset",
                                                             help="Only these datasets."),
                 serving: Optional[str] = typer.Option(
                     None, "--serving", help="Check this serving data instead (Parquet, CSV or "
                     "JSON lines of requests; uri like a dataset's) against the served columns "
                     "of the datasets."),
                 executor: Optional[str] = ExecutorOpt,
                 root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
                 progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Check every dataset against its declared columns (or serving data against the served
    ones)."""
    from buildenv.data.executor import make_executor
    from buildenv.data.validate.validate import validate_env
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    for name in dataset or []:
        if name not in res.env.datasets:
            from buildenv.core.diagnostics import did_you_mean

            hint = did_you_mean(name, res.env.datasets)
            raise DiagnosticError([Diagnostic("BE009", f"unknown dataset '{name}' in "
                                              f"environment {env}",
                                              hints=(hint,) if hint else ())], 2)
    if serving is not None:
        from buildenv.data.validate.serving import validate_serving
        from buildenv.monitor.triage import model_inputs

        with progress_shown(progress, quiet):
            result = validate_serving(res, multiverse.project, serving,
                                      list(dataset) if dataset else None,
                                      model_inputs(multiverse.project, env))
        if fmt is Format.text and not quieted(result.problems, fmt, quiet):
            print(f"{env}: serving data valid ({result.rows} rows, {result.checked} served "
                  "column(s) checked)")
        finish(result.problems, fmt, quiet)
        return
    from buildenv.data.lock.lockfile import read_lock

    try:
        lock = read_lock(multiverse.project, env)
    except DiagnosticError:
        lock = None  # an unreadable lock is `lock --check`'s to report
    with progress_shown(progress, quiet), make_executor(executor, multiverse.project) as runner:
        problems = _unbuilt(multiverse, res, dataset) if lock is not None else []
        problems += validate_env(res, multiverse.project,
                                 datasets=list(dataset) if dataset else None, executor=runner,
                                 lock=lock)
        if not any(p.is_error for p in problems) and (
                not dataset or res.env.label_dataset() in dataset):
            problems += _coverage(multiverse.project, res)
    if fmt is Format.text and not quieted(problems, fmt, quiet):  # --quiet: warnings too
        print(f"{env}: {len(dataset or res.env.datasets)} dataset(s) valid")
    finish(problems, fmt, quiet)


def _unbuilt(multiverse, res, only: list[str] | None) -> list[Diagnostic]:
    """Derived datasets this checkout does not hold (outputs are not committed) built from the
    lock, as `lock --check` and `build` build them; BE094 when one does not come out as
    pinned. Nothing runs when every output validated (`only`, else all) is there."""
    from buildenv.data.storage import locate

    missing = [n for n, ds in res.env.datasets.items() if ds.source is not None
               and (not only or n in only)
               and (path := locate(ds.uri, multiverse.project).local) is not None
               and not path.exists()]
    if not missing:
        return []
    from buildenv.compile.locking import checked_lock

    _, found = checked_lock(multiverse, res)
    return [p for p in found if p.code == "BE094" and p.is_error]


def _coverage(project, res) -> list[Diagnostic]:
    """`label.coverage` of the data as it is now (like validation, unpinned)."""
    from buildenv.labels.coverage import coverage_problems

    return coverage_problems(project, res)


@app.command("audit")
@command
def audit_cmd(env: Optional[str] = typer.Argument(None, help="Only reads in this environment."),
              verify: bool = typer.Option(False, "--verify", help="Check the hash chain; exit 1 "
                                          "naming the first record that was edited, removed "
                                          "or reordered."),
              root: Optional[Path] = RootOpt,
              fmt: DataFormat = typer.Option(DataFormat.yaml, "--format",
                                             help="table (yaml) or json")) -> None:
    """Every read of a restricted dataset: who, why, which data, how many rows."""
    from buildenv.data.gate.audit import AuditLog

    project = open_project(root)
    log = AuditLog(project.data_state_dir)
    if verify:
        checked, broken = log.verify()
        if broken is None:
            print(f"audit log {project.rel(log.path)}: {checked} record(s), hash chain intact")
            return
        raise DiagnosticError([Diagnostic(
            "BE801", f"record {broken.line} is broken: {broken.reason} ({checked} record(s) "
            "before it hold)", project.rel(log.path), broken.line,
            hints=("restore the log from a backup; records after a broken one cannot be "
                   "trusted",))], 1)
    records = [r for r in log.records() if env is None or r.get("environment") == env]
    if fmt is DataFormat.json:
        print(json.dumps({"log": project.rel(log.path), "records": records}, indent=2))
        return
    rows = [("SEQ", "TIME", "ACTOR", "OS USER", "PURPOSE", "ENVIRONMENT", "DATASET", "ROWS",
             "DIGEST", "COLUMNS")]
    for r in records:
        digest = (r.get("digest") or "-").split(":", 1)[-1][:12]
        outcome = (r.get("details") or {}).get("outcome")
        purpose = r.get("purpose", "-") + (f" ({outcome})" if outcome not in (None, "read")
                                           else "")
        rows.append((str(r.get("seq")), str(r.get("time", "-"))[:19], str(r.get("actor", "-")),
                     str(r.get("os_user", "-")), purpose, str(r.get("environment") or "-"), str(r.get("dataset")),
                     f"{r['rows']:,}" if isinstance(r.get("rows"), int) else "-", digest,
                     ",".join(r.get("columns") or [])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if len(rows) == 1:
        print("(no reads of restricted datasets recorded)")
