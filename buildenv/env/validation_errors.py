"""Pydantic's validation errors as diagnostics at the YAML line of the key they concern."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from buildenv.core.diagnostics import Diagnostic, did_you_mean
from buildenv.env.evaluation_spec import SLICE_PROBLEM_KEYS
from buildenv.env.loader import KeyPath, Position
from buildenv.env.spec import (
    COLUMN_PROBLEM_KEYS,
    Environment,
    OnnxServing,
    SklearnServing,
)

__all__ = ["position", "pydantic_problems"]


_TYPE_CODES = {"extra_forbidden": "BE003", "missing": "BE005", "bad_range": "BE011",
               "bad_domain": "BE012", "evaluation": "BE020", "bad_pattern": "BE035",
               "bad_length": "BE036", "bad_tolerance": "BE037", "bad_unique": "BE038",
               "bad_presence": "BE034", "bad_nan": "BE039", "label_source": "BE850",
               "derived": "BE090", "bad_bins": "BE502", "bad_slice": "BE503"}
#: A cross-field problem (its error type) -> the key it is about, to point at when written.
_PROBLEM_KEYS = {**COLUMN_PROBLEM_KEYS, **SLICE_PROBLEM_KEYS}


def _clean_loc(loc: tuple[int | str, ...], merged: dict[str, Any]) -> KeyPath:
    """Drop the union tags pydantic inserts (serving.sklearn.ops -> serving.ops)."""
    out: list[Any] = []
    for part in loc:
        if out == ["serving"] and part in ("sklearn", "onnx"):
            continue
        if part == "schema_":
            part = "schema"
        out.append(part)
    return tuple(out)


#: A column's cross-field problem -> the other keys it is between (besides its own key).
_PARTNERS = {"bad_range": ("dtype",), "bad_domain": ("dtype",), "bad_pattern": ("dtype",),
             "bad_length": ("dtype",), "bad_unique": ("dtype",),
             "bad_tolerance": ("range", "domain", "pattern", "length", "unique")}


def pydantic_problems(exc: ValidationError, merged: dict[str, Any],
                       origin: dict[KeyPath, Position], files: Sequence[str] = ()
                       ) -> list[Diagnostic]:
    """Diagnostics at the line of the key each error concerns. `files`: the chain's files, root
    first: a problem between two keys written in different files (a child changes a column's
    `dtype`, its parent's `domain` no longer fits) is reported at the later file's key, with a
    hint naming the other one."""
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
            value = err.get("input")
            if kind == "string_type" and isinstance(value, (int, float)) and \
                    not isinstance(value, bool):
                # YAML reads `101` or `2` as a number: an annotator id, a UI version
                hints = (f"YAML reads {value!r} as a number; write it in quotes: \"{value}\"",)
            # a cross-field check (a column's, a slice's): point at the key it is about
            field_key = _PROBLEM_KEYS.get(kind)
            if field_key and loc + (field_key,) in origin:
                where = loc + (field_key,)
                moved = _changed_in_a_later_file(loc, field_key, _PARTNERS.get(kind, ()),
                                                 merged, origin, files)
                if moved is not None:
                    where, hint = moved
                    hints = (hint,)
        pos = position(where, origin)
        problems.append(Diagnostic(code, message, pos.path if pos else None,
                                   pos.line if pos else None, pos.col if pos else None,
                                   hints=hints))
    return problems


def _changed_in_a_later_file(column: KeyPath, key: str, partners: Sequence[str],
                             merged: dict[str, Any],
                             origin: dict[KeyPath, Position], files: Sequence[str]
                             ) -> tuple[KeyPath, str] | None:
    """When a partner of `key` (under the same column) was written in a later file of the
    chain than `key`, that partner's path and a hint pointing back at `key`'s line."""
    rank = {path: i for i, path in enumerate(files)}
    own = origin[column + (key,)]
    written = [(p, origin[column + (p,)]) for p in partners if column + (p,) in origin]
    later = [(p, pos) for p, pos in written if rank.get(pos.path, -1) > rank.get(own.path, -1)]
    if not later:
        return None
    partner, pos = max(later, key=lambda item: (rank.get(item[1].path, -1), item[1].line))
    value = _dig(merged, column + (partner,))
    shown = f"`{partner}: {_flow(value)}`" if value is not None else f"`{partner}`"
    return column + (partner,), (f"{shown} is set here, in {pos.path}; the `{key}` it "
                                 f"conflicts with is inherited from {own.path}:{own.line}:"
                                 f"{own.col}: change `{partner}`, or override `{key}` here "
                                 f"(`{key}: null` drops it)")


def _dig(data: Any, path: KeyPath) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def position(path: KeyPath, origin: dict[KeyPath, Position]) -> Position | None:
    while True:
        if path in origin:
            return origin[path]
        if not path:
            return None
        path = path[:-1]


def _known_keys(loc: KeyPath, merged: dict[str, Any]) -> list[str]:
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
