"""The checks a label set must pass before anything is trained on it.

`check_labels` (run by `buildenv build` after the lock check, and by `buildenv labels`):
every label set of the environment is read through the gate against its locked digests and
resolved (taxonomy, mapping, ties, relabeling), its keys must exist in its dataset, no
annotator may be double-exposed across the multiverse, and the environment's label set must
leave at least one usable example. `exposure_sources` gathers every label set of the
multiverse for the exposure rule (also used when locking).
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from buildenv.core.diagnostics import Diagnostic, Severity
from buildenv.core.project import Project
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.data.keys import key_text
from buildenv.env.resolve import Multiverse, Resolved
from buildenv.env.spec import LabelSet
from buildenv.labels.exposure import ExposureSource, double_exposure, exposure_problems
from buildenv.labels.labelset import LabelError, LabelSets

__all__ = ["check_labels", "exposure_check", "exposure_sources", "key_problems"]

SHOWN_KEYS = 5


def _identity(spec: LabelSet) -> tuple[Any, ...]:
    return (spec.uri, spec.format, spec.field, spec.key, spec.dataset, spec.ui_version)


def exposure_sources(project: Project, res: Resolved, own: LabelSets,
                     all_resolved: dict[str, Resolved], purpose: str
                     ) -> tuple[list[ExposureSource], list[Diagnostic]]:
    """Every label set of the multiverse once: this environment's from `own` (as pinned
    there), the others read as they are now. Others that cannot be read are a warning: the
    rule is then checked without them."""
    sources: list[ExposureSource] = []
    problems: list[Diagnostic] = []
    seen: set[tuple[Any, ...]] = set()
    for name, spec in res.env.labels.items():
        if spec.source is not None:  # computed labels: no annotator saw anything
            continue
        seen.add(_identity(spec))
        sources.append(ExposureSource(name, spec.dataset, spec.exposure,
                                      own.file(name).annotations, True))
    for env_name, other in sorted(all_resolved.items()):
        if env_name == res.name or not other.env.labels:
            continue
        sets: LabelSets | None = None
        for name, spec in sorted(other.env.labels.items()):
            if _identity(spec) in seen or spec.source is not None:
                continue
            seen.add(_identity(spec))
            sets = sets or LabelSets(Gate(project, other.env, purpose, where=other), None,
                                     other)
            try:
                annotations = sets.file(name).annotations
            except LabelError as exc:
                problems.append(res.diag(
                    "BE863", f"double exposure is not checked against label set '{name}' of "
                    f"{env_name}: {exc.diagnostics[0].message}", "labels",
                    severity=Severity.WARNING))
                continue
            sources.append(ExposureSource(f"{env_name}:{name}", spec.dataset, spec.exposure,
                                          annotations, False))
    return sources, problems


def exposure_check(project: Project, res: Resolved, own: LabelSets,
                   all_resolved: dict[str, Resolved], purpose: str) -> list[Diagnostic]:
    sources, problems = exposure_sources(project, res, own, all_resolved, purpose)
    restricted = {s.dataset for s in sources if res.env.restricted(s.dataset)}
    for other in all_resolved.values():  # a dataset restricted anywhere is restricted here
        restricted |= set(other.env.privacy.restricted)
    return problems + exposure_problems(double_exposure(sources), restricted, own.place,
                                        {n: n for n in res.env.labels})


def key_problems(gate: Gate, res: Resolved, sets: LabelSets) -> tuple[list[Diagnostic],
                                                                      dict[str, int]]:
    """BE862 for label keys the dataset does not hold; returns the problems and, per label
    set, how many of its resolved examples are rows of the dataset."""
    problems: list[Diagnostic] = []
    usable: dict[str, int] = {}
    by_dataset: dict[str, list[str]] = {}
    for name, spec in res.env.labels.items():
        by_dataset.setdefault(spec.dataset, []).append(name)
    for dataset, names in sorted(by_dataset.items()):
        key_columns = sorted({res.env.labels[n].key for n in names})
        try:
            with gate.open(dataset) as read:
                table = read.table(key_columns)
        except GateError as exc:
            problems.append(exc.diagnostic)
            continue
        present = {col: pc.unique(key_text(table.column(col))) for col in key_columns}
        restricted = res.env.restricted(dataset)
        for name in names:
            spec = res.env.labels[name]
            held = present[spec.key]
            annotations = sets.file(name).annotations
            own = pc.unique(annotations.keys)
            missing = pc.invert(pc.is_in(own, value_set=held))
            n_missing = int(pc.sum(missing).as_py() or 0)
            if n_missing:
                absent = pc.invert(pc.is_in(annotations.keys, value_set=held))
                first = int(pc.index(absent, True).as_py())
                where = f"first at {annotations.where(spec.uri, first)}"
                if not restricted:  # keys are the examples' data: never for restricted ones
                    shown = own.filter(missing)[:SHOWN_KEYS].to_pylist()
                    where = f"e.g. {', '.join(shown)}; {where}"
                problems.append(res.diag(
                    "BE862", f"label set '{name}': {n_missing:,} of {len(own):,} annotated "
                    f"example(s) have a key that dataset '{dataset}' does not hold in column "
                    f"'{spec.key}' ({where})", "labels", name, "key",
                    hints=("the export labels other examples than the dataset's: check the "
                           "key field and the dataset version",)))
            resolved = sets.resolve(name).keys
            usable[name] = int(pc.sum(pc.is_in(resolved, value_set=held)).as_py() or 0)
    return problems, usable


def check_labels(project: Project, multiverse: Multiverse, res: Resolved, lock: Any,
                 all_resolved: dict[str, Resolved] | None = None, purpose: str = "build",
                 sets: LabelSets | None = None) -> list[Diagnostic]:
    """Every problem of the environment's label sets (empty when there are none)."""
    if not res.env.labels:
        return []
    pins = {name: d.digest for name, d in lock.datasets.items()}
    gate = Gate(project, res.env, purpose, pins=pins, where=res, manifests=lock.manifests())
    sets = sets or LabelSets(gate, lock.label_pins(), res)
    problems: list[Diagnostic] = []
    for name in res.env.labels:
        try:
            problems.extend(sets.resolve(name).problems)
        except LabelError as exc:
            problems.extend(exc.diagnostics)
    if any(p.is_error for p in problems):
        return _unique(problems)
    found, usable = key_problems(gate, res, sets)
    problems.extend(found)
    all_resolved = all_resolved if all_resolved is not None else multiverse.resolve_all()[0]
    try:
        problems.extend(exposure_check(project, res, sets, all_resolved, purpose))
    except LabelError as exc:
        problems.extend(exc.diagnostics)
    chosen = res.env.label.labels if res.env.label is not None else None
    if chosen is not None and usable.get(chosen, 1) == 0:
        problems.append(res.diag(
            "BE866", f"label set '{chosen}' leaves no example of dataset "
            f"'{res.env.labels[chosen].dataset}' with a usable label: nothing to train on",
            "label", "labels", hints=("`buildenv labels " + res.name + "` shows why (ties, "
                                      "relabeling, keys)",)))
    return _unique(problems)


def _unique(problems: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for p in problems:
        key = (p.code, p.message, p.path, p.line)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out

