"""What a derived dataset or a computed label set may name, and where its output goes.

`source_problems` checks the merged document (every problem at once, like
`references.semantic_problems`): a transform's inputs are datasets of the environment, no
dataset is derived from itself (directly or through others), an aggregation's count is a
declared integer column and its group size is not below the privacy policy's; a label set
computed by functions names no export, and its `gold` is an annotated label set of the same
examples and classes. `fill_sources` gives every source its output location once the
environment is valid: a derived dataset is partitioned like its first input (a directory, with
the same `partitions`), otherwise one file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from buildenv.core.diagnostics import Diagnostic, did_you_mean
from buildenv.env.sources import derived_uri, weak_labels_uri
from buildenv.env.spec import INTEGER_DTYPES, Environment, LabelSet
from buildenv.env.uris import names_directory

__all__ = ["derived_order", "fill_sources", "source_problems"]

Diag = Callable[..., Diagnostic]
Mapping = Callable[[Any], dict[str, Any]]


def source_problems(raw: dict[str, Any], diag: Diag, mapping: Mapping) -> list[Diagnostic]:
    """BE090 (derived datasets) and BE878 (computed label sets) problems of a merged document."""
    datasets = mapping(raw.get("datasets"))
    problems: list[Diagnostic] = []
    floor = mapping(raw.get("privacy")).get("min_group_size", 10)
    for name, ds in datasets.items():
        source = mapping(mapping(ds).get("source"))
        if not source:
            continue
        if "uri" in mapping(ds):
            problems.append(diag("BE090", f"dataset '{name}' has a `source`: buildenv writes it, "
                                 "so it takes no `uri`", "datasets", name, "uri",
                                 hint="drop `uri` (the output goes under .buildenv/derived/)"))
        inputs = source.get("inputs")
        for i, other in enumerate(inputs if isinstance(inputs, list) else []):
            if isinstance(other, str) and other not in datasets:
                problems.append(diag("BE090", f"dataset '{name}': unknown input dataset "
                                     f"'{other}'", "datasets", name, "source", "inputs", i,
                                     hint=did_you_mean(other, datasets)))
        problems.extend(_aggregation_problems(name, mapping(ds), source, floor, diag, mapping))
        problems.extend(_partition_problems(name, mapping(ds), source, datasets, diag, mapping))
    problems.extend(_derived_cycles(datasets, diag, mapping))
    sets = mapping(raw.get("labels"))
    for name, spec in sets.items():
        spec = mapping(spec)
        if spec.get("source") is None:
            continue
        for key in ("uri", "field"):
            if key in spec:
                problems.append(diag("BE878", f"labels.{name}: labels computed by functions "
                                     f"take no `{key}` (there is no export)", "labels", name,
                                     key))
        problems.extend(_gold_problems(name, spec, sets, diag, mapping))
    return problems


def _aggregation_problems(name: str, ds: dict[str, Any], source: dict[str, Any], floor: Any,
                          diag: Diag, mapping: Mapping) -> list[Diagnostic]:
    aggregation = mapping(source.get("aggregation"))
    if not aggregation:
        return []
    problems = []
    count = aggregation.get("count")
    columns = mapping(ds.get("columns"))
    if isinstance(count, str):
        if count not in columns:
            problems.append(diag("BE090", f"dataset '{name}': aggregation count column '{count}' "
                                 "is not declared under columns", "datasets", name, "source",
                                 "aggregation", "count", hint=did_you_mean(count, columns)))
        elif mapping(columns[count]).get("dtype") not in INTEGER_DTYPES:
            problems.append(diag("BE090", f"dataset '{name}': aggregation count column '{count}' "
                                 "must be an integer column", "datasets", name, "source",
                                 "aggregation", "count"))
    size = aggregation.get("min_group_size")
    if isinstance(size, int) and isinstance(floor, int) and size < floor:
        problems.append(diag("BE090", f"dataset '{name}': aggregation min_group_size {size} is "
                             f"below privacy.min_group_size {floor}", "datasets", name, "source",
                             "aggregation", "min_group_size",
                             hint="an aggregation may only withhold more than the policy asks"))
    return problems


def _partition_problems(name: str, ds: dict[str, Any], source: dict[str, Any],
                        datasets: dict[str, Any], diag: Diag, mapping: Mapping
                        ) -> list[Diagnostic]:
    """The output is partitioned like the first input: by the same columns, declared here. A
    derived first input is partitioned like its own first input, and so on down to a dataset
    with a `uri`."""
    inputs = source.get("inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs else None
    direct, seen = first, {name}
    while True:
        if not isinstance(first, str) or first not in datasets or first in seen:
            return []  # an unknown input or a cycle: reported on their own
        other = mapping(datasets[first])
        below = mapping(other.get("source")).get("inputs")
        if other.get("source") is None:
            break
        seen.add(first)
        first = below[0] if isinstance(below, list) and below else None
    uri = other.get("uri")
    theirs = other.get("partitions") if isinstance(uri, str) and names_directory(uri) else None
    theirs = theirs if isinstance(theirs, list) else []
    mine = ds.get("partitions")
    named = f"'{direct}'" if direct == first else f"'{direct}' (partitioned like '{first}')"
    if mine is not None and mine != theirs:
        return [diag("BE090", f"dataset '{name}': partitions {mine} differ from those of its "
                     f"first input {named} ({theirs}): the output is partitioned like it",
                     "datasets", name, "partitions", hint="drop `partitions`")]
    columns = mapping(ds.get("columns"))
    return [diag("BE090", f"dataset '{name}': partition column '{col}' of its first input "
                 f"{named} is not declared under columns (the output is partitioned like "
                 "the input)", "datasets", name, "columns",
                 hint="declare it like any other column")
            for col in theirs if isinstance(col, str) and col not in columns]


def _derived_cycles(datasets: dict[str, Any], diag: Diag, mapping: Mapping) -> list[Diagnostic]:
    """A dataset derived from itself, directly or through other derived datasets."""
    def inputs(name: str) -> list[str]:
        found = mapping(mapping(datasets.get(name)).get("source")).get("inputs")
        return [i for i in found if isinstance(i, str) and i in datasets] \
            if isinstance(found, list) else []

    problems = []
    for name in datasets:
        path = _cycle_from(name, inputs)
        if path is not None and path[0] == min(path[:-1]):  # report each cycle once
            problems.append(diag("BE090", f"dataset '{name}' is derived from itself: "
                                 f"{' -> '.join(path)}", "datasets", name, "source", "inputs",
                                 hint="a derived dataset reads other datasets, never its own "
                                 "output"))
    return problems


def _cycle_from(start: str, inputs: Callable[[str], list[str]]) -> list[str] | None:
    """The input path from `start` back to itself, if there is one."""
    todo: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while todo:
        node, path = todo.pop()
        for other in inputs(node):
            if other == start:
                return [*path, start]
            if other not in seen:
                seen.add(other)
                todo.append((other, [*path, other]))
    return None


def _gold_problems(name: str, spec: dict[str, Any], sets: dict[str, Any], diag: Diag,
                   mapping: Mapping) -> list[Diagnostic]:
    gold = mapping(spec.get("source")).get("gold")
    if not isinstance(gold, str):
        return []
    if gold not in sets:
        return [diag("BE878", f"labels.{name}: unknown gold label set '{gold}'", "labels", name,
                     "source", "gold", hint=did_you_mean(gold, sets))]
    other = mapping(sets[gold])
    if gold == name or other.get("source") is not None:
        return [diag("BE878", f"labels.{name}: gold '{gold}' must be an annotated label set "
                     "(an export), not labels computed by functions", "labels", name, "source",
                     "gold")]
    same = (other.get("dataset"), other.get("key")) == (spec.get("dataset"), spec.get("key"))
    classes = mapping(spec.get("taxonomy")).get("classes")
    theirs = mapping(other.get("taxonomy")).get("classes")
    if not same or (isinstance(classes, list) and isinstance(theirs, list)
                    and sorted(map(str, classes)) != sorted(map(str, theirs))):
        return [diag("BE878", f"labels.{name}: gold '{gold}' must label the same examples "
                     f"({spec.get('dataset')}.{spec.get('key')}) with the same classes",
                     "labels", name, "source", "gold")]
    return []


def derived_order(env: Environment) -> list[str]:
    """Derived datasets, each after the derived datasets it reads."""
    order: list[str] = []

    def visit(name: str, active: frozenset[str]) -> None:
        ds = env.datasets[name]
        if name in order or ds.source is None or name in active:
            return
        for other in ds.source.inputs:
            if other in env.datasets:
                visit(other, active | {name})
        order.append(name)

    for name in env.datasets:
        visit(name, frozenset())
    return order


def fill_sources(env: Environment, state_dir: str) -> Environment:
    """The environment with each source's output location (`uri`) filled in: derived datasets
    under `<state>/derived/<env>/`, computed label sets under `<state>/labels/<env>/`."""
    datasets = dict(env.datasets)
    for name in derived_order(env):
        ds = datasets[name]
        assert ds.source is not None
        first = datasets[ds.source.inputs[0]]
        partitioned = first.partitioned
        update: dict[str, Any] = {"uri": ds.uri or derived_uri(state_dir, env.name, name,
                                                               partitioned)}
        if partitioned and ds.partitions is None and first.partitions:
            update["partitions"] = list(first.partitions)
        datasets[name] = ds.model_copy(update=update)
    labels: dict[str, LabelSet] = {
        name: (spec.model_copy(update={"uri": weak_labels_uri(state_dir, env.name, name)})
               if spec.source is not None and not spec.uri else spec)
        for name, spec in env.labels.items()}
    if datasets == env.datasets and labels == env.labels:
        return env
    return env.model_copy(update={"datasets": datasets, "labels": labels})
