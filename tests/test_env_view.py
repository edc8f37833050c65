"""The plain copy of a transform's environment (`training.env_view`) answers as the model does.

The transforms' process reads the build's description instead of validating the environment
with pydantic; every field, every property and `restricted()` (which privacy depends on) must
be the model's own answer, and anything the copy lacks must come from the model itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from buildenv.core.project import Project
from buildenv.data.lock.derived import narrowed
from buildenv.env.resolve import Multiverse
from buildenv.env.spec import Environment
from buildenv.training.env_view import EnvironmentView, ModelView, ProjectView, describe

REPO = Path(__file__).resolve().parents[1]

COLUMNS = {"day": {"dtype": "int64"}, "kind": {"dtype": "string", "domain": ["a", "b"],
                                                "length": [1, 3]},
           "x": {"dtype": "float64", "range": [0, None], "required": False, "serving": False}}
RESTRICTED = {
    "name": "r",
    "datasets": {
        "events": {"uri": "data/events/", "partitions": ["day"], "columns": COLUMNS},
        "people": {"uri": "data/people.csv", "format": "csv",
                   "columns": {"id": {"dtype": "int64"}}},
        "table": {"uri": "data/t/", "format": "delta", "version": 3,
                  "columns": {"id": {"dtype": "int64"}}},
        "daily": {"source": {"transform": "t.py:daily", "inputs": ["events"]},
                  "columns": {"kind": {"dtype": "string"}, "n": {"dtype": "int64"}}},
        "counts": {"source": {"transform": "t.py:counts", "inputs": ["daily", "people"],
                              "aggregation": {"count": "n", "min_group_size": 5}},
                   "columns": {"n": {"dtype": "int64"}}},
        "again": {"source": {"transform": "t.py:again", "inputs": ["daily", "table"]},
                  "columns": {"n": {"dtype": "int64"}}},
    },
    "privacy": {"restricted": ["events"], "min_group_size": 7},
    "label": {"dataset": "people", "column": "id", "classes": [1, 2]},
    "evaluation": {"holdout": 0.3},
}


def _environments() -> list[Environment]:
    multiverse = Multiverse(Project.discover(REPO))
    envs = [multiverse.resolve(name).env for name in multiverse.names()]
    return [*envs, Environment.model_validate(RESTRICTED)]


def _views(env: Environment) -> list[tuple[Environment, EnvironmentView]]:
    """The environment and each derived dataset's narrowed environment, with their copies."""
    models = [env] + [narrowed(env, list(ds.source.inputs))
                      for ds in env.datasets.values() if ds.source is not None]
    return [(m, EnvironmentView.of(describe(m), lambda m=m: m)) for m in models]


def _same(view: Any, model: Any, where: str) -> None:
    """Every field and property of `model` (recursively) equals the copy's, type included."""
    cls = type(model)
    if hasattr(cls, "model_fields"):
        assert isinstance(view, ModelView), where
        names = list(cls.model_fields) + [
            n for base in cls.__mro__ for n, m in vars(base).items()
            if isinstance(m, property) and not n.startswith(("_", "model_"))]
        for name in names:
            _same(getattr(view, name), getattr(model, name), f"{where}.{name}")
    elif isinstance(model, dict):
        assert isinstance(view, dict) and list(view) == list(model), where
        for key in model:
            _same(view[key], model[key], f"{where}[{key!r}]")
    elif isinstance(model, (list, tuple)):
        assert type(view) is type(model) and len(view) == len(model), where
        for i, (v, m) in enumerate(zip(view, model)):
            _same(v, m, f"{where}[{i}]")
    else:
        assert type(view) is type(model) and view == model, where


def test_every_field_and_property_is_the_models() -> None:
    checked = 0
    for env in _environments():
        for model, view in _views(env):
            _same(view, model, model.name)
            checked += 1
    assert checked > 10


def test_restricted_and_the_label_helpers_answer_as_the_model() -> None:
    found = set()
    for env in _environments():
        for model, view in _views(env):
            for name in [*model.datasets, "nothing-like-it"]:
                assert view.restricted(name) == model.restricted(name), (model.name, name)
                found.add(model.restricted(name))
                for column in ["kind", "id", "absent"]:
                    _same(view.column(name, column), model.column(name, column), name)
            _same(view.label_set(), model.label_set(), model.name)
            assert view.label_dataset() == model.label_dataset()
            assert view.label_classes() == model.label_classes()
    assert found == {True, False}  # both answers were checked


def test_a_restricted_input_restricts_a_derived_one_unless_aggregated() -> None:
    env = Environment.model_validate(RESTRICTED)
    view = EnvironmentView.of(describe(narrowed(env, ["daily", "table"])), lambda: None)
    assert view.restricted("daily") and not view.restricted("table")
    view = EnvironmentView.of(describe(env), lambda: None)
    assert view.restricted("events") and view.restricted("daily")
    assert not view.restricted("counts") and view.restricted("again")


def test_what_the_copy_lacks_comes_from_the_model_validated_once() -> None:
    env = Environment.model_validate(RESTRICTED)
    calls = []

    def load() -> Environment:
        calls.append(1)
        return env

    view = EnvironmentView.of(describe(env), load)
    assert view.datasets["events"].uri == "data/events/" and calls == []  # the copy answers
    assert view.model_dump() == env.model_dump()
    assert view.datasets["events"].columns["kind"].constraints() == \
        env.datasets["events"].columns["kind"].constraints()
    assert view.served_columns() == env.served_columns()
    assert calls == [1]
    with pytest.raises(AttributeError):
        view.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        view.datasets["events"].uri = "elsewhere"  # type: ignore[misc]


def test_a_value_json_cannot_hold_is_refused() -> None:
    """The build then sends no copy and the runner validates the model (`source_process`)."""
    from buildenv.compile.source_process import _view
    from buildenv.env.resolve import Resolved

    env = Environment.model_validate(RESTRICTED)
    odd = env.model_copy(update={"description": b"bytes"})  # no validation: a planted value
    with pytest.raises(ValueError, match="JSON cannot hold"):
        describe(odd)
    job = {"kind": "transform", "inputs": ["events"]}
    odd = env.model_copy(update={"datasets": {**env.datasets, "events": env.datasets[
        "events"].model_copy(update={"uri": float("inf")})}})
    assert _view(Resolved(odd, [], {}, {}), job) is None
    assert _view(Resolved(env, [], {}, {}), {"kind": "functions"}) is None


def test_the_project_copy_has_the_projects_paths(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.buildenv]\ncache_dir = "state/here"\nstore = "s3://bucket/objects"\n')
    data = tmp_path / "elsewhere"
    project = Project(root=tmp_path, data_root=data)
    opened = []
    view = ProjectView(tmp_path, data, project.config.cache_dir, project.config.store,
                       lambda: opened.append(1) or project)
    assert (view.root, view.data_root, view.data_base) == (project.root, project.data_root,
                                                          project.data_base)
    assert (view.state_dir, view.data_state_dir) == (project.state_dir, project.data_state_dir)
    assert view.config.store == project.config.store == "s3://bucket/objects"
    assert view.rel(tmp_path / "a" / "b") == project.rel(tmp_path / "a" / "b") == "a/b"
    assert view.rel(Path("/elsewhere/x")) == project.rel(Path("/elsewhere/x"))
    assert opened == []
    assert view.toolchains_dir == project.toolchains_dir  # anything else: the project's
    assert view.config.environments_dir == project.config.environments_dir
    assert opened == [1]
