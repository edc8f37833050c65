"""A seeded repository whose data and labels are partly made by code, for the tests of derived
datasets and labeling functions: the partitioned `events` (4 days x 2 files, from
`partitioned_repo`), `daily` (a per-file aggregate of events by `kind`, derived) and `rules`
(a label set of events computed by three labeling functions over `x` and `kind`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partitioned_repo import make_partitioned_repo

DERIVED = """\
  daily:
    source:
      transform: transforms/daily.py:daily
      inputs: [events]
    columns:
      date: {dtype: date}
      kind: {dtype: string}
      n: {dtype: int64, nullable: false}
      mean_x: {dtype: float64}
"""

LABELS = """\
labels:
  rules:
    dataset: events
    key: user
    taxonomy: {name: sign, version: 1, classes: [neg, pos]}
    source:
      functions: rules/sign.py
"""

TRANSFORM = '''\
import pandas as pd


def daily(ctx):
    df = ctx.read("events", columns=["kind", "x"])
    out = df.groupby("kind", as_index=False).agg(n=("x", "size"), mean_x=("x", "mean"))
    return out.sort_values("kind").reset_index(drop=True)
'''

RULES = '''\
import numpy as np

import buildenv


@buildenv.labeling_function(columns=["x"])
def positive_x(batch):
    return np.where(batch["x"] > 0.5, "pos", None)


@buildenv.labeling_function(columns=["x"])
def negative_x(batch):
    return np.where(batch["x"] < -0.5, "neg", None)


@buildenv.labeling_function(columns=["kind"])
def kind_a(batch):
    return np.where(batch["kind"] == "a", "pos", None)
'''


def make_source_repo(root: Path) -> Path:
    make_partitioned_repo(root)
    env = root / "environments" / "ev.yaml"
    text = env.read_text()
    head, rest = text.split("label:", 1)
    env.write_text(head + DERIVED + LABELS + "label:" + rest)
    (root / "transforms").mkdir()
    (root / "transforms" / "daily.py").write_text(TRANSFORM)
    (root / "rules").mkdir()
    (root / "rules" / "sign.py").write_text(RULES)
    return root


def source_fixtures(name: str) -> tuple[Any, Any, Any]:
    """The fixtures the tests of data and labels made by code share: progress lines for every
    task (the tests read which work ran from them; by default a task is shown only after 1 s,
    so a fast machine would show none), a locked repository per module (`template`), and a
    fresh copy of it per test (`locked`). Assign them in the test module:
    `_progress, template, locked = source_fixtures("derived")`."""
    import shutil

    import pytest
    from conftest import invoke_cli
    from partitioned_repo import age

    @pytest.fixture(autouse=True)
    def progress_shown_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BUILDENV_PROGRESS", "plain")
        monkeypatch.setenv("BUILDENV_PROGRESS_AFTER", "0")

    @pytest.fixture(scope="module")
    def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = make_source_repo(tmp_path_factory.mktemp(name) / "repo")
        age(root)
        code, _, err = invoke_cli(["lock", "ev"], root)
        assert code == 0, err
        return root

    @pytest.fixture
    def locked(template: Path, tmp_path: Path) -> Path:
        return Path(shutil.copytree(template, tmp_path / "repo", symlinks=True))

    return progress_shown_at_once, template, locked
