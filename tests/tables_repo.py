"""Seeded repositories holding real tables, written by the table libraries themselves: a Delta
table (`data/events`, partitioned by `plan`) and an Iceberg table (`ml.events` in a SQLite
catalog under `data/iceberg/`, written with repository-relative locations), for the tests of
table datasets and bench/bench_tables.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from conftest import write_env, write_repo

PLANS = ["basic", "pro", "team"]

COLUMNS = """\
    columns:
      id: {dtype: int64, nullable: false, unique: true}
      plan: {dtype: string, domain: [basic, pro, team]}
      x: {dtype: float64, range: [-10, 10]}
      y: {dtype: bool, nullable: false}
"""

DELTA_ENV = """\
name: tab
datasets:
  events:
    uri: data/events
    format: delta
{pin}{columns}label: {{dataset: events, column: y, classes: [false, true]}}
evaluation: {{key: [id]}}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.*, sklearn.pipeline.*, sklearn.preprocessing.*]
"""

ICEBERG_ENV = """\
name: ice
datasets:
  events:
    uri: ml.events
    format: iceberg
    catalog: {{type: sql, uri: "sqlite:///data/iceberg/catalog.db"}}
{pin}{columns}label: {{dataset: events, column: y, classes: [false, true]}}
evaluation: {{key: [id]}}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.*, sklearn.pipeline.*, sklearn.preprocessing.*]
"""

TRAIN = '''\
from sklearn.linear_model import LogisticRegression


def train(ctx):
    df = ctx.read("events", columns=["x", "y"])
    ctx.log_metric("rows", float(len(df)))
    return LogisticRegression(random_state=ctx.seed).fit(df[["x"]], df["y"])
'''

PYPROJECT_TRAINING = """
[tool.buildenv.trainings.events]
entry = "train/events.py:train"
environments = ["tab*", "ice*"]
"""


def batch(lo: int, hi: int, seed: int = 0) -> pa.Table:
    """Rows `lo`..`hi` of the event stream: a key, a plan, a feature and its label."""
    rng = np.random.default_rng([seed, lo])
    ids = np.arange(lo, hi)
    x = np.round(rng.normal(0, 2, len(ids)), 3).clip(-10, 10)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "plan": pa.array([PLANS[i % 3] for i in ids], pa.string()),
        "x": pa.array(x, pa.float64()),
        "y": pa.array(x + rng.normal(0, 1, len(ids)) > 0, pa.bool_()),
    })


def _repo(root: Path) -> Path:
    write_repo(root, files={"train/events.py": TRAIN})
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(  # the demo training reads movies and ratings
        text.replace('environments = ["*"]', 'environments = ["base", "child"]')
        + PYPROJECT_TRAINING, encoding="utf-8")
    return root


def make_delta_repo(root: Path, pin: str = "", commits: int = 2, partition: bool = True,
                    env: str = "tab", extra: str = "") -> Path:
    """A repository whose `data/events` Delta table has `commits` versions (v0: 60 rows, then
    an append of 30 rows each), and environment `env` reading it (`pin`: lines such as
    `    version: 0\\n`)."""
    from deltalake import write_deltalake

    _repo(root)
    table = root / "data" / "events"
    write_deltalake(str(table), batch(0, 60), partition_by=["plan"] if partition else None)
    for i in range(1, commits):
        write_deltalake(str(table), batch(60 + 30 * (i - 1), 60 + 30 * i), mode="append")
    write_delta_env(root, pin, env, extra)
    return root


def write_delta_env(root: Path, pin: str = "", env: str = "tab", extra: str = "") -> None:
    write_env(root, env, DELTA_ENV.replace("name: tab", f"name: {env}").format(
        pin=pin, columns=COLUMNS) + extra)


def iceberg_catalog(root: Path):
    """The repository's SQLite catalog; tables are written with repository-relative
    locations (resolved by buildenv's file IO against `root`)."""
    from pyiceberg.catalog.sql import SqlCatalog

    (root / "data" / "iceberg").mkdir(parents=True, exist_ok=True)
    return SqlCatalog("default", **{
        "uri": f"sqlite:///{root / 'data' / 'iceberg' / 'catalog.db'}",
        "warehouse": "data/iceberg/warehouse",
        "py-io-impl": "buildenv.data.tables.iceberg_io.RepoFileIO",
        "buildenv.data-root": str(root)})


def make_iceberg_repo(root: Path, pin: str = "", env: str = "ice") -> Path:
    """A repository whose `ml.events` Iceberg table (identity-partitioned by `plan`) has two
    snapshots on main (60 rows, then 30 more), a tag `v1` on the first and a branch
    `exp-relabel` from the first with 20 rows of its own; environment `env` reads it."""
    from pyiceberg.transforms import IdentityTransform

    _repo(root)
    catalog = iceberg_catalog(root)
    catalog.create_namespace("ml")
    first = batch(0, 60)
    table = catalog.create_table("ml.events", schema=first.schema)
    with table.update_spec() as spec:
        spec.add_field("plan", IdentityTransform(), "plan")
    table.append(first)
    v1 = table.current_snapshot().snapshot_id
    table.append(batch(60, 90))
    table.manage_snapshots().create_tag(v1, "v1").create_branch(v1, "exp-relabel").commit()
    table.append(batch(1000, 1020), branch="exp-relabel")
    write_iceberg_env(root, pin, env)
    return root


def write_iceberg_env(root: Path, pin: str = "", env: str = "ice") -> None:
    write_env(root, env, ICEBERG_ENV.replace("name: ice", f"name: {env}").format(
        pin=pin, columns=COLUMNS))
