"""The base every model of the environment format shares: strict, immutable, documented."""

# Annotations are evaluated when the module runs, not postponed (no `from __future__ import
# annotations` in the modules of models): postponed, pydantic compiles and evaluates the text
# of every field's annotation when it makes each model class, about 4 ms of every command that
# reads an environment (bench/README.md, "Session 9 (h72)"; tests/test_spec.py checks it).
import ast
import functools
import inspect
import itertools
import sys
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import AllowInfNan, BaseModel, ConfigDict

__all__ = ["Scalar", "Strict", "documented", "field_docstrings", "without_required"]

# A scalar of a column's range or domain may be infinite or NaN as YAML writes it (`.inf`): the
# column's rules refuse it with a message that says what to write (`column_rules`), where the
# union's refusal would list four types. Every other float of the format must be finite
# (`Strict`): an infinite value could not be written in the environment's digest (JSON).
Scalar = Union[bool, int, Annotated[float, AllowInfNan(True)], str]


def field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the docstring written under it, in `model` and the models it derives
    from (the nearest wins), as `inspect.cleandoc` leaves it."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            out.update(_module_docstrings(cls.__module__).get(cls.__qualname__, {}))
    return out


@functools.cache
def _module_docstrings(module: str) -> dict[str, dict[str, str]]:
    """Class qualname -> field docstrings, for every class of `module` (its source parsed
    once)."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module]))
    except (OSError, TypeError, KeyError, SyntaxError):
        return {}
    out: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                name = f"{prefix}{node.name}"
                out.setdefault(name, _docstrings(node.body))
                visit(node.body, f"{name}.")

    visit(tree.body, "")
    return out


def _docstrings(body: list[ast.stmt]) -> dict[str, str]:
    found = {}
    for field, text in itertools.pairwise(body):
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) \
                and isinstance(text, ast.Expr) and isinstance(text.value, ast.Constant) \
                and isinstance(text.value.value, str):
            found[field.target.id] = inspect.cleandoc(text.value.value)
    return found


def documented(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A `json_schema_extra`: each property's description is the docstring under its field
    (unless the field sets one). Read here, when a schema is made (`buildenv schema`, editors),
    rather than by pydantic's `use_attribute_docstrings` when each model class is made: that
    read the source of every class in every process, a tenth of a second of CPU of every
    command that reads an environment (bench/README.md, "Session 6 (h44)")."""
    properties = schema.get("properties", {})
    docs = field_docstrings(model)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in properties and name in docs and info.description is None \
                and "description" not in properties[key]:
            properties[key] = _with_description(properties[key], docs[name])


def _with_description(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """`schema` with its description where pydantic puts a field's: before its title (pydantic
    sorts the keys afterwards, but not those of a field named `properties`), so the schema's
    bytes are what they were when pydantic read the docstrings itself."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            out["description"] = text
        out[key] = value
    out.setdefault("description", text)
    return out


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              json_schema_extra=documented)


def without_required(*names: str) -> Callable[[dict[str, Any], type[BaseModel]], None]:
    """A `json_schema_extra` (that also `documented`) that drops `names` from a model's required
    keys: keys the resolver may fill in (a derived dataset's `uri`), so editors do not ask for
    them."""
    def edit(schema: dict[str, Any], model: type[BaseModel]) -> None:
        documented(schema, model)
        required = [k for k in schema.get("required", []) if k not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
    return edit
