"""The multiverse: environment files, `extends` resolution, validation, provenance.

Resolution (SPEC §2): walk `extends` to the root, then overlay files root
first: mappings merge key by key, lists and scalars replace, `null` deletes an
inherited key. Every resolved value remembers the file and line it came from,
which is how errors in a parent point at the parent, and how
`buildenv show --explain` works. Validation runs on the resolved form, and all
problems of every file are reported at once.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from buildenv.core.canonical import digest_json
from buildenv.core.diagnostics import Diagnostic, DiagnosticError, did_you_mean, sort_diagnostics
from buildenv.core.project import Project
from buildenv.env.loader import KeyPath, Located, Position, load_yaml
from buildenv.env.spec import (
    COLUMN_PROBLEM_KEYS,
    CURRENT_SCHEMA,
    INTEGER_DTYPES,
    Environment,
    OnnxServing,
    SklearnServing,
)

__all__ = ["Multiverse", "Resolved", "canonical_environment", "environment_digest"]


@dataclass
class Resolved:
    """A validated environment plus where each of its values was written."""

    env: Environment
    chain: list[str]  # root first, this environment last
    raw: dict  # the merged document before validation
    origin: dict[KeyPath, Position] = field(repr=False)

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def digest(self) -> str:
        return environment_digest(self.env)

    def where(self, *path: Any) -> Position | None:
        """Position of the closest written key on `path` (falls back to parents)."""
        key = tuple(path)
        while key:
            if key in self.origin:
                return self.origin[key]
            key = key[:-1]
        return self.origin.get(())

    def diag(self, code: str, message: str, *path: Any, hints: tuple[str, ...] = (),
             severity: Any = None) -> Diagnostic:
        pos = self.where(*path)
        kwargs = {"severity": severity} if severity is not None else {}
        return Diagnostic(code, message, pos.path if pos else None, pos.line if pos else None,
                          pos.col if pos else None, hints=hints, **kwargs)


class Multiverse:
    """All environments of a project; files are parsed once and shared between chains."""

    def __init__(self, project: Project):
        self.project = project
        self._files: dict[str, Located] = {}
        self._resolved: dict[str, Resolved] = {}

    # --- files --------------------------------------------------------------------
    def names(self) -> list[str]:
        folder = self.project.environments_dir
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(".yaml")] for p in folder.glob("*.yaml")
                      if not p.name.startswith("."))

    def path(self, name: str) -> Path:
        return self.project.environments_dir / f"{name}.yaml"

    def display(self, name: str) -> str:
        return self.project.rel(self.path(name))

    def _load(self, name: str) -> Located:
        if name not in self._files:
            located = load_yaml(self.path(name), self.display(name))
            if not isinstance(located.data, dict):
                raise DiagnosticError([Diagnostic(
                    "BE004", "an environment file is a mapping of keys (name, datasets, ...)",
                    self.display(name), 1, 1)], 2)
            self._files[name] = located
        return self._files[name]

    def require(self, name: str) -> None:
        if not self.path(name).is_file():
            hint = did_you_mean(name, self.names()) or "`buildenv envs` lists the environments"
            raise DiagnosticError([Diagnostic("BE014", f"unknown environment '{name}'",
                                              hints=(hint,))], 2)

    def children(self, name: str) -> list[str]:
        out = []
        for other in self.names():
            try:
                data = self._load(other).data
            except DiagnosticError:
                continue
            if data.get("extends") == name:
                out.append(other)
        return out

    # --- chains -------------------------------------------------------------------
    def chain(self, name: str) -> list[str]:
        """Names from the root ancestor to `name`; BE007/BE008 name every file involved."""
        seen: list[str] = []
        current: str | None = name
        while current is not None:
            if current in seen:
                files = " -> ".join(self.display(n) for n in [*seen, current])
                pos = self._load(seen[-1]).keys.get(("extends",))
                raise DiagnosticError([Diagnostic(
                    "BE008", f"extends cycle: {files}", pos.path if pos else None,
                    pos.line if pos else None, pos.col if pos else None,
                    hints=("remove `extends` from one environment of the cycle",))], 2)
            seen.append(current)
            located = self._load(current)
            parent = located.data.get("extends")
            if parent is not None and not isinstance(parent, str):
                pos = located.keys[("extends",)]
                raise DiagnosticError([Diagnostic("BE004", "extends takes an environment name",
                                                  pos.path, pos.line, pos.col)], 2)
            if parent is not None and not self.path(parent).is_file():
                pos = located.keys[("extends",)]
                chain = " -> ".join(self.display(n) for n in seen)
                hint = did_you_mean(parent, self.names())
                raise DiagnosticError([Diagnostic(
                    "BE007", f"unknown parent '{parent}': no {self.project.rel(self.path(parent))}"
                    f" (chain: {chain})", pos.path, pos.line, pos.col,
                    hints=(hint,) if hint else ())], 2)
            current = parent
        return list(reversed(seen))

    # --- resolution -----------------------------------------------------------------
    def resolve(self, name: str) -> Resolved:
        """The validated environment, or DiagnosticError(exit 2) listing every problem."""
        if name in self._resolved:
            return self._resolved[name]
        self.require(name)
        chain = self.chain(name)
        merged: dict = {}
        origin: dict[KeyPath, Position] = {}
        for link in chain:
            located = self._load(link)
            _overlay(merged, located.data, (), located, origin)
        # a problem of the document as a whole (a missing top-level key) names this file
        origin[()] = Position(self.display(name), 1, 1)
        problems = self._name_problems(chain)
        for link in chain:
            problems.extend(self._load(link).problems)
        versions = self._version_problems(chain)
        if versions:  # another format: its keys would only produce noise
            raise DiagnosticError(problems + versions, 2)
        env: Environment | None = None
        try:
            env = Environment.model_validate(merged)
        except ValidationError as exc:
            problems.extend(p for p in _pydantic_problems(exc, merged, origin)
                            # a missing `name` is reported per file by _name_problems
                            if not (p.code == "BE005" and p.message == "missing key 'name'"))
        problems.extend(_semantic_problems(merged, origin, self.project))
        if any(p.is_error for p in problems):
            raise DiagnosticError(problems, 2)
        assert env is not None
        resolved = Resolved(env=env, chain=chain, raw=merged, origin=origin)
        if env.extends is not None:
            loosened = privacy_problems(resolved, self.resolve(env.extends))
            if loosened:
                raise DiagnosticError(loosened, 2)
        self._resolved[name] = resolved
        return resolved

    def resolve_all(self, names: list[str] | None = None) -> tuple[dict[str, Resolved],
                                                                    list[Diagnostic]]:
        """Every environment that resolves, and all problems of those that do not."""
        out: dict[str, Resolved] = {}
        problems: list[Diagnostic] = []
        for name in names or self.names():
            try:
                out[name] = self.resolve(name)
            except DiagnosticError as exc:
                problems.extend(exc.diagnostics)
        return out, sort_diagnostics(problems)

    def _version_problems(self, chain: list[str]) -> list[Diagnostic]:
        """BE013 for each file declaring a `schema:` version this buildenv does not read."""
        problems = []
        for link in chain:
            located = self._load(link)
            version = located.data.get("schema")
            if version is None or isinstance(version, bool) or not isinstance(version, int):
                continue  # absent (= current), or not a number: the model reports BE004
            if version == CURRENT_SCHEMA:
                continue
            pos = located.keys[("schema",)]
            hint = ("upgrade buildenv to read this file" if version > CURRENT_SCHEMA
                    else f"rewrite the file in the current format and set `schema: "
                    f"{CURRENT_SCHEMA}`")
            problems.append(Diagnostic(
                "BE013", f"unsupported schema version {version} (this buildenv supports "
                f"{CURRENT_SCHEMA})", pos.path, pos.line, pos.col, hints=(hint,)))
        return problems

    def _name_problems(self, chain: list[str]) -> list[Diagnostic]:
        problems = []
        for link in chain:
            located = self._load(link)
            written = located.data.get("name")
            if written is None:
                problems.append(Diagnostic("BE005", "missing key 'name' (it must be "
                                           f"'{link}', the file stem)", self.display(link), 1, 1))
            elif written != link:
                pos = located.keys[("name",)]
                problems.append(Diagnostic(
                    "BE006", f"name '{written}' does not match the file name '{link}.yaml'",
                    pos.path, pos.line, pos.col,
                    hints=(f"set `name: {link}` or rename the file to {written}.yaml",)))
        return problems


def _overlay(target: dict, source: dict, prefix: KeyPath, located: Located,
             origin: dict[KeyPath, Position]) -> None:
    for key, value in source.items():
        path = prefix + (key,)
        if value is None:
            target.pop(key, None)
            _forget(origin, path)
            continue
        if isinstance(value, dict) and isinstance(target.get(key), dict) and not (
                path == ("label",) and _label_form(value) != _label_form(target[key])):
            origin[path] = located.keys[path]
            _overlay(target[key], value, path, located, origin)
            continue
        target[key] = copy.deepcopy(value)
        _forget(origin, path)
        origin[path] = located.keys[path]
        for sub, pos in located.keys.items():
            if len(sub) > len(path) and sub[: len(path)] == path:
                origin[sub] = pos
        for sub, pos in located.values.items():
            if len(sub) > len(path) and sub[: len(path)] == path and sub not in origin:
                origin[sub] = pos


def _label_form(label: dict) -> str | None:
    """`label` takes a column or a label set: a child that switches form replaces the whole
    inherited label instead of merging into it."""
    if "labels" in label:
        return "labels"
    if "dataset" in label or "column" in label:
        return "column"
    return None


def _forget(origin: dict[KeyPath, Position], path: KeyPath) -> None:
    for sub in [p for p in origin if p[: len(path)] == path]:
        del origin[sub]


# --- pydantic errors -> diagnostics ---------------------------------------------------

_TYPE_CODES = {"extra_forbidden": "BE003", "missing": "BE005", "bad_range": "BE011",
               "bad_domain": "BE012", "evaluation": "BE020", "bad_pattern": "BE035",
               "bad_length": "BE036", "bad_tolerance": "BE037", "bad_unique": "BE038",
               "label_source": "BE850"}


def _clean_loc(loc: tuple, merged: dict) -> KeyPath:
    """Drop the union tags pydantic inserts (serving.sklearn.ops -> serving.ops)."""
    out: list[Any] = []
    for part in loc:
        if out == ["serving"] and part in ("sklearn", "onnx"):
            continue
        if part == "schema_":
            part = "schema"
        out.append(part)
    return tuple(out)


def _pydantic_problems(exc: ValidationError, merged: dict,
                       origin: dict[KeyPath, Position]) -> list[Diagnostic]:
    problems = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"], merged)
        kind = err["type"]
        code = _TYPE_CODES.get(kind, "BE004")
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        hints: tuple[str, ...] = ()
        if kind == "missing":
            where = loc[:-1]
            message = f"missing key '{loc[-1]}'" + (f" in {'.'.join(map(str, where))}"
                                                    if where else "")
        elif kind == "extra_forbidden":
            where = loc
            known = _known_keys(loc[:-1], merged)
            hint = did_you_mean(str(loc[-1]), known)
            hints = (hint,) if hint else (("allowed keys: " + ", ".join(sorted(known)),)
                                          if known else ())
            message = f"unknown key '{loc[-1]}'" + (
                f" in {'.'.join(map(str, loc[:-1]))}" if len(loc) > 1 else "")
        elif kind == "literal_error":
            where = loc
            expected = err.get("ctx", {}).get("expected", "")
            choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",")
                       if c.strip()]
            hint = did_you_mean(str(err.get("input")), choices)
            hints = (hint,) if hint else ()
            message = f"{dotted}: {err['input']!r} is not one of {expected}"
        elif kind == "union_tag_invalid":
            where = loc
            message = (f"{dotted}: unknown serving stack {err['ctx'].get('tag')!r}; expected "
                       f"{err['ctx'].get('expected_tags')}")
        elif kind == "union_tag_not_found":
            where = loc
            message = f"{dotted}: missing key 'stack' (sklearn or onnx)"
            code = "BE005"
        else:
            where = loc
            message = f"{dotted}: {err['msg']}"
            # a column's cross-field check: point at the key it is about, when written
            field_key = COLUMN_PROBLEM_KEYS.get(kind)
            if field_key and loc + (field_key,) in origin:
                where = loc + (field_key,)
        pos = _position(where, origin)
        problems.append(Diagnostic(code, message, pos.path if pos else None,
                                   pos.line if pos else None, pos.col if pos else None,
                                   hints=hints))
    return problems


def _position(path: KeyPath, origin: dict[KeyPath, Position]) -> Position | None:
    while True:
        if path in origin:
            return origin[path]
        if not path:
            return None
        path = path[:-1]


def _known_keys(loc: KeyPath, merged: dict) -> list[str]:
    """Field names of the model found at `loc` (for "did you mean" on unknown keys)."""
    model: Any = Environment
    data: Any = merged
    for part in loc:
        if isinstance(data, dict):
            data = data.get(part)
        ann = _annotation_of(model, part)
        if ann is None:
            return []
        model = _unwrap(ann, data)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _annotation_of(model: Any, part: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    origin = typing.get_origin(model)
    if origin is dict:
        return typing.get_args(model)[1]
    if origin in (list, tuple):
        return typing.get_args(model)[0]
    return None


def _unwrap(ann: Any, data: Any) -> Any:
    """Optional/Annotated/Union -> the model class that applies to `data`."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if SklearnServing in args or OnnxServing in args:
                stack = data.get("stack") if isinstance(data, dict) else None
                return OnnxServing if stack == "onnx" else SklearnServing
            if len(args) == 1:
                ann = args[0]
                continue
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            return models[0] if models else ann
        return ann


