"""A seeded repository holding a hive-partitioned dataset (`events`, by `date`), for the tests
of partitioned datasets, ctx.scan and the executors."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAYS = 4
FILES_PER_DAY = 2
ROWS_PER_FILE = 500

PYPROJECT = """\
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.scan]
entry = "train/scan.py:train"

[tool.buildenv.trainings.recent]
entry = "train/recent.py:train"

[tool.buildenv.trainings.sneaky]
entry = "train/sneaky.py:train"
"""

ENV = """\
name: ev
datasets:
  events:
    uri: data/events/
    partitions: [date]
    columns:
      date: {dtype: date, range: ["2026-09-01", "2026-12-31"]}
      user: {dtype: int64, nullable: false}
      x: {dtype: float64, range: [-10, 10]}
      kind: {dtype: string, domain: [a, b, c]}
      y: {dtype: bool, nullable: false}
label: {dataset: events, column: y, classes: [false, true]}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.SGDClassifier]
"""

TRAININGS = {
    "scan.py": '''
from sklearn.linear_model import SGDClassifier


def train(ctx):
    model = SGDClassifier(loss="log_loss", random_state=ctx.seed)
    rows = 0
    for batch in ctx.scan("events", columns=["x", "user", "y"], batch_rows=300):
        model.partial_fit(batch[["x", "user"]], batch["y"], classes=[False, True])
        rows += len(batch)
    ctx.log_metric("rows", rows)
    return model
''',
    "recent.py": '''
from sklearn.linear_model import SGDClassifier


def train(ctx):
    df = ctx.read("events", columns=["x", "user", "y"], filters=[("date", ">=", "2026-09-03")])
    ctx.log_metric("rows", len(df))
    return SGDClassifier(random_state=ctx.seed).fit(df[["x", "user"]], df["y"])
''',
    # rewrites a file after the lock was checked, then catches the gate's refusal
    "sneaky.py": '''
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import SGDClassifier


def train(ctx):
    target = Path(__file__).parents[1] / "data/events/date=2026-09-02/part-1.parquet"
    pq.write_table(pa.table({"user": [1], "x": [0.5], "kind": ["a"], "y": [True]}), target)
    model = SGDClassifier(random_state=ctx.seed)
    try:
        for batch in ctx.scan("events", columns=["x", "user", "y"]):
            model.partial_fit(batch[["x", "user"]], batch["y"], classes=[False, True])
    except Exception:
        pass
    return model.fit([[0.0, 1.0], [1.0, 2.0]], [False, True])
''',
}


def day(i: int) -> str:
    return (dt.date(2026, 9, 1) + dt.timedelta(days=i)).isoformat()


def events_table(seed: int, n: int = ROWS_PER_FILE) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "user": pa.array(rng.integers(0, 1000, n), pa.int64()),
        "x": pa.array(np.round(rng.normal(size=n), 4), pa.float64()),
        "kind": pa.array(rng.choice(["a", "b", "c"], n), pa.string()),
        "y": pa.array(rng.random(n) < 0.4, pa.bool_()),
    })


def file_path(root: Path, i: int, part: int) -> Path:
    return root / "data" / "events" / f"date={day(i)}" / f"part-{part}.parquet"


def write_file(root: Path, i: int, part: int, seed: int | None = None) -> Path:
    path = file_path(root, i, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(events_table(seed if seed is not None else 100 * i + part), path)
    return path


def make_partitioned_repo(root: Path, days: int = DAYS) -> Path:
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments" / "ev.yaml").write_text(ENV)
    for name, code in TRAININGS.items():
        (root / "train" / name).write_text(code)
    for i in range(days):
        for part in range(FILES_PER_DAY):
            write_file(root, i, part)
    return root


def age(root: Path, *paths: Path, seconds: int = 60) -> None:
    """Backdate `paths` (default: every data file): the stat cache distrusts files written
    just before they were hashed."""
    past = time.time() - seconds
    for path in paths or [p for p in (root / "data").rglob("*") if p.is_file()]:
        os.utime(path, (past, past))
