"""No double exposure: an annotator's judgments of one example under two UI versions.

An annotator who labeled the same example (same dataset, same key) under two different
annotation UI/guideline versions has seen it twice: the second judgment is not independent of
the first (they remember it, and the new UI's framing is anchored on the old answer), so
agreement and accuracy computed across versions are inflated. The rule covers every label set
of the multiverse, wherever it is declared; label sets are told apart by their export (uri,
format, field, UI version), so a set inherited by many environments counts once.

With `exposure: exclusive` (the default) on any label set involved, it is an error; with
`allow` on all of them, a warning. The diagnostic gives the number of examples, the label sets
and the annotator ids; example keys only when the dataset is not restricted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.labels.annotations import Annotations
from buildenv.labels.resolve import Place

__all__ = ["Exposed", "ExposureSource", "double_exposure", "exposure_problems"]

SHOWN_KEYS = 3
SHOWN_ANNOTATORS = 10


@dataclass
class ExposureSource:
    """One label set's annotations, as the exposure rule sees them."""

    display: str  # the label set's name (as the environment being checked calls it)
    dataset: str
    exposure: str  # exclusive | allow
    annotations: Annotations
    own: bool  # declared by the environment being checked


@dataclass
class Exposed:
    """Annotators who saw examples of one dataset under several UI versions."""

    dataset: str
    label_sets: list[str]
    ui_versions: list[str]
    annotators: dict[str, int]  # annotator -> examples seen twice
    examples: int
    keys: list[str]  # a few example keys (shown only for unrestricted datasets)
    exclusive: bool
    own: bool


def double_exposure(sources: Iterable[ExposureSource]) -> list[Exposed]:
    """Every (dataset, annotator, example) seen under two or more UI versions, grouped by the
    label sets involved."""
    sources = list(sources)
    parts = []
    for i, src in enumerate(sources):
        ann = src.annotations
        if not len(ann):
            continue
        valid = ann.ui_versions.is_valid()
        parts.append(pa.table({
            "dataset": pa.array([src.dataset] * int(pc.sum(valid).as_py() or 0), pa.string()),
            "key": ann.keys.filter(valid), "annotator": ann.annotators.filter(valid),
            "ui": ann.ui_versions.filter(valid),
            "source": pa.array([i] * int(pc.sum(valid).as_py() or 0), pa.int32())}))
    if not parts:
        return []
    table = pa.concat_tables(parts)
    grouped = table.group_by(["dataset", "key", "annotator"]).aggregate(
        [("ui", "count_distinct"), ("ui", "distinct"), ("source", "distinct")])
    twice = grouped.filter(pc.greater(grouped.column("ui_count_distinct"), 1))
    if not twice.num_rows:
        return []
    out: dict[tuple[Any, ...], Exposed] = {}
    for row in twice.to_pylist():
        involved = sorted(set(row["source_distinct"]))
        group = (row["dataset"], tuple(involved))
        found = out.get(group)
        if found is None:
            found = out[group] = Exposed(
                row["dataset"], [sources[i].display for i in involved], [], {}, 0, [],
                any(sources[i].exposure == "exclusive" for i in involved),
                any(sources[i].own for i in involved))
        found.examples += 1
        found.annotators[row["annotator"]] = found.annotators.get(row["annotator"], 0) + 1
        found.ui_versions = sorted(set(found.ui_versions) | set(row["ui_distinct"]))
        if len(found.keys) < SHOWN_KEYS:
            found.keys.append(row["key"])
    return list(out.values())


def exposure_problems(exposed: list[Exposed], restricted: set[str], place: Place,
                      own_names: dict[str, str]) -> list[Diagnostic]:
    """Diagnostics for the exposures that involve the environment's own label sets, at the
    YAML line of the first of them (`own_names`: display -> label set name here)."""
    problems = []
    for e in exposed:
        if not e.own:
            continue
        where = [own_names[s] for s in e.label_sets if s in own_names][-1]  # the newest
        ranked = sorted(e.annotators.items(), key=lambda kv: (-kv[1], kv[0]))
        who = ", ".join(f"{a} ({n:,})" for a, n in ranked[:SHOWN_ANNOTATORS])
        if len(ranked) > SHOWN_ANNOTATORS:
            who += f" and {len(ranked) - SHOWN_ANNOTATORS} more"
        sample = ""
        if e.dataset not in restricted:
            sample = f"; e.g. {e.dataset} key(s) {', '.join(e.keys)}"
        severity = Severity.ERROR if e.exclusive else Severity.WARNING
        problems.append(place(
            "BE863", f"double exposure: {len(ranked)} annotator(s) labeled {e.examples:,} "
            f"example(s) of '{e.dataset}' under UI versions {', '.join(e.ui_versions)} (label "
            f"sets {', '.join(e.label_sets)}): annotators {who}{sample}", "labels", where,
            severity=severity,
            hints=(("their second judgments are not independent: drop one of each annotator's "
                    "two annotations, or set `exposure: allow` on every label set involved to "
                    "accept it") if e.exclusive else
                   "allowed by `exposure: allow` on every label set involved",)))
    return problems