# --- cross-field checks -------------------------------------------------------------------

def _semantic_problems(raw: dict, origin: dict[KeyPath, Position],
                       project: Project) -> list[Diagnostic]:
    """Cross-references, checked on the merged document so they are reported even when
    other keys are invalid (every problem at once)."""
    from buildenv.env.uris import uri_problem

    def diag(code: str, message: str, *path: Any, hint: str | None = None) -> Diagnostic:
        pos = _position(tuple(path), origin)
        return Diagnostic(code, message, pos.path if pos else None, pos.line if pos else None,
                          pos.col if pos else None, hints=(hint,) if hint else ())

    def mapping(value: Any) -> dict:
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
    for col in mapping(mapping(mapping(raw.get("monitoring")).get("drift")).get("columns")):
        if col not in all_columns:
            problems.append(diag("BE010", f"monitoring.drift.columns: unknown column '{col}'",
                                 "monitoring", "drift", "columns", col,
                                 hint=did_you_mean(str(col), all_columns)))
    for name, ds in datasets.items():
        uri = mapping(ds).get("uri")
        if isinstance(uri, str):
            problem = uri_problem(uri, project)
            if problem:
                code, message, hint = problem
                problems.append(diag(code, f"dataset '{name}': {message}", "datasets", name,
                                     "uri", hint=hint))
    problems.extend(_partition_problems(datasets, restricted, diag, mapping))
    return problems


