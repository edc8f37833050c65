"""Commands that watch data after release: drift, and training/serving skew."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import (
    ExecutorOpt,
    Format,
    FormatOpt,
    ProgressOpt,
    QuietOpt,
    RootOpt,
    app,
    command,
    open_project,
    progress_shown,
)

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.

HtmlOpt = typer.Option(None, "--html", help="Also write a self-contained HTML report.")
AllOpt = typer.Option(False, "--all", help="Show suppressed alerts too.")


@app.command("drift")
@command
def drift_cmd(env: str = typer.Argument(..., help="Environment whose locked version is the "
                                        "baseline."),
              dataset: Optional[str] = typer.Option(None, "--dataset",
                                                    help="Dataset to compare."),
              labels: Optional[str] = typer.Option(None, "--labels", help="Compare the class "
                                                   "shares of this label set instead of a "
                                                   "dataset."),
              against_labels: Optional[str] = typer.Option(None, "--against-labels",
                                                           help="With --labels: the label set "
                                                           "to compare with (default: the "
                                                           "same name)."),
              against: Optional[str] = typer.Option(None, "--against", help="Candidate data "
                                                    "(uri like a dataset's; csv by extension)."),
              against_lock: Optional[str] = typer.Option(None, "--against-lock", help="Compare "
                                                         "with this environment's locked "
                                                         "version instead."),
              serving: Optional[str] = typer.Option(None, "--serving", help="Compare with "
                                                    "serving data instead (Parquet, CSV or JSON "
                                                    "lines of requests): served columns only."),
              stats: Optional[Path] = typer.Option(None, "--stats", help="Statistics JSON "
                                                   "(default .buildenv/drift/<env>/"
                                                   "<dataset>-<digest12>.json)."),
              html: Optional[Path] = HtmlOpt, all_: bool = AllOpt,
              executor: Optional[str] = ExecutorOpt,
              root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
              progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Drift between the locked version of a dataset (or label set) and a candidate."""
    from buildenv.core.diagnostics import Diagnostic, DiagnosticError
    from buildenv.data.executor import make_executor
    from buildenv.monitor.drift import run_drift

    project = open_project(root)
    if (dataset is None) == (labels is None):
        raise DiagnosticError([Diagnostic("BE004", "drift compares one thing: --dataset NAME "
                                          "or --labels NAME")], 2)
    if labels is not None:
        from buildenv.monitor.label_drift import run_label_drift

        if against is not None or serving is not None:
            raise DiagnosticError([Diagnostic("BE004", "--against and --serving take data; "
                                              "label sets are compared with --against-labels "
                                              "/ --against-lock")], 2)
        with progress_shown(progress, quiet):
            result = run_label_drift(project, env, labels, against_labels=against_labels,
                                     against_lock=against_lock)
    else:
        assert dataset is not None
        with progress_shown(progress, quiet), make_executor(executor, project) as runner:
            result = run_drift(project, env, dataset, against=against,
                               against_lock=against_lock, serving=serving, executor=runner)
    _report(result, project, stats, html, fmt, all_, quiet)


@app.command("skew")
@command
def skew_cmd(env: str = typer.Argument(..., help="Environment whose locked version of the "
                                       "dataset is the training data."),
             dataset: str = typer.Option(..., "--dataset", help="Dataset whose served columns "
                                         "are compared."),
             serving: str = typer.Option(..., "--serving", help="Serving data: Parquet, CSV or "
                                         "JSON lines of requests (uri like a dataset's; the "
                                         "serving app's request log)."),
             key: Optional[list[str]] = typer.Option(None, "--key", help="Join serving rows to "
                                                     "training rows on this column (repeat for "
                                                     "several) and count differing values."),
             stats: Optional[Path] = typer.Option(None, "--stats", help="Statistics JSON "
                                                  "(default .buildenv/skew/<env>/"
                                                  "<dataset>-<digest12>.json)."),
             html: Optional[Path] = HtmlOpt, all_: bool = AllOpt,
             executor: Optional[str] = ExecutorOpt,
             root: Optional[Path] = RootOpt, fmt: Format = FormatOpt,
             progress: Optional[bool] = ProgressOpt, quiet: bool = QuietOpt) -> None:
    """Training/serving skew: the locked training data against serving data, per served
    column."""
    from buildenv.data.executor import make_executor
    from buildenv.monitor.drift import run_skew

    project = open_project(root)
    with progress_shown(progress, quiet), make_executor(executor, project) as runner:
        result = run_skew(project, env, dataset, serving, key=list(key) if key else None,
                          executor=runner)
    _report(result, project, stats, html, fmt, all_, quiet)


def _report(result, project, stats: Optional[Path], html: Optional[Path], fmt: Format,
            all_: bool, quiet: bool) -> None:
    """Write the statistics file (and the HTML page), print the report, exit 0 or 1."""
    from buildenv.monitor.drift import write_stats
    from buildenv.monitor.report import render, write_html

    write_stats(result, project, stats)
    if html is not None:
        write_html(result, html)
    print(render(result, fmt.value, show_all=all_, quiet=quiet))
    raise typer.Exit(result.exit_code)
