"""No row value of a restricted dataset leaves the data gate (issue: one data gate).

A unique sentinel is planted in a restricted CSV dataset: as a bad cell of a numeric column,
as a value a training raises with (and prints, and logs as a param), and in a row that the
environment holds out for evaluation, so a successful build, promotion and retrain score models
on it. After every command has run, the sentinel must appear in none of their stdout/stderr,
in no file under .buildenv/ (caches, MLflow store and artifacts, audit log, drift statistics,
retrain events) or dist/, nor in the retrain events file -- except the object store's copies
of the pinned versions of the restricted dataset, which only their owner may read (0400 in a
0700 directory), as the dataset itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import invoke_cli

from buildenv.data.evaluation import holdout_mask

pytestmark = pytest.mark.slow

SENTINEL = "SENTINEL-7f3a9c@corp.example"

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.lr]
entry = "train/lr.py:train"
environments = ["people", "people-dp"]
description = "Predicts y for a person"
owners = ["team-people"]

[tool.buildenv.trainings.raiser]
entry = "train/raiser.py:train"
environments = ["people-raise"]
"""

ENV = """\
name: people
datasets:
  people:
    uri: data/people.csv
    format: csv
    columns:
      id: {dtype: int64, nullable: false}
      email: {dtype: string}
      x1: {dtype: float64}
      x2: {dtype: float64, nullable: false}
      cat: {dtype: string, nullable: false, domain: [a, b, c]}
      y: {dtype: bool, nullable: false}
label: {dataset: people, column: y, classes: [false, true]}
evaluation: {holdout: 0.25, key: [id]}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.compose.ColumnTransformer, sklearn.preprocessing.*,
        sklearn.impute.SimpleImputer, sklearn.linear_model.LogisticRegression]
  requirements: ["scikit-learn>=1.6,<2"]
privacy:
  restricted: [people]
  epsilon_budget: 3
promotion: {metric: val_auc, min_value: 0.5, max_regression: 0.5,
            slices: {max_regression: 0.5}}
"""
SLICES = """evaluation:
  holdout: 0.25
  key: [id]
  slices:
    - by: email            # one row per value: every such slice is withheld, name and all
    - by: cat
label:
  dataset: people
  column: y
  classes: [false, true]
  coverage: {min_count: 5, per_slice: true}
"""
DP = """name: people-dp
extends: people
evaluation:
  slices: [{by: cat}, {by: x2, bins: [-10, 0, 10]}]
privacy:
  release: dp
"""

LR = """
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def train(ctx):
    df = ctx.read("people", columns=["email", "x1", "x2", "cat", "y"])
    print(df.head(50).to_string())          # captured output: withheld
    ctx.log_param("first_email", df["email"].iloc[0])
    ctx.log_param("model", "logistic_regression")
    X = df[["x1", "x2", "cat"]].copy()
    X["cat"] = X["cat"].astype(object)
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
             ["x1", "x2"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"])])),
        ("clf", LogisticRegression(random_state=ctx.seed))])
    return model.fit(X, df["y"])
"""

RAISER = """
def train(ctx):
    df = ctx.read("people", columns=["email"])
    for value in df["email"]:
        print("checking", value)
        float(value)   # ValueError: could not convert string to float: '<the value>'
"""


