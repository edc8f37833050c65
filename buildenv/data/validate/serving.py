"""Serving data (`buildenv validate ENV --serving URI`): a batch of what production sent the
model, checked against the environment's served columns (TFDV's SERVING environment).

Serving data holds one row per request, with the model's inputs side by side whatever dataset
declares them, so it is checked against the union of the datasets' columns (`--dataset`
narrows it): a column name is looked up in the first dataset declaring it served (else the
first declaring it at all). Then:

- a served column the data lacks is BE212, unless it is `required: false`;
- a training-only column (`serving: false`, or the label column) the data has is BE211: a
  request should not carry it;
- a column no dataset of the environment declares is BE213 as `undeclared_columns` says (the
  strictest setting of the datasets checked);
- served columns present are checked with the same kernels and judgement as training data:
  dtype, nulls, `min_count`, NaN, domain, range, pattern, length (not `unique`: requests repeat
  keys by nature).

Privacy is the datasets': a column of a restricted dataset is reported with counts only, and
when any dataset checked is restricted the read of the serving data is audited like a read of
that dataset and its decoding errors quote no value.
"""

from __future__ import annotations

from dataclasses import dataclass

from buildenv.core import progress
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, Severity, did_you_mean
from buildenv.core.project import Project
from buildenv.data.gate.dataset_read import DatasetRead
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import format_of, type_accepts
from buildenv.data.gate.gate import Gate
from buildenv.data.validate.column_checks import (
    ColumnChecks,
    ColumnReport,
    check_batch,
    checks_for,
    dictionary_columns,
)
from buildenv.data.validate.violations import UNDECLARED_SHOWN, judge, suggest
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset, Environment
from buildenv.env.uris import names_directory, uri_problem

__all__ = ["ServingColumn", "ServingResult", "open_serving", "serving_columns",
           "training_only_present", "validate_serving"]

_STRICTNESS = {"ignore": 0, "warn": 1, "error": 2}


@dataclass(frozen=True)
class ServingColumn:
    """One column name as serving data may hold it: where it is declared and whether
    production has it."""

    name: str
    dataset: str
    column: Column
    served: bool  # False: training-only (serving: false, or the label)
    why: str = ""  # for a training-only column: "serving: false" or "the label"

    @property
    def where(self) -> tuple[str, ...]:
        return ("datasets", self.dataset, "columns", self.name)


def serving_columns(env: Environment, datasets: list[str]) -> dict[str, ServingColumn]:
    """name -> its declaration for serving data: the first of `datasets` serving it, else
    the first declaring it (training-only)."""
    label = env.label
    label_at = (label.dataset, label.column) if label is not None and label.column else None
    out: dict[str, ServingColumn] = {}
    for ds_name in datasets:
        for name, col in env.datasets[ds_name].columns.items():
            is_label = label_at == (ds_name, name)
            served = col.serving and not is_label
            known = out.get(name)
            if known is None or (served and not known.served):
                why = "" if served else ("the label" if is_label else "serving: false")
                out[name] = ServingColumn(name, ds_name, col, served, why)
    return out


@dataclass
class ServingResult:
    """What `validate --serving` found, and what it checked (for the summary line)."""

    problems: list[Diagnostic]
    rows: int
    checked: int  # served columns present and checked


def open_serving(project: Project, res: Resolved, uri: str, purpose: str, datasets: list[str],
                 columns: dict[str, Column], flag: str = "--serving") -> DatasetRead:
    """A read of serving data at `uri` (not pinned: its digest is what the read finds), typed
    by `columns`. It is restricted (audited, decode errors without values) when one of
    `datasets` is; a uri that cannot be used or opened is a usage error (exit 2)."""
    problem = uri_problem(uri, project)
    if problem:
        raise DiagnosticError([Diagnostic(problem[0], f"{flag}: {problem[1]}",
                                          hints=(problem[2],))], 2)
    if names_directory(uri):
        raise DiagnosticError([Diagnostic("BE004", f"{flag}: '{uri}' names a directory; serving "
                                          "data is one Parquet, CSV or JSON-lines file")], 2)
    env = res.env
    owner = next((d for d in datasets if env.restricted(d)), datasets[0])
    spec = Dataset(uri=uri, columns=columns or {"_": Column(dtype="string")})
    gate = Gate(project, env, purpose, where=res)
    try:
        return DatasetRead(gate, owner, spec, uri, format_of(uri, "parquet"), None,
                           f"{flag} {uri}")
    except GateError as exc:
        message = exc.diagnostic.message.removeprefix(f"dataset '{owner}': ")
        raise DiagnosticError([Diagnostic(exc.diagnostic.code, f"{flag}: {message}")],
                              2) from None


