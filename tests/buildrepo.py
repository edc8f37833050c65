"""A small, seeded repository for end-to-end build tests (fast fits, planted problems)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SENTINEL = 987654.321  # planted in a restricted dataset: must never be printed

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.lr]
entry = "train/lr.py:train"
environments = ["*"]

[tool.buildenv.trainings.leaky]
entry = "train/leaky.py:train"
environments = ["base", "next"]

[tool.buildenv.trainings.forest]
entry = "train/forest.py:train"
environments = ["base", "next"]

[tool.buildenv.trainings.crash]
entry = "train/crash.py:train"
environments = ["base"]

[tool.buildenv.trainings.sneaky]
entry = "train/sneaky.py:train"
environments = ["base"]

[tool.buildenv.trainings.slow]
entry = "train/slow.py:train"
environments = ["base"]
timeout = 600

[tool.buildenv.trainings.private]
entry = "train/lr.py:train"
environments = ["private"]
"""

BASE = """\
name: base
datasets:
  items:
    uri: data/items.parquet
    columns:
      x1: {dtype: float64, range: [-10, 10]}
      x2: {dtype: float64, nullable: false}
      cat: {dtype: string, nullable: false, domain: [a, b, c]}
      secret: {dtype: float64, serving: false}
      y: {dtype: bool, nullable: false}
label: {dataset: items, column: y, classes: [false, true]}
serving:
  stack: sklearn
  ops:
    - sklearn.pipeline.Pipeline
    - sklearn.compose.ColumnTransformer
    - sklearn.preprocessing.*
    - sklearn.impute.SimpleImputer
    - sklearn.linear_model.LogisticRegression
  requirements: ["scikit-learn>=1.6,<2"]
privacy:
  restricted: []
"""

NEXT = """\
name: next
extends: base
datasets:
  items:
    columns:
      secret: {serving: true}
serving:
  ops:
    - sklearn.pipeline.Pipeline
    - sklearn.compose.ColumnTransformer
    - sklearn.preprocessing.*
    - sklearn.impute.SimpleImputer
    - sklearn.linear_model.LogisticRegression
    - sklearn.ensemble.RandomForestClassifier
"""

PRIVATE = """\
name: private
extends: base
datasets:
  items:
    uri: data/items_private.parquet
privacy:
  restricted: [items]
"""

_COMMON = """
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def prep(numeric):
    return ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"]),
    ])
"""

TRAININGS = {
    "lr.py": _COMMON + """
from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    X, y = df[["x1", "x2", "cat"]], df["y"]
    model = Pipeline([("prep", prep(["x1", "x2"])),
                      ("clf", LogisticRegression(random_state=ctx.seed))])
    model.fit(X, y)
    ctx.log_metric("train_accuracy", float((model.predict(X) == y).mean()))
    return model
""",
    "leaky.py": _COMMON + """
from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "secret", "y"])
    X = df[["x1", "x2", "cat", "secret"]]
    model = Pipeline([("prep", prep(["x1", "x2", "secret"])),
                      ("clf", LogisticRegression())])
    return model.fit(X, df["y"])
""",
    "forest.py": _COMMON + """
from sklearn.ensemble import RandomForestClassifier


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    model = Pipeline([("prep", prep(["x1", "x2"])),
                      ("clf", RandomForestClassifier(n_estimators=10, random_state=ctx.seed))])
    return model.fit(df[["x1", "x2", "cat"]], df["y"])
""",
    "crash.py": """
def helper(df):
    return df["missing"]


def train(ctx):
    df = ctx.read("items", columns=["x1"])
    return helper(df)
""",
    "sneaky.py": """
def train(ctx):
    name = "items"
    cols = ["x1", "nope"]
    return ctx.read(name, columns=cols)
""",
    "slow.py": _COMMON + """
import time
from pathlib import Path

from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("items", columns=["x1", "x2", "cat", "y"])
    gate = Path(__file__).with_name("slow.gate")
    if gate.exists():  # the kill test holds the training here; the repository is read-only
        print(gate.read_text(), flush=True)  # to the build's log of its output: "started"
        time.sleep(120)
    model = Pipeline([("prep", prep(["x1", "x2"])), ("clf", LogisticRegression())])
    return model.fit(df[["x1", "x2", "cat"]], df["y"])
""",
}


def _table(n: int, seed: int, sentinel: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, 2, n)
    x2 = rng.normal(0, 1, n)
    cat = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    secret = rng.normal(0, 1, n)
    logit = 0.8 * x1 - 0.5 * x2 + (cat == "a") * 0.7 + 1.5 * secret
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    x1_list = x1.tolist()
    x1_list[7] = None
    if sentinel:
        x1_list[42] = SENTINEL  # out of range [-10, 10]
    return pa.table({"x1": pa.array(x1_list, pa.float64()), "x2": x2, "cat": cat,
                     "secret": secret, "y": y})


def make_build_repo(root: Path) -> Path:
    (root / "environments").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "train").mkdir()
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (root / "environments" / "base.yaml").write_text(BASE)
    (root / "environments" / "next.yaml").write_text(NEXT)
    (root / "environments" / "private.yaml").write_text(PRIVATE)
    for name, code in TRAININGS.items():
        (root / "train" / name).write_text(code)
    pq.write_table(_table(2000, 1), root / "data" / "items.parquet")
    pq.write_table(_table(2000, 2, sentinel=True), root / "data" / "items_private.parquet")
    return root
