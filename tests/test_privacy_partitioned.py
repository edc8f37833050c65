"""No row value of a restricted partitioned dataset leaves buildenv, whichever executor ran.

A sentinel is planted in a restricted directory dataset (no partition columns: their values
would be paths): as a string outside its domain, a number outside its range, and a value a
training scanning the data raises with, prints and logs. After lock, validate (local and Ray),
drift and a build, the sentinel appears in no stdout/stderr and no file under .buildenv/,
dist/ or environments/.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import invoke_cli, kept_copy_of_data

pytestmark = pytest.mark.slow

SENTINEL = "SENTINEL-partitioned-5d1e@corp.example"
NUMBER = 987654.321

PYPROJECT = """
[tool.buildenv]
environments_dir = "environments"

[tool.buildenv.trainings.raiser]
entry = "train/raiser.py:train"
environments = ["people-build"]
"""

# the same data without the rules the sentinel breaks, so that the build gets to train on it
BUILD_ENV = """\
name: people-build
extends: people
datasets:
  people:
    columns:
      email: {domain: null}
      x: {range: null}
"""

ENV = """\
name: people
datasets:
  people:
    uri: data/people/
    columns:
      id: {dtype: int64, nullable: false}
      email: {dtype: string, domain: [a@example.com, b@example.com]}
      x: {dtype: float64, range: [-10, 10]}
      y: {dtype: bool, nullable: false}
label: {dataset: people, column: y, classes: [false, true]}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.SGDClassifier]
privacy:
  restricted: [people]
"""

RAISER = """
def train(ctx):
    for batch in ctx.scan("people", columns=["email", "x", "y"], batch_rows=64):
        print(batch.to_string())
        ctx.log_param("first", batch["email"].iloc[0])
        for value in batch["email"]:
            if value.startswith("SENTINEL"):
                raise ValueError(f"bad email {value}")
    raise RuntimeError("no sentinel")
"""


def table(seed: int, sentinel: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = 200
    email = rng.choice(["a@example.com", "b@example.com"], n).tolist()
    x = np.round(rng.normal(size=n), 3).tolist()
    if sentinel:
        email[17] = SENTINEL
        x[18] = NUMBER
    return pa.table({"id": np.arange(n) + seed * 1000, "email": email, "x": x,
                     "y": rng.random(n) < 0.5})


def test_restricted_partitioned_values_never_leave(tmp_path):
    pytest.importorskip("ray")
    root = tmp_path
    (root / "environments").mkdir()
    (root / "train").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "environments" / "people.yaml").write_text(ENV)
    (root / "environments" / "people-build.yaml").write_text(BUILD_ENV)
    (root / "train" / "raiser.py").write_text(RAISER)
    for part in range(4):
        for folder in ("people", "candidate"):
            target = root / "data" / folder / f"part-{part}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table(part + (10 if folder == "candidate" else 0), part == 2), target)
    outputs = []
    for args in (["lock"], ["lock", "--check"], ["validate", "people"],
                 ["validate", "people", "--executor", "ray"],
                 ["drift", "people", "--dataset", "people", "--against", "data/candidate/",
                  "--all"],
                 ["drift", "people", "--dataset", "people", "--against", "data/candidate/",
                  "--format", "json"],
                 ["build", "raiser", "--env", "people-build", "--no-register"]):
        code, out, err = invoke_cli(args, root, subprocess=True,
                                    env={"BUILDENV_RAY_NUM_CPUS": "2",
                                         "BUILDENV_RAY_OBJECT_STORE_MB": "100"})
        outputs.append((args, code, out + err))
    codes = {tuple(a): c for a, c, _ in outputs}
    assert codes[("validate", "people")] == 1  # the planted values are violations
    assert codes[("build", "raiser", "--env", "people-build", "--no-register")] == 1
    build_text = outputs[-1][2]
    assert "message withheld" in build_text
    for args, _, text in outputs:
        assert SENTINEL not in text, args
        assert str(NUMBER) not in text, args
    for folder in (".buildenv", "dist", "environments"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and not kept_copy_of_data(root, path):
                data = path.read_bytes()
                assert SENTINEL.encode() not in data, path
                assert str(NUMBER).encode() not in data, path
