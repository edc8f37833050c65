"""Validate an environment document without pydantic, where it can be sure of the answer.

The lock's plan (`data.lock.quick`) answers a relock after an edit that changes what an
environment says, without the models and pydantic (a tenth of a second of every such run), by
interpreting `env.spec_table` -- the models described as data, generated from them -- on the
document. The interpreter is a *sound subset* of pydantic's validation: `dump` returns exactly
`model_dump(mode="json", by_alias=True, exclude_defaults=True)` of what pydantic would make of
the document, or None when it is not sure: a value of another Python type than the field's own
(pydantic's lax coercions, but an integer for a float), an unknown key, a union whose member it
cannot tell as pydantic's smart union would, a non-finite float, a field with a model or factory
default, a model whose validators it does not run (it runs `column_rules.COLUMN_CHECKS` and
`spec_checks`, which the models' validators call), or any failed check. It never answers for a
document pydantic would refuse.

`resolve_alone` is resolution (`resolve.Multiverse.resolve`) of one environment file in the
subset the plan answers for; outside it, None (the full lock runs):

- the file extends nothing (an overlay of a parent and `privacy_problems` against it need the
  parent's models) and has no `labels`, `label`, `serving`, `monitoring`, `privacy`,
  `evaluation` or `promotion` (the checks across sections, `semantic_problems` and
  `evaluation_problems`, read them);
- each dataset names one local file (`parquet` or `csv`) by `uri`: no `source`, `dvc`,
  `partitions` or keys of a table (the plan is only for such datasets);
- no column declares a `pattern` (checking one compiles it with pyarrow).

Within it, the checks of resolution that apply are the name (BE005/BE006), the schema version
(BE013), the file's own problems (duplicate keys), the model and the dataset's uri
(`uri_problem`, which the plan's relock runs on each file it hashes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from buildenv.env.canonical_form import canonical_document
from buildenv.env.column_rules import COLUMN_CHECKS
from buildenv.env.loader import KeyPath, Located, Position
from buildenv.env.overlay import overlay
from buildenv.env.spec_checks import dataset_columns_problem, dataset_uri_problem
from buildenv.env.spec_table import MODELS, ROOT
from buildenv.env.uris import is_remote, names_directory

__all__ = ["Alone", "dump", "resolve_alone"]

_TOP_KEYS = frozenset({"schema", "name", "description", "datasets"})
_DATASET_KEYS = frozenset({"uri", "format", "keep", "columns", "undeclared_columns",
                           "description"})
_FILE_FORMATS = ("parquet", "csv")
_CURRENT_SCHEMA = 1  # spec.CURRENT_SCHEMA (tests/test_quick_validate.py checks they agree)
_EXACT_FLOAT = 2 ** 53  # an integer pydantic turns into a float without rounding


_MODEL_DEFAULT = object()  # the value of an absent field whose default is a model or factory's


class _NotSure(Exception):
    """The document is outside what the interpreter can answer for."""


@dataclass(frozen=True)
class Alone:
    """An environment resolved without the models: what the lock and its plan need."""

    canonical: dict[str, Any]  # resolve.canonical_environment of the model
    datasets: dict[str, tuple[str, str, bool]]  # name -> (uri, format, keeps); none restricted


def dump(document: Any, model: str = ROOT) -> dict[str, Any] | None:
    """pydantic's JSON-mode dump (by alias, defaults excluded) of `document` validated as
    `model` (a name of `spec_table.MODELS`), or None when not sure (see the module)."""
    try:
        return _model(model, document)[1]
    except _NotSure:
        return None


def resolve_alone(located: Located, name: str) -> Alone | None:
    """The environment of the file `name` (parsed: `located`) as resolving it alone would make
    it, when it is in the plan's subset (the module) and has no problem at all; else None."""
    data = located.data
    if located.problems or not isinstance(data, dict) or not set(data) <= _TOP_KEYS:
        return None
    merged: dict[str, Any] = {}
    origin: dict[KeyPath, Position] = {}
    overlay(merged, data, (), located, origin, {})  # a `null` of the file is no key
    if merged.get("name") != name or type(merged["name"]) is not str:
        return None  # BE005, BE006
    if "schema" in merged and (type(merged["schema"]) is not int
                               or merged["schema"] != _CURRENT_SCHEMA):
        return None  # BE013, or the model's BE004
    datasets = merged.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        return None
    for ds in datasets.values():
        if not isinstance(ds, dict) or not set(ds) <= _DATASET_KEYS:
            return None
        uri, fmt = ds.get("uri"), ds.get("format", "parquet")
        if type(uri) is not str or fmt not in _FILE_FORMATS or type(fmt) is not str \
                or names_directory(uri) or is_remote(uri):
            return None
        columns = ds.get("columns")
        if not isinstance(columns, dict) or any(
                not isinstance(col, dict) or "pattern" in col for col in columns.values()):
            return None
    try:
        values, dumped = _model(ROOT, merged)
    except _NotSure:
        return None
    kept = {n: (ds["uri"], ds["format"], ds["keep"] if ds["keep"] is not None else True)
            for n, ds in values["datasets"].items()}  # a local file is kept unless `keep: false`
    return Alone(canonical_document(dumped), kept)


