"""Checks across sections of a merged environment document: what names what.

The label names a dataset and column; `evaluation:` names key columns, an evaluation dataset
and joins; label sets name datasets, keys and each other (no `reuse` cycles); private releases
name restricted datasets; partitions are declared columns; uris are usable. They run on the
merged document before validation so that every problem of every file is reported at once.
"""

from __future__ import annotations

from typing import Any

from buildenv.core.diagnostics import Diagnostic, did_you_mean
from buildenv.core.project import Project
from buildenv.env.loader import KeyPath, Position
from buildenv.env.source_rules import source_problems as code_source_problems
from buildenv.env.spec import (
    INTEGER_DTYPES,
    TABLE_FORMATS,
)
from buildenv.env.table_sources import source_problems as table_source_problems
from buildenv.env.uris import names_directory, uri_problem
from buildenv.env.validation_errors import position

__all__ = ["semantic_problems"]


def semantic_problems(raw: dict[str, Any], origin: dict[KeyPath, Position],
                       project: Project) -> list[Diagnostic]:
    """Cross-references, checked on the merged document so they are reported even when
    other keys are invalid (every problem at once)."""
    def diag(code: str, message: str, *path: Any, hint: str | None = None) -> Diagnostic:
        pos = position(tuple(path), origin)
        return Diagnostic(code, message, pos.path if pos else None, pos.line if pos else None,
                          pos.col if pos else None, hints=(hint,) if hint else ())

    def mapping(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    datasets = mapping(raw.get("datasets"))
    problems: list[Diagnostic] = []
    label = mapping(raw.get("label"))
    ds_name, col_name = label.get("dataset"), label.get("column")
    if isinstance(ds_name, str):
        if ds_name not in datasets:
            problems.append(diag("BE009", f"label: unknown dataset '{ds_name}'", "label",
                                 "dataset", hint=did_you_mean(ds_name, datasets)))
        elif isinstance(col_name, str):
            cols = mapping(mapping(datasets[ds_name]).get("columns"))
            if col_name not in cols:
                problems.append(diag("BE010", f"label: unknown column '{col_name}' in dataset "
                                     f"'{ds_name}'", "label", "column",
                                     hint=did_you_mean(col_name, cols)))
    restricted = mapping(raw.get("privacy")).get("restricted")
    for i, name in enumerate(restricted if isinstance(restricted, list) else []):
        if isinstance(name, str) and name not in datasets:
            problems.append(diag("BE009", f"privacy.restricted: unknown dataset '{name}'",
                                 "privacy", "restricted", i, hint=did_you_mean(name, datasets)))
    problems.extend(_private_release_problems(raw, datasets, diag, mapping))
    problems.extend(_evaluation_problems(raw, datasets, diag, mapping))
    problems.extend(_label_set_problems(raw, datasets, diag, mapping, project))
    all_columns = {c for ds in datasets.values() for c in mapping(mapping(ds).get("columns"))}
    for section in ("drift", "skew"):
        for col in mapping(mapping(mapping(raw.get("monitoring")).get(section)).get("columns")):
            if col not in all_columns:
                problems.append(diag("BE010", f"monitoring.{section}.columns: unknown column "
                                     f"'{col}'", "monitoring", section, "columns", col,
                                     hint=did_you_mean(str(col), all_columns)))
    for name, ds in datasets.items():
        uri = mapping(ds).get("uri")
        if isinstance(uri, str) and mapping(ds).get("format") not in TABLE_FORMATS:
            problem = uri_problem(uri, project)
            if problem:
                code, message, hint = problem
                problems.append(diag(code, f"dataset '{name}': {message}", "datasets", name,
                                     "uri", hint=hint))
    problems.extend(_partition_problems(datasets, restricted, diag, mapping))
    problems.extend(table_source_problems(datasets, diag, mapping, project))
    problems.extend(code_source_problems(raw, diag, mapping))
    return problems


def _partition_problems(datasets: dict[str, Any], restricted: Any, diag: Any, mapping: Any
                        ) -> list[Diagnostic]:
    """A partitioned dataset (`uri` ending in `/`) is Parquet; its `partitions` are declared
    columns, listed once; a restricted dataset has none (their values would be file paths,
    which the lock records and diagnostics name)."""
    problems = []
    hidden = set(restricted) if isinstance(restricted, list) else set()
    for name, ds in datasets.items():
        ds = mapping(ds)
        if ds.get("format") in TABLE_FORMATS:
            continue  # a table's partitions are its own (table_sources)
        uri, parts = ds.get("uri"), ds.get("partitions")
        directory = isinstance(uri, str) and names_directory(uri)
        if directory and ds.get("format", "parquet") != "parquet":
            problems.append(diag("BE060", f"dataset '{name}': a partitioned dataset (uri ending "
                                 "in '/') is a directory of Parquet files; format "
                                 f"'{ds.get('format')}' is not supported", "datasets", name,
                                 "format", hint="convert the files to Parquet, or name one "
                                 "CSV file"))
        if not isinstance(parts, list) or not parts:
            continue
        if isinstance(uri, str) and not directory:
            problems.append(diag("BE060", f"dataset '{name}': partitions are declared but uri "
                                 f"'{uri}' names one file", "datasets", name, "partitions",
                                 hint="end the uri with '/' to name the directory of "
                                 "partitions"))
        columns = mapping(ds.get("columns"))
        seen: set[str] = set()
        for i, col in enumerate(parts):
            if not isinstance(col, str):
                continue
            if col not in columns:
                problems.append(diag("BE010", f"dataset '{name}': partition column '{col}' is "
                                     "not declared under columns", "datasets", name,
                                     "partitions", i, hint=did_you_mean(col, columns)
                                     or "declare it like any other column (dtype, domain or "
                                     "range)"))
            if col in seen:
                problems.append(diag("BE060", f"dataset '{name}': partition column '{col}' is "
                                     "listed twice", "datasets", name, "partitions", i))
            seen.add(col)
        if name in hidden:
            problems.append(diag("BE060", f"dataset '{name}' is restricted and declares "
                                 "partitions: partition values are file paths, which the lock "
                                 "records and diagnostics name", "datasets", name,
                                 "partitions", hint="partition a restricted dataset by "
                                 "nothing (a plain directory of files), or un-partition it"))
    return problems


def _private_release_problems(raw: dict[str, Any], datasets: dict[str, Any], diag: Any,
                              mapping: Any) -> list[Diagnostic]:
    """`privacy:` keys about private releases name datasets and columns that exist, and a
    synthetic stand-in's provenance names the file the dataset points at."""
    privacy = mapping(raw.get("privacy"))
    problems = []
    budget = privacy.get("epsilon_budget")
    for name in budget if isinstance(budget, dict) else {}:
        if name not in datasets:
            problems.append(diag("BE009", f"privacy.epsilon_budget: unknown dataset '{name}'",
                                 "privacy", "epsilon_budget", name,
                                 hint=did_you_mean(str(name), datasets)))
    per_version = privacy.get("budget_per_version")
    for i, name in enumerate(per_version if isinstance(per_version, list) else []):
        if isinstance(name, str) and name not in datasets:
            problems.append(diag("BE009", f"privacy.budget_per_version: unknown dataset '{name}'",
                                 "privacy", "budget_per_version", i,
                                 hint=did_you_mean(name, datasets)))
    for name, unit in mapping(privacy.get("units")).items():
        if name not in datasets:
            problems.append(diag("BE009", f"privacy.units: unknown dataset '{name}'", "privacy",
                                 "units", name, hint=did_you_mean(str(name), datasets)))
            continue
        key = mapping(unit).get("key")
        columns = mapping(mapping(datasets[name]).get("columns"))
        if isinstance(key, str) and key not in columns:
            problems.append(diag("BE010", f"privacy.units.{name}.key: unknown column '{key}' in "
                                 f"dataset '{name}'", "privacy", "units", name, "key",
                                 hint=did_you_mean(key, columns)))
    for name, provenance in mapping(privacy.get("synthetic")).items():
        if name not in datasets:
            problems.append(diag("BE009", f"privacy.synthetic: unknown dataset '{name}'",
                                 "privacy", "synthetic", name,
                                 hint=did_you_mean(str(name), datasets)))
            continue
        uri, declared = mapping(provenance).get("uri"), mapping(datasets[name]).get("uri")
        if isinstance(uri, str) and isinstance(declared, str) and uri != declared:
            problems.append(diag(
                "BE820", f"privacy.synthetic.{name}.uri is '{uri}' but dataset '{name}' reads "
                f"'{declared}': provenance describes another file", "privacy", "synthetic",
                name, "uri", hint="regenerate with `buildenv synth`, which writes both"))
    return problems


def _evaluation_problems(raw: dict[str, Any], datasets: dict[str, Any], diag: Any,
                         mapping: Any) -> list[Diagnostic]:
    """`evaluation:` names columns and datasets that exist, around a label."""
    evaluation = mapping(raw.get("evaluation"))
    if not evaluation:
        return []
    label = mapping(raw.get("label"))
    label_ds = label.get("dataset") if isinstance(label.get("dataset"), str) else None
    label_set = mapping(mapping(raw.get("labels")).get(label.get("labels")))
    if isinstance(label.get("labels"), str) and isinstance(label_set.get("dataset"), str):
        label_ds = label_set["dataset"]
        if isinstance(evaluation.get("dataset"), str):
            return [diag("BE020", "evaluation.dataset: a label set's evaluation rows are held "
                         "out of its dataset by key; a separate evaluation dataset is not "
                         "supported with `label: {labels: ...}`", "evaluation", "dataset",
                         hint="use `holdout` (and `key`) instead")]
    if label_ds is None or label_ds not in datasets:
        return [diag("BE020", "evaluation: the environment declares no label (a `label:` with "
                     "a dataset), so there is nothing to evaluate", "evaluation")] \
            if not label else []
    problems = []
    label_cols = mapping(mapping(datasets[label_ds]).get("columns"))
    key = evaluation.get("key")
    for i, col in enumerate([key] if isinstance(key, str) else key or []):
        if isinstance(col, str) and col not in label_cols:
            problems.append(diag("BE020", f"evaluation.key: column '{col}' is not declared in "
                                 f"the label dataset '{label_ds}'", "evaluation", "key",
                                 *(() if isinstance(key, str) else (i,)),
                                 hint=did_you_mean(col, label_cols)))
    held = evaluation.get("dataset")
    if isinstance(held, str):
        if held not in datasets:
            problems.append(diag("BE020", f"evaluation.dataset: unknown dataset '{held}'",
                                 "evaluation", "dataset", hint=did_you_mean(held, datasets)))
        elif held == label_ds:
            problems.append(diag("BE020", f"evaluation.dataset: '{held}' is the label dataset; "
                                 "name a separate dataset of evaluation rows, or use `holdout`",
                                 "evaluation", "dataset"))
        elif label.get("column") not in mapping(mapping(datasets[held]).get("columns")):
            problems.append(diag("BE020", f"evaluation.dataset: '{held}' does not declare the "
                                 f"label column '{label.get('column')}'", "evaluation",
                                 "dataset"))
    rows_ds = held if isinstance(held, str) and held in datasets else label_ds
    problems.extend(_join_problems(mapping(evaluation.get("join")), datasets, rows_ds,
                                   label.get("column"), diag, mapping))
    return problems


def _join_problems(join: dict[str, Any], datasets: dict[str, Any], rows_ds: str,
                   label: Any, diag: Any, mapping: Any) -> list[Diagnostic]:
    """`evaluation.join`: known datasets, keys declared on both sides, never the label."""
    problems = []
    for other, keys in join.items():
        if other not in datasets:
            problems.append(diag("BE020", f"evaluation.join: unknown dataset '{other}'",
                                 "evaluation", "join", other,
                                 hint=did_you_mean(str(other), datasets)))
            continue
        rows_cols = mapping(mapping(datasets[rows_ds]).get("columns"))
        other_cols = mapping(mapping(datasets[other]).get("columns"))
        for col in [keys] if isinstance(keys, str) else keys or []:
            if isinstance(col, str) and (col not in rows_cols or col not in other_cols):
                missing = rows_ds if col not in rows_cols else other
                problems.append(diag("BE020", f"evaluation.join.{other}: key column '{col}' is "
                                     f"not declared in dataset '{missing}'", "evaluation",
                                     "join", other))
            elif isinstance(col, str) and col == label:  # scored on, not served
                problems.append(diag("BE020", f"evaluation.join.{other}: key column '{col}' is "
                                     "the label, which serving never sends: it cannot join "
                                     "an evaluation row", "evaluation", "join", other,
                                     hint="join on the columns that identify a row (an id)"))
    return problems


def _label_set_problems(raw: dict[str, Any], datasets: dict[str, Any], diag: Any, mapping: Any,
                        project: Project) -> list[Diagnostic]:
    """`labels:` and `label: {labels: ...}` name datasets, columns and label sets that exist,
    and `reuse` forms no cycle."""
    sets = mapping(raw.get("labels"))
    problems: list[Diagnostic] = []
    for name, spec in sets.items():
        spec = mapping(spec)
        problems.extend(_label_key_problems(name, spec, datasets, diag, mapping))
        if spec.get("format", "label-studio") == "label-studio" and spec.get("field") is None \
                and spec.get("source") is None:
            problems.append(diag("BE850", f"labels.{name}: a Label Studio export needs `field`, "
                                 "the `from_name` of the choices control that holds the label",
                                 "labels", name))
        uri = spec.get("uri")
        if isinstance(uri, str):
            problem = uri_problem(uri, project)
            if problem:
                problems.append(diag(problem[0], f"labels.{name}: {problem[1]}", "labels", name,
                                     "uri", hint=problem[2]))
        problems.extend(_reuse_problems(name, spec, sets, diag, mapping, project))
    problems.extend(_reuse_cycles(sets, diag, mapping))
    label = mapping(raw.get("label"))
    chosen = label.get("labels")
    if isinstance(chosen, str) and chosen not in sets:
        problems.append(diag("BE851", f"label: unknown label set '{chosen}'", "label", "labels",
                             hint=did_you_mean(chosen, sets) or "declare it under `labels:`"))
    return problems


def _label_key_problems(name: str, spec: dict[str, Any], datasets: dict[str, Any], diag: Any,
                        mapping: Any) -> list[Diagnostic]:
    """A label set's `dataset` exists and its `key` is an integer or string column of it."""
    ds, key = spec.get("dataset"), spec.get("key")
    if not isinstance(ds, str):
        return []
    if ds not in datasets:
        return [diag("BE009", f"labels.{name}: unknown dataset '{ds}'", "labels",
                     name, "dataset", hint=did_you_mean(ds, datasets))]
    if not isinstance(key, str):
        return []
    cols = mapping(mapping(datasets[ds]).get("columns"))
    if key not in cols:
        return [diag("BE010", f"labels.{name}: key '{key}' is not a column "
                     f"of dataset '{ds}'", "labels", name, "key",
                     hint=did_you_mean(key, cols))]
    if mapping(cols[key]).get("dtype") not in (*INTEGER_DTYPES, "string"):
        return [diag("BE850", f"labels.{name}: key '{key}' is a "
                     f"{mapping(cols[key]).get('dtype')} column; an example "
                     "is identified by an integer or string column",
                     "labels", name, "key")]
    return []


def _reuse_problems(name: str, spec: dict[str, Any], sets: dict[str, Any], diag: Any, mapping: Any,
                    project: Project) -> list[Diagnostic]:
    """Each `reuse` entry names a label set of the same examples, a mapping file that exists,
    or (without a mapping) an older taxonomy whose classes are all still classes."""
    ds, key = spec.get("dataset"), spec.get("key")
    problems: list[Diagnostic] = []
    reuse = spec.get("reuse")
    for i, entry in enumerate(reuse if isinstance(reuse, list) else []):
        entry = mapping(entry)
        other = entry.get("labels")
        if isinstance(entry.get("mapping"), str):
            problem = uri_problem(entry["mapping"], project)
            if problem:
                problems.append(diag(problem[0], f"labels.{name}.reuse: {problem[1]}",
                                     "labels", name, "reuse", i, "mapping", hint=problem[2]))
        if not isinstance(other, str):
            continue
        if other not in sets:
            problems.append(diag("BE851", f"labels.{name}.reuse: unknown label set "
                                 f"'{other}'", "labels", name, "reuse", i, "labels",
                                 hint=did_you_mean(other, sets)
                                 or "declare it under `labels:`"))
            continue
        reused = mapping(sets[other])
        if (isinstance(ds, str) and reused.get("dataset") not in (None, ds)) or (
                isinstance(key, str) and reused.get("key") not in (None, key)):
            problems.append(diag("BE850", f"labels.{name}.reuse: '{other}' labels "
                                 f"{reused.get('dataset')}.{reused.get('key')}, this set "
                                 f"{ds}.{key}: reuse needs the same examples", "labels",
                                 name, "reuse", i, "labels"))
        if entry.get("mapping") is None:
            own = mapping(spec.get("taxonomy")).get("classes")
            old = mapping(reused.get("taxonomy")).get("classes")
            if isinstance(own, list) and isinstance(old, list):
                missing = [c for c in old if c not in own]
                if missing:
                    problems.append(diag(
                        "BE859", f"labels.{name}.reuse: without a mapping every class of "
                        f"'{other}' must be a class of this taxonomy; not: "
                        f"{', '.join(map(str, missing[:8]))}"
                        + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""),
                        "labels", name, "reuse", i,
                        hint="add `mapping: <file>.sssom.tsv` saying where they go"))
    return problems


