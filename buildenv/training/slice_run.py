"""The build's slice evaluation: score the model on every slice, then keep what may be shown.

Runs in the training process, next to the rows: the exact figures (`SliceScores`) never leave
it. Problems are returned as diagnostics with the YAML key they concern (`yaml_path`), which
the build locates in the environment file: a slice over a column the evaluation rows could not
join (BE501), or a declared bin or predicate no evaluation row falls in (BE504; for restricted
rows an empty slice is only withheld, as any small one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from buildenv.env.spec import Environment
from buildenv.labels.coverage import class_counts, shortfalls
from buildenv.training.scoring import labelled
from buildenv.training.slice_dp import private_view
from buildenv.training.slice_scores import SliceScores, score_slices
from buildenv.training.slice_view import exact_view
from buildenv.training.slicing import MissingColumn

__all__ = ["evaluate_slices", "slice_attributes"]


def slice_attributes(env: Environment) -> tuple[str, ...]:
    """The columns slices (and a private release's privacy unit) need from the rows."""
    wanted = [c for spec in env.evaluation.slices for c in spec.columns]
    source = env.evaluation.dataset or env.label_dataset()
    unit = env.privacy.units.get(source) if source else None
    if unit is not None and env.privacy.release == "dp":
        wanted.append(unit.key)
    return tuple(dict.fromkeys(wanted))


def evaluate_slices(env: Environment, rows: Any, outputs: Any, restricted: bool,
                    release: Any = None) -> tuple[dict[str, Any], list[dict]]:
    """(the summary's slice figures as they may be shown, problems)."""
    keep = labelled(rows.labels)
    private = restricted and env.privacy.release == "dp"
    try:
        scores = score_slices(env, rows.attributes, [outputs], keep, public_keys=private)
    except MissingColumn as exc:
        spec = env.evaluation.slices[exc.index]
        key = "by" if spec.by is not None else "where"
        return {}, [_problem("BE501", f"evaluation.slices[{exc.index}]: column '{exc.column}' "
                             "is not among the evaluation rows: its dataset was not joined "
                             f"({rows.method.get('not_joined') or 'no join'})",
                             ["evaluation", "slices", exc.index, key],
                             ["declare `evaluation.join` with a key that is unique in that "
                              "dataset"])]
    problems = [] if restricted else _empty(env, scores)
    coverage = env.label.coverage if env.label is not None else None
    if coverage is not None and coverage.per_slice:
        problems += _slice_coverage(env, scores, np.asarray(rows.labels)[keep], restricted)
    if private:
        view, notes = private_view(scores, outputs, env, rows, keep, release)
        problems += notes
    else:
        view = exact_view(scores, 0, env, restricted)
    overall = view.pop("overall", {})
    intervals = {m: f["interval"] for m, f in overall.get("metrics", {}).items()
                 if "interval" in f}
    return {"intervals": intervals, **view}, problems


def _slice_coverage(env: Environment, scores: SliceScores, labels: np.ndarray,
                    restricted: bool) -> list[dict]:
    """`label.coverage` in every slice with at least its `min_rows` rows."""
    out = []
    for family, code, index in scores.positions()[1:]:
        rows = int(scores.rows[index])
        if rows < family.min_rows:
            continue
        named = family.public[code] or not restricted or rows >= env.privacy.min_group_size
        name = family.names[code] if named else "(withheld: restricted rows)"
        counts = class_counts(labels[family.codes == code], f"evaluation rows of slice {name}")
        out += shortfalls(env, counts, restricted, name)
    return out


def _empty(env: Environment, scores: SliceScores) -> list[dict]:
    out = []
    for family, code, index in scores.positions()[1:]:
        if family.kind in ("bins", "where") and scores.rows[index] == 0:
            key = "bins" if family.kind == "bins" else "where"
            out.append(_problem(
                "BE504", f"evaluation.slices[{family.index}]: slice {family.names[code]} holds "
                f"none of the {int(scores.rows[0]):,} evaluation rows",
                ["evaluation", "slices", family.index, key],
                ["check the edges or the predicate against the data (`buildenv stats` shows "
                 "its ranges)"]))
    return out


def _problem(code: str, message: str, path: list, hints: list[str]) -> dict:
    return {"code": code, "message": message, "path": None, "line": None, "col": None,
            "severity": "error", "hints": hints, "yaml_path": path}


