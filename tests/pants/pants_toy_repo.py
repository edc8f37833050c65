"""A small buildenv repo for running the real `./pants` against (Python 3.11 tests).

It carries copies of this repo's Pants setup (`pants`, `pants.toml`, `rules/`, the
lockfile, root BUILD) and of buildenv itself, plus a two-environment multiverse:

* `a`: dataset `items` = data/items-v1.parquet, columns x, secret (training-only), y;
* `b`: `extends: a`, with `items` = data/items-v2.parquet.

Every training appends `<training> <env>` to `trainings.log` (an absolute path outside
the repo) when it runs: the proof that a cached pair was not retrained. Writing there is what
the training sandbox forbids, so these two trainings run with `sandbox = "off"`; trainings
declared only in BUILD files get the default (sandboxed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

MAIN_REPO = Path(__file__).resolve().parents[2]

COPIED = ["pants", "pants.toml", "BUILD", "rules", "buildenv", "3rdparty"]


def _env_yaml(name: str, *, extends: str | None, uri: str, x_range: tuple[int, int]) -> str:
    if extends:
        return textwrap.dedent(f"""\
            name: {name}
            extends: {extends}
            datasets:
              items:
                uri: {uri}
                columns:
                  x: {{dtype: float64, nullable: false, range: [{x_range[0]}, {x_range[1]}]}}
            """)
    return textwrap.dedent(f"""\
        name: {name}
        datasets:
          items:
            uri: {uri}
            format: parquet
            columns:
              x: {{dtype: float64, nullable: false, range: [{x_range[0]}, {x_range[1]}]}}
              secret: {{dtype: float64, nullable: false, serving: false}}
              y: {{dtype: bool, nullable: false}}
        label: {{dataset: items, column: y, classes: [false, true]}}
        serving:
          stack: sklearn
          ops: [sklearn.linear_model.*, sklearn.pipeline.Pipeline]
          requirements: ["scikit-learn>=1.6,<2"]
        """)


TRAIN = '''\
from sklearn.linear_model import LogisticRegression

LOG = {log!r}


def train(ctx):
    with open(LOG, "a") as f:
        f.write({training!r} + " " + ctx.env.name + "\\n")
    df = ctx.read("items", columns={columns!r})
    return LogisticRegression().fit(df[{features!r}], df["y"])
'''

TRAININGS = {
    # name: (module, columns read, features)
    "toy": ("models/train_toy.py", ["x", "y"], ["x"]),
    "toy2": ("models/train_toy2.py", ["x", "y"], ["x"]),
}


@dataclass
class ToyRepo:
    root: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PANTS_", "BUILDENV_"))}
        env.update(extra)
        return env

    def pants(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["./pants", "--no-pantsd", "--no-dynamic-ui", *args],
            cwd=self.root, env=self.env(**env), capture_output=True, text=True, timeout=900,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"./pants {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def buildenv(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "buildenv", *args], cwd=self.root,
                              env=self.env(), capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"buildenv {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def trained(self) -> list[str]:
        """Pairs trained since the last call, sorted."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        self.log.write_text("")
        return sorted(lines)

    def write(self, relpath: str, text: str) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def write_items(self, relpath: str, *, rows: int, shift: float) -> None:
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(7)
        x = rng.uniform(0, 10, rows) + shift
        frame = pd.DataFrame({"x": x, "secret": x * 2.0, "y": x > 5 + shift})
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)


def _pyproject(trainings: dict[str, tuple[str, list[str], list[str]]]) -> str:
    """This repo's pyproject.toml (its [project] keeps the lockfile valid) with a toy
    [tool.buildenv]."""
    text = (MAIN_REPO / "pyproject.toml").read_text()
    text = re.split(r"^\[tool\.buildenv", text, flags=re.M)[0]
    text += '\n[tool.buildenv]\nenvironments_dir = "environments"\n'
    for name, (module, _, _) in trainings.items():
        text += f'\n[tool.buildenv.trainings.{name}]\nentry = "{module}:train"\n'
        text += 'environments = ["*"]\nsandbox = "off"  # it writes its run to the log\n'
    return text


def make_toy_repo(root: Path, log: Path) -> ToyRepo:
    root.mkdir(parents=True)
    for name in COPIED:
        src = MAIN_REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
    repo = ToyRepo(root, log)
    repo.write("pyproject.toml", _pyproject(TRAININGS))
    repo.write("environments/a.yaml", _env_yaml("a", extends=None, uri="data/items-v1.parquet",
                                                 x_range=(-100, 100)))
    repo.write("environments/b.yaml", _env_yaml("b", extends="a", uri="data/items-v2.parquet",
                                                 x_range=(-100, 100)))
    repo.write_items("data/items-v1.parquet", rows=200, shift=0.0)
    repo.write_items("data/items-v2.parquet", rows=200, shift=1.0)
    for name, (module, columns, features) in TRAININGS.items():
        repo.write(module, TRAIN.format(log=str(log), training=name, columns=columns,
                                        features=features))
    repo.buildenv("lock")
    return repo
