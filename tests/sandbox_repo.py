"""A small repository whose trainings attack the sandbox (tests/test_sandbox*.py).

Environment `open` has one unrestricted dataset (`items`); `secret` extends it with a
restricted one (`people`) whose `name` column holds a sentinel string. `train/common.py` fits a
small model through `ctx`; each attack is a training `train/<name>.py` declared for the
environments given, with `{root}`, `{home}` and `{port}` filled in.

`sandbox_usable` says whether this machine runs a mechanism; where CI promises the sandbox
(`BUILDENV_TEST_SANDBOX=required`, set by .ci/run), a missing one fails the test instead of
skipping it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from buildenv.compile.isolation import detect


def sandbox_usable(mechanism: str) -> bool:
    """Whether `mechanism` runs here: `auto` (bubblewrap), `landlock`, `any` or `none`."""
    support = detect()
    usable = {"auto": support.bwrap is not None, "landlock": support.landlock > 0,
              "any": support.mechanism != "none", "none": True}[mechanism]
    if not usable and os.environ.get("BUILDENV_TEST_SANDBOX") == "required":
        pytest.fail(f"BUILDENV_TEST_SANDBOX=required, but this machine runs no {mechanism} "
                    f"sandbox: {'; '.join(support.reasons())}")
    return usable


SENTINEL = "SENTINEL-7c1f9e"  # a restricted value: never in any output

OPEN = """\
name: open
datasets:
  items:
    uri: data/items.parquet
    columns:
      x1: {dtype: float64}
      cat: {dtype: string, domain: [a, b, c]}
      y: {dtype: bool, nullable: false}
label: {dataset: items, column: y, classes: [false, true]}
serving:
  stack: sklearn
  ops: [sklearn.linear_model.LogisticRegression, sklearn.ensemble.*, sklearn.tree.*]
  requirements: ["scikit-learn>=1.6,<2"]
"""

SECRET = """\
name: secret
extends: open
datasets:
  people:
    uri: data/people/people.parquet
    columns:
      name: {dtype: string}
      x2: {dtype: float64}
privacy:
  restricted: [people]
"""

COMMON = '''\
from sklearn.linear_model import LogisticRegression


def fit(ctx):
    df = ctx.read("items", columns=["x1", "y"])
    return LogisticRegression(random_state=ctx.seed).fit(df[["x1"]], df["y"])
'''


def make_sandbox_repo(root: Path, trainings: dict[str, tuple[str, list[str]]],
                      tool: str = "", home: Path | None = None, port: int = 0) -> Path:
    """`trainings`: name -> (code, environments). `tool`: extra `[tool.buildenv]` lines."""
    for sub in ("environments", "data/people", "train"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = ["[tool.buildenv]", 'environments_dir = "environments"', tool, ""]
    for name, (code, envs) in trainings.items():
        lines += [f"[tool.buildenv.trainings.{name}]", f'entry = "train/{name}.py:train"',
                  f"environments = {envs!r}".replace("'", '"'), ""]
        text = textwrap.dedent(code).format(root=root, home=home or "", port=port)
        (root / "train" / f"{name}.py").write_text(text)
    (root / "pyproject.toml").write_text("\n".join(lines))
    (root / "train" / "__init__.py").write_text("")
    (root / "train" / "common.py").write_text(COMMON)
    (root / "environments" / "open.yaml").write_text(OPEN)
    (root / "environments" / "secret.yaml").write_text(SECRET)
    rng = np.random.default_rng(3)
    n = 300
    x1 = rng.normal(0, 1, n)
    pq.write_table(pa.table({"x1": x1, "cat": rng.choice(["a", "b", "c"], n),
                             "y": x1 + rng.normal(0, 1, n) > 0}), root / "data" / "items.parquet")
    names = [f"person-{i}" for i in range(n)]
    names[17] = SENTINEL
    pq.write_table(pa.table({"name": names, "x2": rng.normal(0, 1, n)}),
                   root / "data" / "people" / "people.parquet")
    return root
