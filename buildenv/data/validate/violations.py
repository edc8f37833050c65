"""What a column's counts mean: one diagnostic per (column, rule), located at its YAML key.

Counts above `max_violation_fraction` of non-null values are errors, at or below it warnings.
Restricted datasets get counts and fractions only; their hints point at the audited peek.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from buildenv.core.diagnostics import Diagnostic, Severity, did_you_mean
from buildenv.data.gate.formats import ARROW_TYPES, type_accepts
from buildenv.data.validate.column_checks import EXAMPLES, ColumnReport, show
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Column, Dataset

__all__ = ["UNDECLARED_SHOWN", "bound", "close", "judge", "suggest", "tolerance", "undeclared"]

UNDECLARED_SHOWN = 10  # column names listed in one BE213


def judge(res: Resolved, ds_name: str, name: str, col: Column, report: ColumnReport,
           restricted: bool, subject: str | None = None) -> list[Diagnostic]:
    """One diagnostic per broken rule of the column, at the rule's key; `subject` names other
    data than the dataset itself ("serving data")."""
    out = []
    where = ("datasets", ds_name, "columns", name)
    label = f"{ds_name}.{name}" + (f" ({subject})" if subject else "")
    # What a restricted dataset's violations point at instead of values: the audited peek;
    # `--invalid` selects rows that break nullability, the domain or the range.
    look = (f"values are never printed; a person allowed by privacy.peek can look, audited: "
            f"`buildenv peek ENV --dataset {ds_name} --rows 10 --reason \"...\"`")
    hidden = look.replace(" --rows 10 ", f" --rows 10 --invalid {name} ")
    out.extend(_presence(res, label, where, col, report))

    def violation(code: str, key: str, count: int, what: str, detail: str = "",
                  hints: tuple[str, ...] = ()) -> None:
        share, severity, allowed = tolerance(col, count, report.non_null)
        out.append(res.diag(code, f"{label}: {count:,} of {report.non_null:,} non-null values "
                            f"({share}) {what}{detail}{allowed}", *where, key, hints=hints,
                            severity=severity))

    if report.out_of_domain:
        if not restricted:
            top = sorted(report.out_of_domain_values.items(), key=lambda kv: (-kv[1], kv[0]))
            detail = " (" + ", ".join(f"{show(v)}: {n:,}" for v, n in top[:EXAMPLES]) + (
                ", ..." if len(top) > EXAMPLES else "") + ")"
            hint = f"add {', '.join(show(v) for v, _ in top[:EXAMPLES])} to the domain if valid"
        else:
            detail = (f" ({len(report.out_of_domain_values)} distinct values; restricted "
                      "dataset: values not shown)")
            hint = hidden
        violation("BE204", "domain", report.out_of_domain, "are outside the domain", detail,
                  (hint,))
    if report.below or report.above:
        lo, hi = (bound(v) for v in col.range)  # type: ignore[union-attr]
        detail = f" ({report.below:,} below, {report.above:,} above)"
        if not restricted and report.examples:
            detail += f"; e.g. {', '.join(report.examples[:EXAMPLES])}"
        violation("BE205", "range", report.below + report.above, f"are outside range [{lo}, {hi}]",
                  detail)
    if report.mismatched:
        detail = (f"; e.g. {', '.join(report.pattern_examples)}" if not restricted
                  and report.pattern_examples else "")
        violation("BE207", "pattern", report.mismatched,
                  f"do not match pattern {col.pattern!r}", detail,
                  (look,) if restricted else ())
    if report.too_short or report.too_long:
        lo, hi = (bound(v) for v in col.length)  # type: ignore[union-attr]
        detail = f" ({report.too_short:,} shorter, {report.too_long:,} longer)"
        if not restricted and report.length_examples:
            detail += f"; e.g. {', '.join(report.length_examples)}"
        violation("BE208", "length", report.too_short + report.too_long,
                  f"have a length outside [{lo}, {hi}]", detail)
    dups = report.duplicates
    if dups is not None and dups.error is not None:
        out.append(res.diag("BE210", f"{label}: unique could not be checked: spilling values "
                            f"to disk failed ({dups.error})", *where, "unique",
                            hints=("free space in the temporary directory (TMPDIR), or point "
                                   "TMPDIR at a larger disk",)))
    elif dups is not None and dups.rows:
        detail = f" ({dups.values} distinct values occur more than once)"
        if not restricted and dups.examples:
            detail += "; e.g. " + ", ".join(f"{show(v)} ({n:,} rows)" for v, n in dups.examples)
        violation("BE209", "unique", dups.rows, "are duplicated", detail,
                  (look,) if restricted else ())
    return out


def _presence(res: Resolved, label: str, where: tuple[str, ...], col: Column,
              report: ColumnReport) -> list[Diagnostic]:
    """Nulls, the number of values and NaN: the rules no tolerance applies to."""
    out: list[Diagnostic] = []
    if report.nulls and not col.nullable:
        out.append(res.diag("BE202", f"{label}: {report.nulls:,} of {report.rows:,} rows are null "
                            "but the column is declared nullable: false", *where, "nullable"))
    if col.max_null_fraction is not None and report.rows:
        fraction = report.nulls / report.rows
        if fraction > col.max_null_fraction:
            out.append(res.diag("BE203", f"{label}: null fraction {fraction:.4f} ({report.nulls:,}"
                                f" of {report.rows:,} rows) exceeds max_null_fraction "
                                f"{col.max_null_fraction}", *where, "max_null_fraction"))
    if col.min_count is not None and report.non_null < col.min_count:
        out.append(res.diag("BE214", f"{label}: {report.non_null:,} non-null values, fewer than "
                            f"min_count {col.min_count:,} ({report.rows:,} rows)", *where,
                            "min_count"))
    if report.nans:
        share = report.nans / report.non_null if report.non_null else 1.0
        out.append(res.diag("BE215", f"{label}: {report.nans:,} of {report.non_null:,} non-null "
                            f"values (fraction {share:.4g}) are NaN, but the column is declared "
                            "allow_nan: false", *where, "allow_nan"))
    return out


def undeclared(res: Resolved, ds_name: str, dataset: Dataset, names: list[str], where: str
               ) -> list[Diagnostic]:
    """BE213 for the columns the data has and `dataset` does not declare, as its
    `undeclared_columns` says (nothing for `ignore`). Names only: they are not row values."""
    extra = [n for n in names if n not in dataset.columns]
    if not extra or dataset.undeclared_columns == "ignore":
        return []
    shown = ", ".join(extra[:UNDECLARED_SHOWN]) + (
        f" and {len(extra) - UNDECLARED_SHOWN} more" if len(extra) > UNDECLARED_SHOWN else "")
    severity = Severity.ERROR if dataset.undeclared_columns == "error" else Severity.WARNING
    return [res.diag("BE213", f"dataset '{ds_name}': {len(extra)} column(s) the environment "
                     f"does not declare ({where}): {shown}", "datasets", ds_name,
                     "undeclared_columns", severity=severity,
                     hints=(f"declare them under datasets.{ds_name}.columns, or remove them "
                            "from the data",))]


def bound(value: Any) -> str:
    return "null" if value is None else str(value)


def tolerance(col: Column, count: int, non_null: int) -> tuple[str, Severity, str]:
    """The violating share, and whether it is an error or, within the tolerance, a warning."""
    fraction = count / non_null if non_null else 1.0
    share = f"fraction {fraction:.4g}"
    limit = col.max_violation_fraction
    if limit is None:
        return share, Severity.ERROR, ""
    if fraction <= limit + 1e-12:
        return share, Severity.WARNING, f"; within max_violation_fraction {limit}"
    return share, Severity.ERROR, f"; exceeds max_violation_fraction {limit}"


def close(name: str, names: list[str]) -> str | None:
    return did_you_mean(name, names)


def suggest(actual: pa.DataType) -> str:
    for dtype in ARROW_TYPES:
        if type_accepts(dtype, actual):
            return dtype
    return str(actual)
