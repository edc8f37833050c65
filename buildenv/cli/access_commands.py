"""Commands that let people learn about restricted data without seeing it: stats, synth, and
the audited break-glass read, peek."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from buildenv.cli.application import RootOpt, app, command, open_project

# Deferred imports (buildenv): every command module is imported when `buildenv` starts; a command
# imports its rooms when it runs, so it pays only for what it uses.

__all__: list[str] = []


class ReportFormat(str, Enum):
    text = "text"
    json = "json"


ReportFormatOpt = typer.Option(ReportFormat.text, "--format", help="text or json")


def _columns(value: Optional[str]) -> list[str] | None:
    if not value:
        return None
    return [c.strip() for c in value.split(",") if c.strip()] or None


@app.command("stats")
@command
def stats_cmd(env: str = typer.Argument(..., help="Environment name."),
              dataset: str = typer.Option(..., "--dataset", help="Dataset to describe."),
              columns: Optional[str] = typer.Option(None, "--columns",
                                                    help="Comma-separated columns (default: "
                                                    "every declared column)."),
              epsilon: float = typer.Option(1.0, "--epsilon", help="Privacy loss this call "
                                            "spends (restricted datasets), split over its "
                                            "figures."),
              bins: int = typer.Option(20, "--bins", help="Histogram bins over a range."),
              root: Optional[Path] = RootOpt,
              fmt: ReportFormat = ReportFormatOpt) -> None:
    """Per-column statistics; differentially private (OpenDP) for restricted datasets."""
    from buildenv.access.dp_stats import run_stats
    from buildenv.access.stats_text import render_stats
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    report = run_stats(multiverse.project, res, dataset, _columns(columns), epsilon, bins)
    if fmt is ReportFormat.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_stats(report))


def _pair(value: Optional[str]) -> tuple[str, str] | None:
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        from buildenv.core.diagnostics import Diagnostic, DiagnosticError

        raise DiagnosticError([Diagnostic("BE824", f"--pair takes two columns, 'a,b' (got "
                                          f"'{value}')", hints=("e.g. --pair age,plan",))], 2)
    return parts[0], parts[1]


@app.command("synth")
@command
def synth_cmd(env: str = typer.Argument(..., help="Environment holding the restricted data."),
              dataset: str = typer.Option(..., "--dataset", help="Restricted dataset to stand "
                                          "in for."),
              rows: int = typer.Option(..., "--rows", help="Synthetic rows to write."),
              epsilon: float = typer.Option(1.0, "--epsilon", help="Privacy loss the fit "
                                            "spends."),
              seed: int = typer.Option(0, "--seed", help="Seed of the sampling from the fitted "
                                       "model (the private measurements are always fresh)."),
              bins: int = typer.Option(16, "--bins", help="Bins each range is cut into."),
              out: Optional[str] = typer.Option(None, "--out", help="Output uri, relative to "
                                                "the root (default: data/synthetic/<ENV>/<D>."
                                                "parquet)."),
              pair: Optional[str] = typer.Option(None, "--pair", help="Two columns 'a,b' whose "
                                                 "dependency the fidelity report compares."),
              root: Optional[Path] = RootOpt,
              fmt: ReportFormat = ReportFormatOpt) -> None:
    """A differentially private synthetic stand-in (MST) and the <ENV>-synthetic environment."""
    from buildenv.access.synth_text import render_synth
    from buildenv.access.synthesize import run_synth
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    report = run_synth(multiverse, res, dataset, rows, epsilon, seed, bins, out, _pair(pair))
    if fmt is ReportFormat.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_synth(report))


@app.command("peek")
@command
def peek_cmd(env: str = typer.Argument(..., help="Environment name."),
             dataset: str = typer.Option(..., "--dataset", help="Dataset to look at."),
             rows: int = typer.Option(..., "--rows", help="Most rows to show."),
             reason: Optional[str] = typer.Option(None, "--reason", help="Why a person must see "
                                                  "real rows (recorded in the audit log)."),
             columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated "
                                                   "columns (default: all declared)."),
             invalid: Optional[str] = typer.Option(None, "--invalid", help="Only rows whose "
                                                   "COLUMN breaks its declaration."),
             root: Optional[Path] = RootOpt,
             fmt: ReportFormat = ReportFormatOpt) -> None:
    """Audited break-glass read of real rows (allowed actors only, with a reason)."""
    from buildenv.access.peek import peek
    from buildenv.env.resolve import Multiverse

    multiverse = Multiverse(open_project(root))
    res = multiverse.resolve(env)
    table = peek(multiverse.project, res, dataset, rows, reason, _columns(columns), invalid)
    if fmt is ReportFormat.json:
        print(json.dumps({"environment": env, "dataset": dataset,
                          "rows": table.to_pylist()}, indent=2, default=str))
        return
    names = table.column_names
    cells = [names] + [["" if v is None else str(v) for v in row.values()]
                       for row in table.to_pylist()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"({table.num_rows} row(s) shown; the access is in the audit log)")
