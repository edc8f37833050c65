"""docs/environment.md is the complete reference of the environment format: every key of the
pydantic models in `buildenv/env/spec.py` is documented there (not only somewhere in docs/), and
every field carries the docstring that the JSON Schema and editors show."""

from __future__ import annotations

import pytest
from test_docs import DOCS, SCHEMA_PATHS, _documented_paths, _matches

from buildenv.env import spec
from buildenv.env.spec_base import field_docstrings

PAGE = (DOCS / "environment.md").read_text(encoding="utf-8")
DOCUMENTED = _documented_paths(PAGE)
MODELS = sorted((m for m in vars(spec).values() if isinstance(m, type)
                 and issubclass(m, spec.Strict) and m is not spec.Strict),
                key=lambda m: m.__name__) + [spec.Environment]


@pytest.mark.parametrize("path", sorted(SCHEMA_PATHS), ids=".".join)
def test_every_key_is_in_the_environment_reference(path):
    assert any(_matches(p, path) for p in DOCUMENTED), (
        f"`{'.'.join(path).replace('*', '<name>')}` is not in docs/environment.md: it is the "
        "complete reference of the format (a row in the section's table, as a full path)")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_docstring(model):
    """The docstring under each field is its description in `buildenv schema` (editors show
    it); a field without one is undocumented where users look first."""
    docs = field_docstrings(model)
    missing = [name for name, info in model.model_fields.items()
               if not (info.description or docs.get(name, "")).strip()]
    assert not missing, f"{model.__name__}: fields without a docstring: {missing}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_schema_shows_each_fields_docstring(model):
    """Docstrings are read when a schema is made, not when the model classes are (that cost
    every command a tenth of a second): each property's description is its field's."""
    schema = spec.json_schema()
    properties = (schema if model is spec.Environment
                  else schema["$defs"][model.__name__])["properties"]
    docs = field_docstrings(model)
    for name, info in model.model_fields.items():
        assert properties[info.alias or name].get("description") == (
            info.description or docs[name]), (model.__name__, name)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_docstrings_are_read_as_pydantic_reads_them(model):
    """`field_docstrings` gives what pydantic's `use_attribute_docstrings` gave (the schema's
    bytes are unchanged)."""
    from pydantic._internal._docs_extraction import extract_docstrings_from_cls

    theirs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if issubclass(cls, spec.Strict) and cls is not spec.Strict:
            theirs.update(extract_docstrings_from_cls(cls, use_inspect=True))
    fields = set(model.model_fields)
    assert {k: v for k, v in field_docstrings(model).items() if k in fields} == {
        k: v for k, v in theirs.items() if k in fields}


def test_the_reference_covers_the_whole_schema():
    assert len(SCHEMA_PATHS) > 90 and len(MODELS) > 15
