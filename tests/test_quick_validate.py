"""The environment validated without pydantic (`env.quick_validate`) is pydantic's, or no answer.

The core proof is differential: a seeded corpus of environment documents (every environment
file of the repository, each environment document the test suite writes, those stripped to what
the lock's plan answers for, and seeded random mutations of all of them: other ranges, domains,
dtypes and fractions, keys added and removed, values of the wrong type). For each, the
interpreter answers nothing, or exactly what pydantic makes of it (its dump, type for type);
resolving one file alone answers nothing, or exactly what `Multiverse.resolve` makes of it (the
canonical environment, the datasets the lock pins and keeps), with no problem. And the
interpreter answers for a good share of the valid documents, so these cannot pass by its never
answering.
"""

from __future__ import annotations

import ast
import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from buildenv.core.diagnostics import DiagnosticError
from buildenv.core.project import Project
from buildenv.data.lock.quick import _eligible
from buildenv.env import spec_table_gen
from buildenv.env.loader import load_yaml
from buildenv.env.quick_validate import _CURRENT_SCHEMA, dump, resolve_alone
from buildenv.env.resolve import Multiverse, canonical_environment
from buildenv.env.spec import CURRENT_SCHEMA, Environment

REPO = Path(__file__).resolve().parents[1]
SEED = 1401
_PLAN_KEYS = ("schema", "name", "description", "datasets")


def test_the_checked_in_table_is_the_models():
    assert (REPO / "buildenv" / "env" / "spec_table.py").read_text(encoding="utf-8") == \
        spec_table_gen.render(), ("buildenv/env/spec_table.py is not what the models say: run "
                                  "`python -m buildenv.env.spec_table_gen --write`")
    assert _CURRENT_SCHEMA == CURRENT_SCHEMA


def test_the_interpreter_runs_every_validator_of_the_models_the_plan_needs():
    from buildenv.env.quick_validate import _VALIDATORS
    from buildenv.env.spec_table import MODELS

    for model in ("Environment", "Dataset", "Column"):
        unknown = set(MODELS[model]["validators"]) - set(_VALIDATORS.get(model, {}))
        assert not unknown, (f"{model}'s validators {sorted(unknown)} are new or edited: run "
                             "their rule in buildenv/env/quick_validate.py (_VALIDATORS, named "
                             "by the table's digest), or the lock's plan never answers an edit")


def _documents() -> list[dict[str, Any]]:
    """Every environment document of the repository and of the tests' sources."""
    texts = [p.read_text(encoding="utf-8") for folder in ("environments", "examples")
             for p in sorted((REPO / folder).rglob("*.yaml"))]
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and "datasets:" in node.value:
                texts.append(node.value)
    out = []
    for text in texts:
        try:
            doc = yaml.safe_load(_dedent(text))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("datasets"), dict):
            out.append(doc)
            # what the plan answers for: the same without the sections it leaves to the models
            plain = {k: v for k, v in doc.items() if k in _PLAN_KEYS}
            plain.setdefault("name", "e")
            out.append(plain)
    return out


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


_VALUES: list[Any] = ["5", 5, 5.0, 0.5, 0, 1, -1, 2, 1.0, True, False, None, [], {}, [0, 1],
                      [1, 0], [0.0, 1], [None, None], [None, 3], [2, None], ["a", "b"],
                      ["a", "a"], [1, 1.0], [1, True], "2026-01-01", ["2026-01-01", "2025-01-01"],
                      ["2025-01-01", None], float("nan"), float("inf"), 10 ** 20, "x", {"a": 1},
                      "parquet", "csv", "delta", "int64", "int8", "float64", "float32", "string",
                      "bool", "date", "timestamp", "error", "warn", [1, 2, 3], [[1]], 2 ** 53 + 1,
                      "data/x.parquet", "s3://b/x.parquet", "data/dir/", ""]
_KEYS = ["dtype", "nullable", "max_null_fraction", "required", "min_count", "domain", "range",
         "allow_nan", "max_violation_fraction", "unique", "length", "monitor", "serving",
         "description", "uri", "format", "keep", "columns", "undeclared_columns", "partitions",
         "dvc", "schema", "schema_", "name", "unknown", "pattern", 1, True]


def _gentle(key: str, rng: random.Random) -> Any:
    """A value `key` may well take: most mutations keep a document valid, or nearly."""
    def number() -> Any:
        return rng.choice([rng.randint(-3, 600), round(rng.uniform(-1, 2), 3), None])

    if rng.random() < 0.25:  # a value of the wrong type: pydantic coerces some (lax mode)
        return rng.choice(["5", "0.5", True, False, 1, 0, 1.0, 2.0, None, [True, 3], [1, "2"],
                           [1.0, 2], [0, True]])

    if key in ("range", "length"):
        return [number(), number()]
    if key == "domain":
        return rng.choice([[1, 2, 3], ["a", "b"], [True, False], [0.5, 1], [], ["a", 1]])
    if key in ("max_null_fraction", "max_violation_fraction"):
        return rng.choice([round(rng.uniform(-0.2, 1.2), 3), 0, 1, 0.0, 1.0])
    if key == "min_count":
        return rng.randint(0, 3)
    if key == "dtype":
        return rng.choice(["int8", "int32", "int64", "float32", "float64", "string", "bool",
                           "date", "timestamp"])
    return rng.choice([True, False])


_GENTLE = ["range", "length", "domain", "max_null_fraction", "max_violation_fraction",
           "min_count", "dtype", "nullable", "required", "allow_nan", "unique", "monitor",
           "serving"]