def validate_serving(res: Resolved, project: Project, uri: str,
                     datasets: list[str] | None = None,
                     inputs: dict[str, list[str]] | None = None) -> ServingResult:
    """Every problem of the serving data at `uri`, against the served columns of `datasets`
    (default: all). `inputs` (column -> models taking it, of the models built against the
    environment; None when none is built) decides how a missing served column is judged: an
    error when a model takes it (or no model is known), a warning otherwise (a request log
    holds the model's inputs only)."""
    env = res.env
    chosen = datasets or list(env.datasets)
    known = serving_columns(env, chosen)
    everywhere = serving_columns(env, list(env.datasets))
    with open_serving(project, res, uri, "validate --serving", chosen,
                      {n: c.column for n, c in known.items()}) as read:
        try:
            schema = read.schema
        except GateError as exc:
            return ServingResult([exc.diagnostic], 0, 0)
        problems = _schema_problems(res, uri, chosen, known, everywhere, schema.names, inputs)
        checked: dict[str, ColumnChecks] = {}
        for name in schema.names:
            entry = known.get(name)
            if entry is None or not entry.served:
                continue
            actual = schema.field(name).type
            if not type_accepts(entry.column.dtype, actual):
                problems.append(res.diag(
                    "BE201", f"{entry.dataset}.{name} (serving data): declared "
                    f"{entry.column.dtype}, stored as {actual} in {uri}", *entry.where, "dtype",
                    hints=(f"send {entry.column.dtype} values, or declare `dtype: "
                           f"{suggest(actual)}`",)))
                continue
            checked[name] = checks_for(entry.column, actual,
                                       examples=not env.restricted(entry.dataset))
        reports = {name: ColumnReport() for name in checked}
        dictionary = dictionary_columns({n: known[n].column for n in checked})
        try:
            for batch in progress.batches(read.batches(list(checked), dictionary=dictionary),
                                          f"validate {uri}", read.total_rows):
                for name, checks in checked.items():
                    check_batch(batch.column(batch.schema.get_field_index(name)), checks,
                                reports[name])
        except GateError as exc:  # nothing decoded is reported: the bytes are not trusted
            return ServingResult([*problems, exc.diagnostic], 0, 0)
        rows = read.rows_read
    for name, report in reports.items():
        entry = known[name]
        problems.extend(judge(res, entry.dataset, name, entry.column, report,
                              env.restricted(entry.dataset), subject="serving data"))
    return ServingResult(problems, rows, len(checked))


def training_only_present(res: Resolved, entry: ServingColumn, uri: str) -> Diagnostic:
    """BE211: serving data at `uri` holds the training-only column (or label) `entry`."""
    where = ("label", "column") if entry.why == "the label" else (*entry.where, "serving")
    return res.diag("BE211", f"{entry.dataset}.{entry.name}: training-only ({entry.why}), but "
                    f"the serving data ({uri}) has it", *where,
                    hints=("production must not send it (a label or a training-only value in "
                           "a request leaks into predictions); drop it from the requests, or "
                           "declare it served if production really has it",))


def _schema_problems(res: Resolved, uri: str, chosen: list[str],
                     known: dict[str, ServingColumn], everywhere: dict[str, ServingColumn],
                     names: list[str], inputs: dict[str, list[str]] | None
                     ) -> list[Diagnostic]:
    """Served columns missing (BE212), training-only ones present (BE211), undeclared ones
    (BE213)."""
    problems = []
    present = set(names)
    for name, entry in known.items():
        if entry.served and name not in present and entry.column.required:
            hint = did_you_mean(name, names)
            users = (inputs or {}).get(name)
            if inputs is None:
                why, severity = "", Severity.ERROR
            elif users:
                why, severity = f"; {', '.join(users)} takes it as input", Severity.ERROR
            else:
                why, severity = (f"; no model built against {res.name} takes it as input",
                                 Severity.WARNING)
            problems.append(res.diag(
                "BE212", f"{entry.dataset}.{name}: served, but the serving data ({uri}) has "
                f"no such column{why}", *entry.where, severity=severity,
                hints=(hint,) if hint else ("send it with every request, or declare it "
                                            "`required: false` if it may be absent",)))
        elif not entry.served and name in present:
            problems.append(training_only_present(res, entry, uri))
    extra = [n for n in names if n not in everywhere]
    setting = max((res.env.datasets[d].undeclared_columns for d in chosen),
                  key=_STRICTNESS.__getitem__)
    if extra and setting != "ignore":
        strictest = next(d for d in chosen if res.env.datasets[d].undeclared_columns == setting)
        shown = ", ".join(extra[:UNDECLARED_SHOWN]) + (
            f" and {len(extra) - UNDECLARED_SHOWN} more" if len(extra) > UNDECLARED_SHOWN
            else "")
        problems.append(res.diag(
            "BE213", f"serving data ({uri}): {len(extra)} column(s) no dataset of "
            f"{res.name} declares: {shown}", "datasets", strictest, "undeclared_columns",
            severity=Severity.ERROR if setting == "error" else Severity.WARNING,
            hints=("declare them (with `serving: true`) in the dataset they come from, or "
                   "stop sending them",)))
    return problems
