"""The files that make a directory a buildenv project (`buildenv init`), planned, then written.

A plan lists every file init would create or extend, so that nothing is written before every
input was read and checked; files that already say what init would say are left alone (init is
safe to run again, and finishes what an interrupted run began). Each file is written
atomically: a reader sees the old file or the new one.

- `pyproject.toml`: a `[tool.buildenv]` table and, when the project declares no training yet,
  one training (`[tool.buildenv.trainings.<name>]`, entry `trainings/<name>.py:train`);
  appended to an existing file, never rewriting what is there.
- `.gitignore`: `.buildenv/` (state and caches) and `dist/` (artifacts).
- `environments/`.
- `trainings/<name>.py`: a first training; a model over the label dataset's columns when an
  environment with a label is inferred in the same run, else a function to write.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from buildenv.core.atomic import atomic_write_text, create_new_text
from buildenv.core.diagnostics import Diagnostic, DiagnosticError

__all__ = ["IGNORED", "Planned", "StubModel", "plan_project", "training_stub", "write_plan"]

IGNORED = (".buildenv/", "dist/")


@dataclass(frozen=True)
class Planned:
    """One file to write: `text` is its whole new content; `new` files must not exist."""

    path: Path
    text: str
    new: bool
    note: str  # what it is, for the report: "created pyproject.toml ([tool.buildenv], ...)"


@dataclass(frozen=True)
class StubModel:
    """What a generated training fits: the label, from one dataset, on some of its columns."""

    environment: str
    dataset: str
    label: str
    categorical: list[str]
    numeric: list[str]
    classification: bool


def plan_project(root: Path, training: str, stub: StubModel | None) -> list[Planned]:
    """The files init writes for the project itself (not the environment). BE016 when an
    existing pyproject.toml is not TOML."""
    plan: list[Planned] = []
    pyproject = root / "pyproject.toml"
    entry = f"trainings/{training}.py"
    table = ('[tool.buildenv]\nenvironments_dir = "environments"\n')
    declare = (f'[tool.buildenv.trainings.{training}]\nentry = "{entry}:train"\n'
               'environments = ["*"]\n')
    if not pyproject.is_file():
        plan.append(Planned(pyproject, table + "\n" + declare, True,
                            f"created pyproject.toml ([tool.buildenv], training '{training}')"))
        declared = False
    else:
        text = pyproject.read_text(encoding="utf-8")
        try:
            tool = tomllib.loads(text).get("tool", {}).get("buildenv")
        except tomllib.TOMLDecodeError as exc:
            raise DiagnosticError([Diagnostic(
                "BE016", f"invalid TOML: {exc}; init adds to pyproject.toml and will not touch "
                "a file it cannot read", "pyproject.toml")], 2) from None
        declared = bool(tool and tool.get("trainings"))
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n")
                                                              else "\n\n")
        if tool is None:
            plan.append(Planned(pyproject, text + sep + table + "\n" + declare, False,
                                f"added [tool.buildenv] and training '{training}' to "
                                "pyproject.toml"))
        elif not declared:
            plan.append(Planned(pyproject, text + sep + declare, False,
                                f"added training '{training}' to pyproject.toml"))
    ignore = root / ".gitignore"
    current = ignore.read_text(encoding="utf-8") if ignore.is_file() else ""
    have = {line.strip() for line in current.splitlines()}
    missing = [p for p in IGNORED if p not in have and p.rstrip("/") not in have]
    if missing:
        sep = "" if not current or current.endswith("\n") else "\n"
        plan.append(Planned(ignore, current + sep + "\n".join(missing) + "\n", not current,
                            f"{'added' if current else 'created'} .gitignore entries "
                            f"{', '.join(missing)}"))
    if not declared and not (root / entry).exists():
        plan.append(Planned(root / entry, training_stub(training, stub), True,
                            f"created {entry}" + (f" (a first model of '{stub.label}')"
                                                  if stub else " (write train(ctx) there)")))
    return plan


def write_plan(root: Path, plan: list[Planned]) -> list[str]:
    """Write every planned file (and `environments/`); the report lines."""
    lines = []
    if not (root / "environments").is_dir():
        (root / "environments").mkdir(parents=True)
        lines.append("created environments/")
    for item in plan:
        if item.new:
            if not create_new_text(item.path, item.text):
                raise DiagnosticError([Diagnostic(
                    "BE041", f"{item.path.relative_to(root).as_posix()} appeared while init "
                    "was writing; nothing of it was overwritten")], 1)
        else:
            atomic_write_text(item.path, item.text)
        lines.append(item.note)
    return lines


def training_stub(training: str, model: StubModel | None) -> str:
    """The source of a first training."""
    if model is None:
        return (f'"""Training `{training}`, declared in pyproject.toml: write `train` below.\n\n'
                "Read data only through `ctx` (`ctx.read(dataset, columns=[...])` returns a "
                "pandas DataFrame)\nand return a fitted model; docs/training.md has the "
                "contract. `buildenv init --env NAME\n--data PATH` infers an environment from "
                'data files.\n"""\n\n\ndef train(ctx):\n    raise NotImplementedError(\n'
                '        "write the training: read data with ctx.read(dataset, columns=[...]) '
                'and return a "\n        "fitted model")\n')
    estimator = ("LogisticRegression(max_iter=1000, random_state=ctx.seed)"
                 if model.classification else "Ridge()")
    imported = "LogisticRegression" if model.classification else "Ridge"
    return f'''"""Training `{training}`, written by `buildenv init`: a first model of `{model.label}`
over the columns of dataset `{model.dataset}`. Edit freely; `buildenv build {training} --env
{model.environment}` compiles it, and the environment scores it on rows it holds out
(`ctx.read` never returns them).
"""

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import {imported}
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CATEGORICAL = {json.dumps(model.categorical)}
NUMERIC = {json.dumps(model.numeric)}
LABEL = {json.dumps(model.label)}


def train(ctx):
    df = ctx.read({json.dumps(model.dataset)}, columns=CATEGORICAL + NUMERIC + [LABEL])
    df = df[df[LABEL].notna()]
    X = df[CATEGORICAL + NUMERIC].copy()
    for column in CATEGORICAL:
        X[column] = X[column].astype(object)  # as serving sends them
    for column in NUMERIC:
        X[column] = X[column].astype(float)
    model = Pipeline([
        ("features", ColumnTransformer([
            ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                          OneHotEncoder(handle_unknown="ignore")), CATEGORICAL),
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             NUMERIC),
        ])),
        ("model", {estimator}),
    ])
    model.fit(X, df[LABEL])
    return model
'''