def _reuse_cycles(sets: dict[str, Any], diag: Any, mapping: Any) -> list[Diagnostic]:
    """BE852 once per cycle of `reuse` (and a computed set's `gold`), at the entry that closes
    it. A `gold` naming a computed set is not followed: BE878 says what is wrong with it."""
    def edges(name: str) -> list[tuple[tuple[str | int, ...], str]]:
        reuse = mapping(sets.get(name)).get("reuse")
        out: list[tuple[tuple[str | int, ...], str]] = [
            (("reuse", i, "labels"), e["labels"])
            for i, e in enumerate(reuse if isinstance(reuse, list) else [])
            if isinstance(e, dict) and isinstance(e.get("labels"), str) and e["labels"] in sets]
        gold = mapping(mapping(sets.get(name)).get("source")).get("gold")
        if isinstance(gold, str) and gold in sets and not mapping(sets[gold]).get("source"):
            out.append((("source", "gold"), gold))
        return out

    problems: list[Diagnostic] = []
    reported: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for place, other in edges(name):
            if state.get(other) == 1:
                cycle = stack[stack.index(other):]  # other ... name
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    shown = " -> ".join([name, *cycle[:-1], name])  # from where it closes
                    key = "source.gold" if place[0] == "source" else "reuse"
                    problems.append(diag("BE852", f"labels.{name}.{key}: reuse cycle: {shown}",
                                         "labels", name, *place,
                                         hint="a label set cannot reuse itself, directly or "
                                         "through others (a computed set's `gold` counts): "
                                         "remove one `reuse` entry or the `gold`"))
            elif state.get(other) is None:
                visit(other, stack)
        stack.pop()
        state[name] = 2

    for name in sets:
        if state.get(name) is None:
            visit(name, [])
    return problems
