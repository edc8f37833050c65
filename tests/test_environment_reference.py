"""docs/environment.md is the complete reference of the environment format: every key of the
pydantic models in `buildenv/env/spec.py` is documented there (not only somewhere in docs/), and
every field carries the docstring that the JSON Schema and editors show."""

from __future__ import annotations

import pytest
from test_docs import DOCS, SCHEMA_PATHS, _documented_paths, _matches

from buildenv.env import spec

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
    missing = [name for name, info in model.model_fields.items()
               if not (info.description or "").strip()]
    assert not missing, f"{model.__name__}: fields without a docstring: {missing}"


def test_the_reference_covers_the_whole_schema():
    assert len(SCHEMA_PATHS) > 90 and len(MODELS) > 15
