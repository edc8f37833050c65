"""A seeded repository with a restricted dataset, for the private statistics, synth and peek
tests. A unique sentinel string is planted in it (as an e-mail, and as a country outside the
domain): no output of stats, synth or their reports, and no file they write, may contain it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import kept_copy_of_data

SENTINEL = "SENTINEL-c0ffee-7d1e@private.example"
COUNTRIES = ["US", "GB", "DE", "FR", "BR"]
PLANS = ["basic", "premium"]

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.lr]
entry = "train/lr.py:train"
environments = ["people*"]
"""

ENV = """\
name: people
datasets:
  people:
    uri: data/people.parquet
    columns:
      person_id: {dtype: int64, nullable: false}
      email: {dtype: string}
      country: {dtype: string, nullable: false, domain: [US, GB, DE, FR, BR]}
      plan: {dtype: string, nullable: false, domain: [basic, premium]}
      age: {dtype: int16, nullable: false, range: [16, 100]}
      score: {dtype: float64, range: [0, 1]}
      joined: {dtype: date, range: ["2020-01-01", "2025-12-31"]}
      active: {dtype: bool, nullable: false}
label: {dataset: people, column: active, classes: [false, true]}
evaluation: {holdout: 0.2, key: [person_id]}
serving:
  stack: sklearn
  ops: [sklearn.pipeline.Pipeline, sklearn.compose.ColumnTransformer, sklearn.preprocessing.*,
        sklearn.impute.SimpleImputer, sklearn.linear_model.LogisticRegression]
  requirements: ["scikit-learn>=1.6,<2"]
privacy:
  restricted: [people]
  epsilon_budget: BUDGET
  peek: {actors: [steward]}
"""

TRAIN = '''\
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def train(ctx):
    df = ctx.read("people", columns=["age", "score", "country", "plan", "active"])
    X, y = df[["age", "score", "country", "plan"]], df["active"].astype(bool)
    X = X.astype({"country": object, "plan": object})
    model = Pipeline([
        ("features", ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
             ["age", "score"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["country", "plan"]),
        ])),
        ("lr", LogisticRegression(max_iter=500)),
    ])
    model.fit(X, y)
    return model
'''


def people_table(rows: int, seed: int = 11) -> pa.Table:
    """Seeded people: plan depends on age, active on plan and score; a few nulls."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(38, 12, rows), 16, 100).astype(np.int16)
    country = rng.choice(COUNTRIES, rows, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    premium = rng.random(rows) < np.clip((age - 16) / 80, 0.05, 0.9)
    plan = np.where(premium, "premium", "basic")
    score = rng.beta(2, 5, rows)
    score_null = rng.random(rows) < 0.03
    active = rng.random(rows) < np.clip(0.2 + 0.5 * premium + 0.3 * score, 0, 1)
    start = dt.date(2020, 1, 1).toordinal()
    joined = [dt.date.fromordinal(start + int(d)) for d in rng.integers(0, 2190, rows)]
    email = [f"user{i}@example.org" for i in range(rows)]
    country = country.astype(object)
    planted = rows // 2
    email[planted] = SENTINEL
    country[planted + 1] = SENTINEL
    return pa.table({
        "person_id": pa.array(np.arange(1, rows + 1), pa.int64()),
        "email": pa.array(email, pa.string()),
        "country": pa.array(list(country), pa.string()),
        "plan": pa.array(plan, pa.string()),
        "age": pa.array(age, pa.int16()),
        "score": pa.array(score, pa.float64(), mask=score_null),
        "joined": pa.array(joined, pa.date32()),
        "active": pa.array(active, pa.bool_()),
    })


def write_access_repo(root: Path, rows: int = 5_000, budget: str = "2.0",
                      extra_envs: dict[str, str] | None = None) -> Path:
    """The repository (not locked: tests lock it, or not, as they need)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (root / "environments").mkdir(exist_ok=True)
    (root / "environments" / "people.yaml").write_text(ENV.replace("BUDGET", budget),
                                                        encoding="utf-8")
    for name, text in (extra_envs or {}).items():
        (root / "environments" / f"{name}.yaml").write_text(text, encoding="utf-8")
    (root / "data").mkdir(exist_ok=True)
    pq.write_table(people_table(rows), root / "data" / "people.parquet")
    (root / "train").mkdir(exist_ok=True)
    (root / "train" / "lr.py").write_text(TRAIN, encoding="utf-8")
    return root


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under `root` but the real data whose bytes contain `needle`; Parquet files are
    also searched decoded (their pages are compressed)."""
    hits = []
    real = root / "data" / "people.parquet"
    for path in root.rglob("*"):
        if not path.is_file() or path == real or path.suffix == ".pyc" \
                or kept_copy_of_data(root, path):
            continue
        found = needle.encode() in path.read_bytes()
        if not found and path.suffix == ".parquet":
            found = needle in str(pq.read_table(path).to_pylist())
        if found:
            hits.append(str(path.relative_to(root)))
    return hits
