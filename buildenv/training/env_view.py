"""A plain, read-only copy of a validated environment (and of the project's paths), for the
transforms' process: it answers what the data gate and `ctx` ask of the environment without
importing pydantic and the environment models in that process (a tenth of a rebuild).

The build describes the environment a transform sees (`describe`, run on the validated model:
every field and every property of every model, and the `restricted()` answer for each
dataset), the runner rebuilds it (`EnvironmentView.of`): same attribute names, same values, same
answers -- computed by the model, never recomputed here. Whatever the copy does not hold (a
model method user code calls on `ctx.env`) comes from the model itself, validated on first
use from the request's environment (`loader`), so nothing a transform could ask changes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["EnvironmentView", "ModelView", "ProjectView", "describe"]

_MODEL = "__model__"
_TUPLE = "__tuple__"


def describe(model: Any) -> dict[str, Any]:
    """`model` (a validated environment, pydantic) as JSON: each model's fields and properties
    by name (tagged with its class's name), tuples tagged, and for an environment which of
    its datasets `restricted()` names. ValueError for a value JSON cannot hold as it is."""
    out = _describe(model)
    if type(model).__name__ == "Environment":
        out["__restricted__"] = sorted(n for n in model.datasets if model.restricted(n))
    return out


def _describe(value: Any) -> Any:
    cls = type(value)
    if hasattr(cls, "model_fields"):  # a pydantic model
        out: dict[str, Any] = {_MODEL: cls.__name__}
        for name in cls.model_fields:
            out[name] = _describe(getattr(value, name))
        for name in _properties(cls):
            out[name] = _describe(getattr(value, name))
        return out
    if isinstance(value, dict):
        if any(not isinstance(k, str) or k.startswith("__") for k in value):
            raise ValueError(f"a mapping key JSON cannot hold: {list(value)!r}")
        return {k: _describe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_describe(v) for v in value]
    if isinstance(value, tuple):
        return {_TUPLE: [_describe(v) for v in value]}
    if value is None or isinstance(value, (bool, int, str)) or (
            isinstance(value, float) and value == value and abs(value) != float("inf")):
        return value
    raise ValueError(f"a value JSON cannot hold as it is: {type(value).__name__}")


def _properties(cls: type) -> list[str]:
    """The public properties a model class defines (its own and its bases')."""
    names: list[str] = []
    for base in cls.__mro__:
        for name, member in vars(base).items():
            if isinstance(member, property) and not name.startswith("_") and name not in names \
                    and not name.startswith("model_"):
                names.append(name)
    return names


class ModelView:
    """One model's copy: its fields and properties as attributes, read-only. An attribute the
    copy lacks (a method) is the model's own (`_model()` validates it once)."""

    __slots__ = ("_class", "_fields", "_model")

    def __init__(self, cls: str, fields: dict[str, Any], model: Callable[[], Any]):
        object.__setattr__(self, "_class", cls)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "_model")(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._class} is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelView) and self._class == other._class \
            and self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]  # like the models: equal by value, not hashable

    def __repr__(self) -> str:
        return f"{self._class}({', '.join(f'{k}={v!r}' for k, v in self._fields.items())})"

    def model_copy(self, update: dict[str, Any] | None = None) -> ModelView:
        """A copy with `update`'s fields replaced (the models' `model_copy`; derived
        properties are not recomputed, so only fields no property depends on may change)."""
        return type(self)(self._class, {**self._fields, **(update or {})}, self._model)


class EnvironmentView(ModelView):
    """An environment's copy; `restricted()` answers as the model answered, and the label
    helpers read the copy as the model's read the model."""

    __slots__ = ("_restricted",)

    def __init__(self, cls: str, fields: dict[str, Any], model: Callable[[], Any],
                 restricted: frozenset[str] = frozenset()):
        super().__init__(cls, fields, model)
        object.__setattr__(self, "_restricted", restricted)

    @classmethod
    def of(cls, description: dict[str, Any], loader: Callable[[], Any]) -> EnvironmentView:
        """The copy of `describe`'s output; `loader` gives the validated model when an
        attribute the copy lacks is asked for (it is called at most once)."""
        cached: list[Any] = []

        def model() -> Any:
            if not cached:
                cached.append(loader())
            return cached[0]

        view = _rebuild(description, model)
        assert isinstance(view, EnvironmentView)
        return view

    def restricted(self, dataset: str) -> bool:
        return dataset in self._restricted

    def column(self, dataset: str, column: str) -> Any:
        ds = self.datasets.get(dataset)
        return ds.columns.get(column) if ds else None

    def label_set(self) -> Any:
        if self.label is None or self.label.labels is None:
            return None
        return self.labels.get(self.label.labels)

    def label_dataset(self) -> str | None:
        if self.label is None:
            return None
        found = self.label_set()
        return found.dataset if found is not None else self.label.dataset

    def label_classes(self) -> list[Any] | None:
        found = self.label_set()
        if found is not None:
            return list(found.taxonomy.classes)
        return self.label.classes if self.label is not None else None

    def model_copy(self, update: dict[str, Any] | None = None) -> ModelView:
        raise TypeError("an environment's copy cannot be changed: narrow the model")


def _rebuild(value: Any, model: Callable[[], Any]) -> Any:
    """`describe`'s JSON back as views; `model` gives the model object at the same place."""
    if isinstance(value, list):
        return [_rebuild(v, partial(_item, model, i)) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if _TUPLE in value:
        return tuple(_rebuild(v, partial(_item, model, i)) for i, v in enumerate(value[_TUPLE]))
    if _MODEL not in value:
        return {k: _rebuild(v, partial(_item, model, k)) for k, v in value.items()}
    fields = {k: _rebuild(v, partial(_attr, model, k)) for k, v in value.items()
              if not k.startswith("__")}
    if value[_MODEL] == "Environment":
        return EnvironmentView(value[_MODEL], fields, model,
                               frozenset(value.get("__restricted__", ())))
    return ModelView(value[_MODEL], fields, model)


def _item(model: Callable[[], Any], key: Any) -> Any:
    return model()[key]


def _attr(model: Callable[[], Any], name: str) -> Any:
    return getattr(model(), name)


class ProjectView:
    """What the transforms' process needs of `core.project.Project`, answered as `Project`
    answers: its paths (from `[tool.buildenv] cache_dir`, as the build read it) and `store`.
    Anything else is asked of a `Project` opened on first use (`loader`)."""

    def __init__(self, root: Path, data_root: Path | None, cache_dir: str, store: str | None,
                 loader: Callable[[], Any]):
        self.root, self.data_root = root, data_root
        self.state_dir = root / cache_dir
        self.data_state_dir = self.data_base / cache_dir
        self._loaded: list[Any] = []
        self._loader = loader
        self.config = _StoreConfig(store, self._project)

    @property
    def data_base(self) -> Path:
        return self.data_root or self.root

    def rel(self, path: Path) -> str:
        """As `Project.rel`: `path` relative to the root when inside it."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _project(self) -> Any:
        if not self._loaded:
            self._loaded.append(self._loader())
        return self._loaded[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._project(), name)


class _StoreConfig:
    """`Project.config`'s `store`; anything else from the project's own config."""

    def __init__(self, store: str | None, project: Callable[[], Any]):
        self.store, self._of = store, project

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._of().config, name)