def _partition_problems(datasets: dict, restricted: Any, diag: Any, mapping: Any
                        ) -> list[Diagnostic]:
    """A partitioned dataset (`uri` ending in `/`) is Parquet; its `partitions` are declared
    columns, listed once; a restricted dataset has none (their values would be file paths,
    which the lock records and diagnostics name)."""
    problems = []
    hidden = set(restricted) if isinstance(restricted, list) else set()
    for name, ds in datasets.items():
        ds = mapping(ds)
        uri, parts = ds.get("uri"), ds.get("partitions")
        directory = isinstance(uri, str) and uri.endswith("/")
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
        seen: set = set()
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


def _private_release_problems(raw: dict, datasets: dict, diag: Any,
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


def _evaluation_problems(raw: dict, datasets: dict, diag: Any, mapping: Any) -> list[Diagnostic]:
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
    for other, keys in mapping(evaluation.get("join")).items():
        if other not in datasets:
            problems.append(diag("BE020", f"evaluation.join: unknown dataset '{other}'",
                                 "evaluation", "join", other,
                                 hint=did_you_mean(str(other), datasets)))
            continue
        rows_ds = held if isinstance(held, str) and held in datasets else label_ds
        rows_cols = mapping(mapping(datasets[rows_ds]).get("columns"))
        other_cols = mapping(mapping(datasets[other]).get("columns"))
        for col in [keys] if isinstance(keys, str) else keys or []:
            if isinstance(col, str) and (col not in rows_cols or col not in other_cols):
                missing = rows_ds if col not in rows_cols else other
                problems.append(diag("BE020", f"evaluation.join.{other}: key column '{col}' is "
                                     f"not declared in dataset '{missing}'", "evaluation",
                                     "join", other))
    return problems


def _label_set_problems(raw: dict, datasets: dict, diag: Any, mapping: Any,
                        project: Project) -> list[Diagnostic]:
    """`labels:` and `label: {labels: ...}` name datasets, columns and label sets that exist,
    and `reuse` forms no cycle."""
    from buildenv.env.uris import uri_problem

    sets = mapping(raw.get("labels"))
    problems: list[Diagnostic] = []
    for name, spec in sets.items():
        spec = mapping(spec)
        ds, key = spec.get("dataset"), spec.get("key")
        if isinstance(ds, str):
            if ds not in datasets:
                problems.append(diag("BE009", f"labels.{name}: unknown dataset '{ds}'", "labels",
                                     name, "dataset", hint=did_you_mean(ds, datasets)))
            elif isinstance(key, str):
                cols = mapping(mapping(datasets[ds]).get("columns"))
                if key not in cols:
                    problems.append(diag("BE010", f"labels.{name}: key '{key}' is not a column "
                                         f"of dataset '{ds}'", "labels", name, "key",
                                         hint=did_you_mean(key, cols)))
                elif mapping(cols[key]).get("dtype") not in (*INTEGER_DTYPES, "string"):
                    problems.append(diag("BE850", f"labels.{name}: key '{key}' is a "
                                         f"{mapping(cols[key]).get('dtype')} column; an example "
                                         "is identified by an integer or string column",
                                         "labels", name, "key"))
        if spec.get("format", "label-studio") == "label-studio" and spec.get("field") is None:
            problems.append(diag("BE850", f"labels.{name}: a Label Studio export needs `field`, "
                                 "the `from_name` of the choices control that holds the label",
                                 "labels", name))
        uri = spec.get("uri")
        if isinstance(uri, str):
            problem = uri_problem(uri, project)
            if problem:
                problems.append(diag(problem[0], f"labels.{name}: {problem[1]}", "labels", name,
                                     "uri", hint=problem[2]))
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
            if isinstance(ds, str) and reused.get("dataset") not in (None, ds) or (
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
    problems.extend(_reuse_cycles(sets, diag, mapping))
    label = mapping(raw.get("label"))
    chosen = label.get("labels")
    if isinstance(chosen, str) and chosen not in sets:
        problems.append(diag("BE851", f"label: unknown label set '{chosen}'", "label", "labels",
                             hint=did_you_mean(chosen, sets) or "declare it under `labels:`"))
    return problems


def _reuse_cycles(sets: dict, diag: Any, mapping: Any) -> list[Diagnostic]:
    """BE852 once per cycle of `reuse`, at the `reuse` entry that closes it."""
    def edges(name: str) -> list[tuple[int, str]]:
        reuse = mapping(sets.get(name)).get("reuse")
        return [(i, e["labels"]) for i, e in enumerate(reuse if isinstance(reuse, list) else [])
                if isinstance(e, dict) and isinstance(e.get("labels"), str)
                and e["labels"] in sets]

    problems: list[Diagnostic] = []
    reported: set[frozenset] = set()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for i, other in edges(name):
            if state.get(other) == 1:
                cycle = stack[stack.index(other):]  # other ... name
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    shown = " -> ".join([name, *cycle[:-1], name])  # from where it closes
                    problems.append(diag("BE852", f"labels.{name}.reuse: reuse cycle: {shown}",
                                         "labels", name, "reuse", i, "labels",
                                         hint="a label set cannot reuse itself, directly or "
                                         "through others: remove one `reuse` entry"))
            elif state.get(other) is None:
                visit(other, stack)
        stack.pop()
        state[name] = 2

    for name in sets:
        if state.get(name) is None:
            visit(name, [])
    return problems


def privacy_problems(child: Resolved, parent: Resolved) -> list[Diagnostic]:
    """A child may tighten its parent's privacy, never loosen it (SPEC §2): every dataset the
    parent restricts stays restricted (unless the child replaced it by a synthetic stand-in
    with provenance), `min_group_size` does not shrink, budgets do not grow, the peek policy
    names no new actor, and a person stays the unit a private release protects."""
    problems = []
    own, inherited = child.env.privacy, parent.env.privacy
    for name in inherited.restricted:
        if name in child.env.datasets and name not in own.restricted:
            if _synthetic_stand_in(child, parent, name):
                continue
            problems.append(child.diag(
                "BE019", f"privacy.restricted: dataset '{name}' is restricted in "
                f"{parent.name} and must stay restricted in {child.name} (an environment "
                "may tighten its parent's privacy, never loosen it)", "privacy", "restricted",
                hints=(f"add '{name}' back to privacy.restricted",
                       f"for data without people in it, generate a synthetic stand-in: "
                       f"`buildenv synth {parent.name} --dataset {name} --rows N`")))
    if own.min_group_size < inherited.min_group_size:
        problems.append(child.diag(
            "BE019", f"privacy.min_group_size {own.min_group_size} is smaller than "
            f"{inherited.min_group_size} in {parent.name}: privacy may be tightened, not "
            "loosened", "privacy", "min_group_size",
            hints=(f"use {inherited.min_group_size} or more",)))
    for name in sorted(set(own.restricted) & set(inherited.restricted)):
        mine, theirs = own.budget(name), inherited.budget(name)
        if mine > theirs:
            where = ("epsilon_budget", name) if isinstance(own.epsilon_budget, dict) \
                and name in own.epsilon_budget else ("epsilon_budget",)
            problems.append(child.diag(
                "BE019", f"privacy.epsilon_budget: {mine:g} for dataset '{name}' is more than "
                f"{theirs:g} in {parent.name}: a budget may be lowered, not raised", "privacy",
                *where, hints=(f"use {theirs:g} or less",)))
    fresh = sorted(set(own.budget_per_version) - set(inherited.budget_per_version))
    if fresh:
        problems.append(child.diag(
            "BE019", f"privacy.budget_per_version: {', '.join(fresh)} share one budget over "
            f"every version in {parent.name}; a child may not give each version a fresh one",
            "privacy", "budget_per_version",
            hints=(f"remove {', '.join(fresh)} from privacy.budget_per_version",)))
    added = sorted(set(own.peek.actors) - set(inherited.peek.actors))
    if added:
        problems.append(child.diag(
            "BE019", f"privacy.peek.actors: {', '.join(added)} may not peek in {parent.name}; "
            "a child may shrink the list of actors who see real rows, never widen it",
            "privacy", "peek", "actors",
            hints=("ask for the actor to be added where the parent's policy is written",)))
    for name, unit in inherited.units.items():
        mine_unit = own.units.get(name)
        if name in child.env.datasets and (mine_unit is None or mine_unit.key != unit.key):
            problems.append(child.diag(
                "BE019", f"privacy.units.{name}: a person is identified by '{unit.key}' in "
                f"{parent.name}; the child must keep that unit (otherwise a release would "
                "protect a row, not a person)", "privacy", "units",
                hints=(f"keep `units: {{{name}: {{key: {unit.key}, max_rows: ...}}}}`",)))
    return problems


def _synthetic_stand_in(child: Resolved, parent: Resolved, name: str) -> bool:
    """Whether the child may un-restrict `name`: it records the provenance of a synthetic file
    (written by `buildenv synth`) that the dataset points at, and that file is not the
    parent's data. `buildenv lock` and every build check the file's digest and its embedded
    provenance (`buildenv.data.provenance`)."""
    provenance = child.env.privacy.synthetic.get(name)
    if provenance is None:
        return False
    uri = child.env.datasets[name].uri
    real = parent.env.datasets.get(name)
    return provenance.uri == uri and (real is None or real.uri != uri) \
        and provenance.source.digest != provenance.digest


# --- canonical form ---------------------------------------------------------------------

def canonical_environment(env: Environment) -> dict:
    """The resolved environment without cosmetic fields: what its digest covers.

    Values equal to their defaults are left out (writing `nullable: true` or omitting it is the
    same environment), so a new optional key added to the format does not change the digest of
    environments that do not use it: additive format changes keep every lock valid."""
    data = env.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for key in ("name", "extends", "description", "schema"):
        data.pop(key, None)
    for ls in data.get("labels", {}).values():
        ls.pop("description", None)
    for ds in data["datasets"].values():
        ds.pop("description", None)
        for col in ds.get("columns", {}).values():
            col.pop("description", None)
    return data


def environment_digest(env: Environment) -> str:
    return digest_json(canonical_environment(env))