def _mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        mappings = _mappings(doc)
        columns = [m for m in mappings if "dtype" in m]
        roll = rng.random()
        if roll < 0.6 and columns:
            key = rng.choice(_GENTLE)
            rng.choice(columns)[key] = _gentle(key, rng)
        elif roll < 0.8:
            rng.choice(mappings)[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
        elif roll < 0.9:
            target = rng.choice(mappings)
            if target:
                del target[rng.choice(list(target))]
        else:
            rng.choice(mappings)[f"c{rng.randint(0, 3)}"] = {"dtype": rng.choice(
                ["int64", "float64", "string", "bool", "date"])}
    return doc


def _mappings(value: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(value, dict):
        out.append(value)
        for v in value.values():
            out.extend(_mappings(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_mappings(v))
    return out


_WRONG = ["5", "0.5", "", True, False, 1, 0, -1, 1.0, 0.0, 2.5, None, [], {}, [True, 3],
          [1, "2"], [1.0, 2], [0, True], [None, None], [1], [1, 2, 3], 10 ** 20, 2 ** 53 + 1,
          float("nan"), float("inf"), [0, float("inf")], [float("-inf"), 0.5]]


def _grid() -> list[dict[str, Any]]:
    """Each key of a column and of a dataset given each value of the wrong type, or of an
    edge: every coercion pydantic makes in lax mode is met, whatever the seed draws."""
    def doc(column: dict[str, Any], **dataset: Any) -> dict[str, Any]:
        ds = {"uri": "data/x.parquet", "columns": {"c": column}, **dataset}
        return {"name": "e", "datasets": {"t": ds}}

    out = []
    for dtype in ("int64", "float64", "string", "bool", "date"):
        for key in _GENTLE:
            out += [doc({"dtype": dtype, key: value}) for value in _WRONG]
    for key in ("uri", "format", "keep", "undeclared_columns", "description"):
        for value in [*_WRONG, "s3://b/x.parquet", "gs://b/x.parquet", "data/dir/",
                      "file:///tmp/x.parquet", "csv", "delta", "warn", "error"]:
            out.append(doc({"dtype": "int64"}, **{key: value}))
    return out


def _corpus() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    bases = _documents() + _grid()
    valid = [d for d in bases if dump(d) is not None]  # mostly mutations of good documents
    return bases + [_mutate(rng.choice(valid if rng.random() < 0.8 else bases), rng)
                    for _ in range(4000)]


def _exact(value: Any) -> str:
    """`value` as JSON, which tells 1 from 1.0 and True (the dump's types, compared)."""
    return json.dumps(value, sort_keys=True)


def test_the_interpreter_answers_only_what_pydantic_makes(capsys):
    answered = valid = wrong = 0
    for doc in _corpus():
        found = dump(doc)
        try:
            env = Environment.model_validate(doc)
        except ValidationError:
            env = None
        if env is not None:
            valid += 1
        if found is None:
            continue
        answered += 1
        if env is None or _exact(found) != _exact(
                env.model_dump(mode="json", by_alias=True, exclude_defaults=True)):
            wrong += 1
            print("WRONG", doc, found)
    share = answered / valid
    with capsys.disabled():
        print(f"\nquick_validate.dump: answered {answered} of {valid} valid documents "
              f"({share:.0%})")
    assert wrong == 0
    assert valid > 600 and share > 0.3


def test_resolving_alone_answers_only_what_resolving_makes(tmp_path, capsys):
    root = tmp_path / "repo"
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "dir").mkdir()
    (root / "pyproject.toml").write_text("[tool.buildenv]\n", encoding="utf-8")
    project = Project.open(root)
    answered = valid = 0
    rng = random.Random(SEED)
    corpus = _corpus()
    alone = [d for d in corpus if "extends" not in d]  # what the plan may answer for
    for doc in _grid() + rng.sample(alone, 1200) + rng.sample(corpus, 300):
        doc = copy.deepcopy(doc)
        doc["name"] = doc.get("name") if rng.random() < 0.05 else "e"
        path = root / "environments" / "e.yaml"
        try:
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        except yaml.YAMLError:
            continue
        found = resolve_alone(load_yaml(path, "environments/e.yaml"), "e")
        multiverse = Multiverse(project)
        try:
            res = multiverse.resolve("e")
        except DiagnosticError:
            res = None
        if res is not None:
            valid += 1
        if found is None:
            continue
        answered += 1
        assert res is not None, doc
        assert _exact(found.canonical) == _exact(canonical_environment(res.env)), doc
        assert found.datasets == {n: (ds.uri, ds.format, ds.keeps)
                                  for n, ds in res.env.datasets.items()}, doc
        assert not any(res.env.restricted(n) for n in res.env.datasets)
        assert _eligible(res), doc
    with capsys.disabled():
        print(f"\nquick_validate.resolve_alone: answered {answered} of {valid} environments "
              f"that resolve ({answered / valid:.0%})")
    assert valid > 300 and answered / valid > 0.3


@pytest.mark.parametrize("doc", [
    {"name": "e", "datasets": {"t": {"uri": "a.parquet", "columns": {"x": {"dtype": "int64",
                                                                            "min_count": True}}}}},
    {"name": "e", "datasets": {"t": {"uri": "a.parquet", "columns": {"x": {"dtype": "float64",
                                                                            "range": ["0", 1]}}}}},
    {"name": "e", "datasets": {"t": {"uri": "a.parquet", "columns": {"x": {"dtype": "float64",
                                                                            "unknown": 1}}}}},
    {"name": "e", "datasets": {"t": {"uri": "a.parquet", "columns": {}}}},
    {"name": "e", "datasets": {"t": {"uri": "a.parquet", "columns": {"x": {"dtype": "string",
                                                                            "domain": ["a", "a"]}}}}},
])
def test_what_pydantic_refuses_or_coerces_is_not_answered(doc):
    assert dump(doc) is None
