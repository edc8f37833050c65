"""Write `env.spec_table`: the environment models described as plain data, from the models.

The lock's plan validates an edited environment without pydantic (`env.quick_validate`), by
interpreting a description of the models rather than a second, hand-written copy of them: this
module makes that description from `spec.Environment` and every model it reaches (each field's
key, type, constraints and default; `extra`; the names of the validators), and
`tests/test_quick_validate.py` checks that the checked-in table is what it makes now. After
editing a model: `python -m buildenv.env.spec_table_gen --write`.
"""

from __future__ import annotations

import hashlib
import inspect
import pprint
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types  # pants: no-infer-dep (pydantic's own dependency: its constraint types)
from pydantic import AllowInfNan, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from buildenv.env.spec import Environment

__all__ = ["TABLE_PATH", "describe", "render"]

TABLE_PATH = Path(__file__).with_name("spec_table.py")

_BOUNDS = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le",
           annotated_types.Lt: "lt"}


def describe(root: type[BaseModel] = Environment) -> dict[str, Any]:
    """{model name: its description} of `root` and every model its fields reach."""
    out: dict[str, Any] = {}
    todo = [root]
    while todo:
        model = todo.pop()
        if model.__name__ in out:
            continue
        reached: list[type[BaseModel]] = []
        out[model.__name__] = _model(model, reached)
        todo.extend(reached)
    return dict(sorted(out.items()))


def _model(model: type[BaseModel], reached: list[type[BaseModel]]) -> dict[str, Any]:
    config = model.model_config
    decorators = model.__pydantic_decorators__
    validators = sorted(
        [f"model_{d.info.mode}:{name}:{_source_digest(d.func)}"
         for name, d in decorators.model_validators.items()]
        + [f"field_{d.info.mode}:{','.join(d.info.fields)}:{name}:{_source_digest(d.func)}"
           for name, d in decorators.field_validators.items()])
    fields = {}
    for name, info in model.model_fields.items():
        field: dict[str, Any] = {"key": info.alias or name,
                                 "type": _type(info.annotation, info.metadata, reached)}
        if info.default is PydanticUndefined and info.default_factory is None:
            field["required"] = True
        elif info.default_factory is not None:
            field["default_kind"] = "factory"
        elif isinstance(info.default, BaseModel):
            field["default_kind"] = "model"
        else:
            field["default"] = _plain(info.default)
        fields[name] = field
    return {"extra": config.get("extra"), "populate_by_name": bool(config.get("populate_by_name")),
            "validators": validators, "fields": fields}


def _source_digest(func: Any) -> str:
    """A validator's source text, digested: an edit of a validator changes the table (and so
    fails its freshness test), and the interpreter, which names the validators it runs by this
    digest, stops answering for the model until it is checked against the new rule."""
    func = getattr(func, "__func__", func)
    return hashlib.sha256(inspect.getsource(func).encode("utf-8")).hexdigest()[:12]


def _type(annotation: Any, metadata: list[Any], reached: list[type[BaseModel]]) -> Any:
    """A field type as nested lists: ["str"], ["int", bounds], ["literal", values],
    ["union", members], ["list", item], ["tuple", items], ["dict", key, value],
    ["model", name], ["none"]; ["other", text] for what the interpreter does not read."""
    bounds = _all_bounds(metadata)
    if bounds is None:
        return ["other", repr(annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], list(annotation.__metadata__), reached) if not bounds else \
            ["other", repr(annotation)]
    if annotation is str or annotation is bool:
        return ["str" if annotation is str else "bool"] if not bounds else ["other", "bounded"]
    if annotation is int or annotation is float:
        return [annotation.__name__, dict(sorted(bounds.items()))]
    if bounds:
        return ["other", repr(annotation)]
    if annotation is type(None):
        return ["none"]
    if origin is typing.Literal:
        return ["literal", [_plain(a) for a in args]]
    if origin is typing.Union or origin is types.UnionType:
        return ["union", [_type(a, [], reached) for a in args]]
    if origin is list:
        return ["list", _type(args[0], [], reached)]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return ["tuple", [_type(a, [], reached) for a in args]]
    if origin is dict:
        return ["dict", _type(args[0], [], reached), _type(args[1], [], reached)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        reached.append(annotation)
        return ["model", annotation.__name__]
    return ["other", repr(annotation)]


def _all_bounds(metadata: list[Any]) -> dict[str, Any] | None:
    """The numeric bounds of a field's metadata (and of a `Field` in it); None when it holds
    anything else (a discriminator, a validator)."""
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            if item.discriminator is not None:
                return None
            found, other = _bounds(item.metadata)
        else:
            found, other = _bounds([item])
        if other:
            return None
        bounds.update(found)
    return bounds


def _bounds(metadata: list[Any]) -> tuple[dict[str, Any], bool]:
    """The numeric bounds among `metadata`, and whether anything else is there."""
    found, other = {}, False
    for item in metadata:
        if isinstance(item, AllowInfNan):
            continue  # the interpreter takes finite numbers only, whatever this allows
        key = _BOUNDS.get(type(item))
        if key is None:
            other = True
        else:
            found[key] = getattr(item, key)
    return found, other


def _plain(value: Any) -> Any:
    """A default as the interpreter holds values (a tuple as the list JSON dumps)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if value is None or type(value) in (str, int, float, bool):
        return value
    raise TypeError(f"a default the table cannot hold: {value!r}")


def render() -> str:
    """The text of `env.spec_table` as the models describe it now."""
    body = pprint.pformat(describe(), width=99, sort_dicts=False)
    return ('"""The environment models (`env.spec`) as plain data, for validating without '
            'pydantic.\n\nGenerated by `python -m buildenv.env.spec_table_gen --write` from '
            'the models: do not edit\n(`tests/test_quick_validate.py` checks it is up to date; '
            '`env.quick_validate` reads it).\n"""\n\n'
            "from typing import Any\n\n__all__ = [\"MODELS\", \"ROOT\"]\n\n"
            f"ROOT = {Environment.__name__!r}\n\nMODELS: dict[str, Any] = {body}\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m buildenv.env.spec_table_gen --write")
    TABLE_PATH.write_text(render(), encoding="utf-8")
