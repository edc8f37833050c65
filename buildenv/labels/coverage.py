"""Label coverage: does the data cover every class the label declares?

`label.coverage` asks each class for `min_count` rows and a `min_fraction` share (overridable
per class), counted separately in the training rows (the label dataset's rows that are not held
out) and in the evaluation rows (held out, or the evaluation dataset), and with `per_slice` in
every evaluation slice (the build checks those next to the rows, in the training process).
Label sets are counted after resolution (majority vote, reuse), on the examples that have a
usable label. `validate`, `build` and `retrain` report every class below its rule, by name and
count, as an error or a warning (`severity`).

Counts of restricted rows follow the privacy policy: a count below `privacy.min_group_size`,
or any count under `privacy.release: dp`, is not shown -- only that the class is below its
rule (the class names are the environment's, so they can always be named).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.evaluation import holdout_mask, key_columns, labeled_rows
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.env.evaluation_rules import label_class_keys
from buildenv.env.resolve import Resolved
from buildenv.env.spec import Environment, class_key
from buildenv.labels.labelset import LabelError, LabelSets

__all__ = ["ClassCounts", "check", "class_counts", "coverage_problems", "label_counts",
           "shortfalls", "summary"]


@dataclass
class ClassCounts:
    """Rows per class (class keys as coverage names them) in one set of rows."""

    where: str  # "training rows" | "evaluation rows" | "evaluation rows of slice <name>"
    counts: dict[str, int]
    total: int

    def share(self, name: str) -> float:
        return self.counts.get(name, 0) / self.total if self.total else 0.0


def class_counts(values: Any, where: str) -> ClassCounts:
    """Counts of an array of label values (nulls left out)."""
    array = pa.array(np.asarray(values).tolist()) if not isinstance(
        values, (pa.Array, pa.ChunkedArray)) else values
    counted = pc.value_counts(pc.drop_null(array))
    counts: dict[str, int] = {}
    for value, count in zip(counted.field("values").to_pylist(),
                            counted.field("counts").to_pylist()):
        key = class_key(value)
        counts[key] = counts.get(key, 0) + int(count)
    return ClassCounts(where, counts, sum(counts.values()))


def shortfalls(env: Environment, counts: ClassCounts, restricted: bool,
               slice_name: str | None = None) -> list[dict[str, Any]]:
    """Every class of `counts` below its rule, as diagnostics (JSON form with the YAML key
    path in `yaml_path`: the training process returns them so)."""
    coverage = env.label.coverage if env.label is not None else None
    classes = label_class_keys(env)
    if coverage is None or classes is None:
        return []
    hidden = restricted and env.privacy.release == "dp"
    min_group = env.privacy.min_group_size
    out = []
    for name in classes:
        need_count, need_fraction = coverage.rule(name)
        have = counts.counts.get(name, 0)
        own = coverage.classes.get(name)
        problems = []
        if need_count is not None and have < need_count:
            problems.append(("min_count", f"below min_count {need_count}",
                             own is not None and own.min_count is not None))
        if need_fraction is not None and counts.share(name) < need_fraction:
            problems.append(("min_fraction", f"below min_fraction {need_fraction:g}",
                             own is not None and own.min_fraction is not None))
        if not problems:
            continue
        key, _, per_class = problems[0]
        if hidden or (restricted and have < min_group):
            amount = ("too few " + counts.where if hidden
                      else f"fewer than {min_group} {counts.where}")
            shown = f"{amount} (counts of restricted rows are withheld)"
        elif have == 0:
            shown = f"no {counts.where}"
        else:
            share = f" ({counts.share(name):.1%} of {counts.total:,})" \
                if any(p[0] == "min_fraction" for p in problems) else ""
            shown = f"{have:,} {counts.where}{share}"
        rules = " and ".join(p[1] for p in problems)
        path = ["label", "coverage", "classes", name, key] if per_class else \
            ["label", "coverage", key]
        out.append({"code": "BE507", "message": f"class '{name}': {shown}, {rules}",
                    "path": None, "line": None, "col": None, "severity": coverage.severity,
                    "hints": [_hint(counts, slice_name)], "yaml_path": path})
    return out


def _hint(counts: ClassCounts, slice_name: str | None) -> str:
    if counts.where.startswith("training"):
        return "label more examples of it, or lower the rule in label.coverage"
    if slice_name is not None:
        return "add evaluation rows of it to the slice, or drop `per_slice`"
    return "hold out more rows (evaluation.holdout), or add evaluation rows of it"


def label_counts(project: Project, res: Resolved, pins: dict[str, str] | None = None,
                 manifests: dict[str, Any] | None = None,
                 label_pins: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[list[ClassCounts], bool]:
    """Class counts of the training rows and the evaluation rows (read through the gate,
    verified against `pins` when given, streamed), and whether any of them is restricted.
    GateError when bytes do not match; LabelError when a label set cannot be resolved."""
    env = res.env
    assert env.label is not None
    source = env.label_dataset()
    assert source is not None
    gate = Gate(project, env, "coverage", pins=pins or {}, where=res, manifests=manifests or {})
    expect: Any = True if pins and source in pins else None
    keys = key_columns(env)
    label_set = env.label_set()
    training: list[pa.Array] = []
    held: list[pa.Array] = []
    if label_set is not None:
        resolved = LabelSets(gate, label_pins, res).resolve(env.label.labels or "").table()
        with gate.open(source, expect=expect) as read:
            table = read.table([label_set.key])
        usable, values = labeled_rows(table, label_set.key, resolved)
        table = table.filter(pa.array(usable))
        out = holdout_mask(table, keys, env.evaluation.fraction) if keys else \
            np.zeros(table.num_rows, bool)
        training.append(values.filter(pa.array(~out)))
        held.append(values.filter(pa.array(out)))
    else:
        column = env.label.column or ""
        with gate.open(source, expect=expect) as read:
            for batch in read.batches(list(dict.fromkeys([column, *keys]))):
                table = pa.Table.from_batches([batch])
                out = holdout_mask(table, keys, env.evaluation.fraction) if keys else \
                    np.zeros(table.num_rows, bool)
                values = table.column(column).combine_chunks()
                training.append(values.filter(pa.array(~out)))
                held.append(values.filter(pa.array(out)))
        if env.evaluation.dataset is not None:
            other = env.evaluation.dataset
            held = []
            with gate.open(other, expect=True if pins and other in pins else None) as read:
                for batch in read.batches([column]):
                    held.append(batch.column(0))
    restricted = env.restricted(source) or (env.evaluation.dataset is not None
                                            and env.restricted(env.evaluation.dataset))
    return [class_counts(_joined(training), "training rows"),
            class_counts(_joined(held), "evaluation rows")], restricted


def coverage_problems(project: Project, res: Resolved, pins: dict[str, str] | None = None,
                      manifests: dict[str, Any] | None = None,
                      label_pins: dict[str, dict[str, Any]] | None = None
                      ) -> list[Diagnostic]:
    """`label.coverage` checked on the training and evaluation rows (empty when the
    environment declares no coverage)."""
    env = res.env
    if env.label is None or env.label.coverage is None:
        return []
    try:
        counted, restricted = label_counts(project, res, pins, manifests, label_pins)
    except GateError as exc:
        return [exc.diagnostic]
    except LabelError as exc:
        return list(exc.diagnostics)
    return check(res, counted, restricted)


def check(res: Resolved, counted: list[ClassCounts], restricted: bool) -> list[Diagnostic]:
    """The shortfalls of `counted`, located at their rules."""
    found = [d for counts in counted for d in shortfalls(res.env, counts, restricted)]
    return [res.diag(d["code"], d["message"], *d["yaml_path"], hints=tuple(d["hints"]),
                     severity=Severity(d["severity"])) for d in found]


def summary(env: Environment, counted: list[ClassCounts], restricted: bool) -> dict[str, Any]:
    """Counts per class for the lineage and the model card, as the privacy policy lets them be
    shown (None: withheld), with the rules they were checked against."""
    coverage = env.label.coverage if env.label is not None else None
    classes = label_class_keys(env) or []
    hidden = restricted and env.privacy.release == "dp"
    min_group = env.privacy.min_group_size
    out: dict[str, Any] = {"rules": coverage.model_dump(mode="json", exclude_defaults=True)
                           if coverage is not None else None}
    for counts in counted:
        shown: dict[str, Any] = {}
        for name in classes:
            have = counts.counts.get(name, 0)
            shown[name] = None if hidden or (restricted and have < min_group) else have
        below = {d["message"].split("'")[1] for d in shortfalls(env, counts, restricted)}
        out[counts.where.split()[0]] = {
            "rows": None if hidden or (restricted and counts.total < min_group)
            else counts.total, "classes": shown, "below": sorted(below)}
    return out


def _joined(parts: list[Any]) -> pa.Array:
    if not parts:
        return pa.array([], pa.null())
    chunks = [p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts]
    return pa.chunked_array(chunks).combine_chunks() if len({c.type for c in chunks}) == 1 \
        else pa.array([v for c in chunks for v in c.to_pylist()])