# --- the interpreter ------------------------------------------------------------------------

def _model(name: str, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(each field's validated value, by field name; the dump) of `value` as model `name`."""
    spec = MODELS[name]
    if type(value) is not dict or spec["extra"] != "forbid":
        raise _NotSure
    checks = _VALIDATORS.get(name, {})
    if any(v not in checks for v in spec["validators"]):
        raise _NotSure  # a validator this interpreter does not run
    fields = spec["fields"]
    keys = {f["key"] for f in fields.values()}
    if not set(value) <= keys:
        raise _NotSure  # an unknown key (extra=forbid), or a field by name and not alias
    values: dict[str, Any] = {}
    dumped: dict[str, Any] = {}
    for field_name, field in fields.items():
        key = field["key"]
        if key in value:
            if "default" not in field and not field.get("required"):
                raise _NotSure  # a model or factory default: not compared here
            found, out = _value(field["type"], value[key])
        elif field.get("required"):
            raise _NotSure  # missing
        else:
            values[field_name] = field.get("default", _MODEL_DEFAULT)
            continue  # its default: not dumped
        values[field_name] = found
        if "default" in field and _same(found, field["default"]):
            continue
        dumped[key] = out
    for validator in spec["validators"]:
        if not checks[validator](values):
            raise _NotSure
    return values, dumped


def _same(value: Any, default: Any) -> bool:
    """pydantic's `value == default` (exclude_defaults), of plain values."""
    return bool(value == default)


def _value(kind: list[Any], value: Any) -> tuple[Any, Any]:
    """(the validated value, its JSON dump) of `value` as the type `kind`."""
    tag = kind[0]
    if tag in ("str", "bool", "int", "float", "none", "literal"):
        found = _scalar(kind, value)
        return found, found
    if tag == "union":
        return _value(_member(kind[1], value), value)
    if tag == "list" or tag == "tuple":
        if type(value) is not list or (tag == "tuple" and len(value) != len(kind[1])):
            raise _NotSure  # (pydantic takes a list for a tuple; YAML has no tuple)
        kinds = kind[1] if tag == "tuple" else [kind[1]] * len(value)
        pairs = [_value(k, v) for k, v in zip(kinds, value, strict=True)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if tag == "dict":
        if type(value) is not dict or kind[1] != ["str"] or any(type(k) is not str
                                                                 for k in value):
            raise _NotSure
        items = {k: _value(kind[2], v) for k, v in value.items()}
        return {k: p[0] for k, p in items.items()}, {k: p[1] for k, p in items.items()}
    if tag == "model":
        return _model(kind[1], value)
    raise _NotSure  # "other": a type the table does not describe


def _scalar(kind: list[Any], value: Any) -> Any:
    """`value` validated as a scalar type (its dump is itself)."""
    tag = kind[0]
    if tag == "str" or tag == "bool":
        if type(value) is not (str if tag == "str" else bool):
            raise _NotSure
        return value
    if tag == "int":
        if type(value) is not int:
            raise _NotSure
        return _bounded(value, kind[1])
    if tag == "float":
        if type(value) is int and abs(value) <= _EXACT_FLOAT:
            value = float(value)
        if type(value) is not float or not math.isfinite(value):
            raise _NotSure  # JSON dumps nan and inf as null: not the value
        return _bounded(value, kind[1])
    if tag == "none":
        if value is not None:
            raise _NotSure
        return None
    if not any(type(value) is type(v) and value == v for v in kind[1]):  # literal
        raise _NotSure
    return value


_SCALAR = {"str": str, "bool": bool, "int": int, "float": float, "none": type(None)}


def _member(members: list[list[Any]], value: Any) -> list[Any]:
    """The member of a union pydantic's smart union picks for `value`, when sure: the one
    member whose exact type `value` has (strict validation of it succeeds first, whatever the
    others would coerce); of `X | None`, X for anything but None."""
    exact = [m for m in members if (m[0] in _SCALAR and type(value) is _SCALAR[m[0]])
             or (m[0] == "literal" and any(type(value) is type(v) and value == v for v in m[1]))]
    if len(exact) == 1:
        return exact[0]
    others = [m for m in members if m[0] != "none"]
    if not exact and value is not None and len(others) == 1 and (
            others[0][0] not in _SCALAR or (type(value) is int and others[0][0] == "float")):
        return others[0]  # a model, list, tuple or dict of `X | None`; an int for a float
    raise _NotSure


def _bounded(value: float, bounds: dict[str, Any]) -> Any:
    if ("ge" in bounds and not value >= bounds["ge"]) or ("gt" in bounds and not value >
                                                          bounds["gt"]) or \
            ("le" in bounds and not value <= bounds["le"]) or ("lt" in bounds and not value <
                                                               bounds["lt"]):
        raise _NotSure
    return value


class _ColumnView:
    """A column's validated values as `column_rules.Column` reads them."""

    def __init__(self, values: dict[str, Any]):
        self.__dict__.update(values)
        for key in ("range", "length"):  # the model holds tuples
            if values[key] is not None:
                setattr(self, key, tuple(values[key]))

    def constraints(self) -> list[str]:  # spec.Column.constraints
        return [key for key in ("range", "domain", "pattern", "length")
                if getattr(self, key) is not None] + (["unique"] if self.__dict__["unique"] else [])


def _column_consistent(values: dict[str, Any]) -> bool:
    if values["pattern"] is not None:
        return False  # RE2 compiles it (pyarrow): not here
    view = _ColumnView(values)
    return all(check(view) is None for check in COLUMN_CHECKS)  # type: ignore[arg-type]


#: The validators of `spec_table.MODELS` this interpreter runs (True: the document passes),
#: by model, each named with the digest of its source as the table has it: a model with a
#: validator not listed here -- a new one, or one edited since it was checked against the rule
#: here -- is never answered for (`tests/test_quick_validate.py` says so).
_VALIDATORS: dict[str, dict[str, Any]] = {
    "Column": {"model_after:_consistent:8c06724ebfca": _column_consistent},
    "Dataset": {
        # fills a derived dataset's uri: only with a source, which this never answers for
        "model_before:_derived_has_no_uri:4abfa0c415c3": lambda v: v["source"] is None,
        "model_after:_uri_or_source:c0e76bbcfe29": lambda v: dataset_uri_problem(
            v["uri"], v["source"], v["format"]) is None,
        "field_after:columns:_non_empty:c6bdcebd1713": lambda v: dataset_columns_problem(v["columns"]) is None,
    },
}
