"""Checks of the evaluation policy against the rest of a resolved environment.

Slices name columns the evaluation rows carry (the rows' dataset and the datasets joined to
it), bin numeric columns, and write predicates in the `ctx.read` filter syntax; coverage rules
name the label's classes; slice gates need slices. Under `privacy.release: dp` a slice of
restricted rows needs public keys (a declared domain, a bool column, or bins): the keys of a
private release must be fixed before the data is read. Every problem is located at its YAML
line; they are configuration errors (exit 2).
"""

from __future__ import annotations

from typing import Any

from buildenv.core.diagnostics import Diagnostic, did_you_mean
from buildenv.env.conditions import parse_conditions
from buildenv.env.privacy_rules import Resolved  # a protocol: resolve calls these rules
from buildenv.env.spec import NUMERIC_DTYPES, Column, Environment, class_key

__all__ = ["MAX_VALUES", "evaluation_problems", "label_class_keys", "slice_columns"]

#: A `by` slice over more distinct values than this keeps the largest ones (see docs).
MAX_VALUES = 100


def slice_columns(env: Environment) -> dict[str, tuple[str, Column]]:
    """Columns the evaluation rows can be sliced by: column -> (dataset, declaration). The
    rows' own dataset first, then each dataset joined to it (`evaluation.join`, or when not
    written every dataset sharing a column name with it, the label's aside)."""
    if env.label is None:
        return {}
    source = env.evaluation.dataset or env.label_dataset()
    if source is None or source not in env.datasets:
        return {}
    own = env.datasets[source].columns
    out = {name: (source, col) for name, col in own.items()}
    if env.evaluation.join:
        joined = [name for name in env.evaluation.join if name in env.datasets]
    else:
        label = getattr(env.label, "column", None)  # never a join key (`join_plan`)
        joined = [name for name, ds in env.datasets.items() if name != source
                  and any(c in own and c != label for c in ds.columns)]
    for name in joined:
        for col_name, col in env.datasets[name].columns.items():
            out.setdefault(col_name, (name, col))
    return out


def evaluation_problems(res: Resolved) -> list[Diagnostic]:
    env = res.env
    problems: list[Diagnostic] = []
    problems += _slice_problems(res)
    problems += _coverage_problems(res)
    gates = env.promotion.slices if env.promotion is not None else None
    if gates is not None and not env.evaluation.slices:
        problems.append(res.diag(
            "BE503", "promotion.slices gates evaluation slices, but evaluation.slices declares "
            "none", "promotion", "slices",
            hints=("declare slices: `evaluation: {slices: [{by: COLUMN}]}`",)))
    return problems