def people(seed: int, n: int = 600, bad_cell: bool = False) -> str:
    """CSV text; the sentinel is the email of one training row and one held-out row."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    held = holdout_mask(pa.table({"id": pa.array(ids, pa.int64())}), ["id"], 0.25)
    x1 = rng.normal(0, 1, n).round(3)
    x2 = rng.normal(0, 1, n).round(3)
    cat = rng.choice(["a", "b", "c"], n)
    y = (x1 + 0.5 * x2 + rng.normal(0, 0.7, n)) > 0
    emails = [f"user{i}@corp.example" for i in ids]
    emails[int(np.flatnonzero(held)[0])] = SENTINEL    # evaluated on
    emails[0 if not held[0] else int(np.flatnonzero(~held)[0])] = SENTINEL  # trained on
    lines = ["id,email,x1,x2,cat,y"]
    for i in ids:
        x1_text = SENTINEL if bad_cell and i == 7 else str(x1[i])
        lines.append(f"{i},{emails[i]},{x1_text},{x2[i]},{cat[i]},{str(bool(y[i])).lower()}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sentinel") / "repo"
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "train").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments" / "people.yaml").write_text(
        ENV.replace("evaluation: {holdout: 0.25, key: [id]}\n", "").replace(
            "label: {dataset: people, column: y, classes: [false, true]}\n", SLICES))
    (root / "environments" / "people-dp.yaml").write_text(DP)
    (root / "environments" / "people-raise.yaml").write_text(
        "name: people-raise\nextends: people\n")
    (root / "train" / "lr.py").write_text(LR)
    (root / "train" / "raiser.py").write_text(RAISER)
    (root / "data" / "people.csv").write_text(people(1))
    (root / "data" / "people-v2.csv").write_text(people(2))
    (root / "data" / "people-bad.csv").write_text(people(3, bad_cell=True))
    return root


def _run(root: Path, outputs: list[str], *args: str) -> tuple[int, str, str]:
    code, out, err = invoke_cli(list(args), root)
    outputs.append(f"$ buildenv {' '.join(args)}\n{out}\n{err}")
    return code, out, err


def test_no_restricted_value_reaches_any_output_or_file(repo: Path) -> None:
    outputs: list[str] = []
    assert _run(repo, outputs, "lock")[0] == 0

    # a bad cell: validate and drift say where, never what
    for fmt in ("text", "json", "sarif"):
        code, out, err = _run(repo, outputs, "drift", "people", "--dataset", "people",
                              "--against", "data/people-bad.csv", "--format", fmt)
        assert code == 1 and "x1" in out + err, out + err
    (repo / "data" / "people.csv").rename(repo / "data" / "people-good.csv")
    (repo / "data" / "people-bad.csv").rename(repo / "data" / "people.csv")
    for fmt in ("text", "json", "sarif"):
        code, out, err = _run(repo, outputs, "validate", "people", "--format", fmt)
        assert code == 1 and "BE201" in out + err, out + err
    code, out, err = _run(repo, outputs, "validate", "people")
    assert "column 'x1', data row 8: a value cannot be converted to double" in err, err
    (repo / "data" / "people.csv").rename(repo / "data" / "people-bad.csv")
    (repo / "data" / "people-good.csv").rename(repo / "data" / "people.csv")

    # a training that raises with the value, after printing every row
    code, out, err = _run(repo, outputs, "build", "raiser", "--env", "people-raise")
    assert code == 1 and "error[BE301]: training raised ValueError (message withheld" in err, err
    code, out, err = _run(repo, outputs, "build", "raiser", "--env", "people-raise")  # cached
    assert code == 1 and "BE301" in err

    # a successful build evaluated on the held-out row holding the sentinel, then promotion
    code, out, err = _run(repo, outputs, "build", "lr", "--env", "people")
    assert code == 0, out + err
    lineage = json.loads((repo / "dist" / "lr" / "people" / "buildenv.json").read_text())
    assert lineage["evaluation"]["rows"] > 100 and lineage["evaluation"]["metrics"]["roc_auc"]
    assert lineage["params"]["first_email"] == "[withheld]"
    assert lineage["params"]["model"] == "logistic_regression"
    assert lineage["evaluation"]["slices"][0]["withheld"] > 0  # by email: every slice
    assert lineage["evaluation"]["slices"][1]["slices"][0]["name"] == "cat=a"
    for fmt in ("md", "json"):
        code, out, err = _run(repo, outputs, "card", "lr", "--env", "people", "--format", fmt)
        assert code == 0 and "cat=a" in out, out + err
    code, out, err = _run(repo, outputs, "promote", "lr", "--env", "people")
    assert code == 0, out + err
    code, out, err = _run(repo, outputs, "card", "lr", "--env", "people", "--champion")
    assert code == 0 and "## Promotion" in out, out + err

    # slices released with differential privacy, spent from the budget once per artifact
    code, out, err = _run(repo, outputs, "build", "lr", "--env", "people-dp", "--format",
                          "json")
    assert code == 0, out + err
    released = json.loads(out)["pairs"][0]["evaluation"]
    assert released["release"]["policy"] == "dp" and released["release"]["epsilon_spent"] == 1
    assert {e["status"] for f in released["slices"] for e in f["slices"]} <= {"released",
                                                                              "too_small"}

    # retrain: a bad version stops at validation, a good one is gated and promoted
    events = repo / "events.jsonl"
    code, out, err = _run(repo, outputs, "retrain", "people", "--dataset", "people", "--uri",
                          "data/people-bad.csv", "--events", str(events), "--promote")
    assert code == 1 and "BE201" in out + err, out + err
    code, out, err = _run(repo, outputs, "retrain", "people", "--dataset", "people", "--uri",
                          "data/people-v2.csv", "--events", str(events), "--promote")
    assert code == 0, out + err
    code, out, err = _run(repo, outputs, "audit")
    assert code == 0 and "evaluate" in out and "build" in out

    text = "\n".join(outputs)
    assert SENTINEL not in text, next(o for o in outputs if SENTINEL in o)[:2000]
    assert SENTINEL.encode() not in events.read_bytes()
    objects = repo / ".buildenv" / "objects"
    leaks = [p for folder in (".buildenv", "dist") for p in (repo / folder).rglob("*")
             if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    # the one place the bytes may be: the object store's copies of the restricted versions
    # the locks pin, which only their owner can read, like the dataset
    kept = [p for p in leaks if p.is_relative_to(objects)]
    assert [p for p in leaks if p not in kept] == []
    assert kept and all(p.stat().st_mode & 0o777 == 0o400 for p in kept)
    assert objects.stat().st_mode & 0o777 == 0o700
    # the sentinel is really there to be found: the search itself can fail
    assert SENTINEL.encode() in (repo / "data" / "people.csv").read_bytes()
    assert not (repo / ".buildenv" / "holdouts").exists()