def _slice_problems(res: Resolved) -> list[Diagnostic]:
    env = res.env
    slices = env.evaluation.slices
    if not slices:
        return []
    if env.label is None:
        return [res.diag("BE503", "evaluation.slices: the environment declares no label, so "
                         "it has no evaluation rows to slice", "evaluation", "slices")]
    available = slice_columns(env)
    declared = {name: col for name, (_, col) in available.items()}
    restricted = _restricted_rows(env, available)
    dp = env.privacy.release == "dp" and restricted
    problems = []
    names: dict[str, int] = {}
    for i, spec in enumerate(slices):
        here = ("evaluation", "slices", i)
        if spec.by is not None:
            if spec.by not in available:
                problems.append(_unknown(res, env, spec.by, available, (*here, "by")))
                continue
            col = declared[spec.by]
            if spec.bins is not None and col.dtype not in NUMERIC_DTYPES:
                problems.append(res.diag(
                    "BE502", f"evaluation.slices[{i}]: bins take a numeric column; "
                    f"'{spec.by}' is {col.dtype}", *here, "bins",
                    hints=("drop `bins` for one slice per value",)))
            elif spec.bins is None and col.dtype in ("float32", "float64") \
                    and col.domain is None:
                problems.append(res.diag(
                    "BE503", f"evaluation.slices[{i}]: '{spec.by}' is a {col.dtype} column: "
                    "one slice per distinct value would make a slice of nearly every row",
                    *here, "by", hints=("give `bins: [edges...]`",)))
            elif dp and spec.bins is None and col.domain is None and col.dtype != "bool":
                problems.append(res.diag(
                    "BE503", f"evaluation.slices[{i}]: the evaluation rows are restricted and "
                    f"privacy.release is dp, so slice keys must be public: '{spec.by}' declares "
                    "no domain", *here, "by",
                    hints=(f"declare the domain of '{spec.by}', or slice it by `bins`",)))
            key = f"by:{spec.by}:{spec.bins}"
        else:
            unknown = [c for c in spec.columns if c not in available]
            if unknown:
                problems.append(_unknown(res, env, unknown[0], available, (*here, "where")))
                continue
            try:
                parse_conditions(spec.where, declared)
            except (ValueError, KeyError) as exc:
                problems.append(res.diag(
                    "BE503", f"evaluation.slices[{i}].where: {exc}", *here, "where",
                    hints=('write conditions as [column, op, value], e.g. [hour, ">=", 20]',)))
            key = f"name:{spec.name}"
        if key in names:
            problems.append(res.diag(
                "BE503", f"evaluation.slices[{i}] repeats evaluation.slices[{names[key]}]",
                *here, hints=("remove one of them",)))
        names.setdefault(key, i)
    return problems


def _unknown(res: Resolved, env: Environment, column: str,
             available: dict[str, tuple[str, Column]], path: tuple[Any, ...]) -> Diagnostic:
    elsewhere = sorted(name for name, ds in env.datasets.items() if column in ds.columns)
    hints = []
    if elsewhere:
        hints.append(f"'{column}' is a column of {', '.join(elsewhere)}, which the evaluation "
                     f"rows do not join: declare `evaluation.join: {{{elsewhere[0]}: "
                     "[KEY]}`")
    else:
        hint = did_you_mean(column, available)
        if hint:
            hints.append(hint)
    return res.diag("BE501", f"{'.'.join(map(str, path[:2]))}[{path[2]}]: unknown column "
                    f"'{column}': not a column of the evaluation rows", *path,
                    hints=tuple(hints))


def _restricted_rows(env: Environment, available: dict[str, tuple[str, Column]]) -> bool:
    return any(env.restricted(ds) for ds, _ in available.values())


def _coverage_problems(res: Resolved) -> list[Diagnostic]:
    env = res.env
    coverage = env.label.coverage if env.label is not None else None
    if coverage is None:
        return []
    classes = label_class_keys(env)
    here = ("label", "coverage")
    if classes is None:
        return [res.diag("BE506", "label.coverage counts rows per class, and the label declares "
                         "no classes", *here,
                         hints=("declare `label.classes` (a regression label has no classes)",))]
    problems = []
    for name in coverage.classes:
        if name not in classes:
            hint = did_you_mean(name, classes)
            problems.append(res.diag(
                "BE506", f"label.coverage.classes: '{name}' is not a class of the label "
                f"(classes: {', '.join(classes)})", *here, "classes", name,
                hints=(hint,) if hint else ()))
    if coverage.per_slice and not env.evaluation.slices:
        problems.append(res.diag(
            "BE506", "label.coverage.per_slice checks classes in every evaluation slice, but "
            "evaluation.slices declares none", *here, "per_slice"))
    return problems


def label_class_keys(env: Environment) -> list[str] | None:
    """The label's classes as coverage names them (`true`/`false` for a bool label without
    declared classes); None for a label without classes (regression)."""
    classes: list[Any] | None = env.label_classes()
    if classes is None and env.label is not None and env.label.dataset is not None:
        col = env.column(env.label.dataset, env.label.column or "")
        if col is not None and col.dtype == "bool":
            classes = [False, True]
    return None if classes is None else [class_key(c) for c in classes]
