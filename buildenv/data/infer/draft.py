"""From inferred datasets to the environment `buildenv init` writes, and its first training.

The columns are `infer.declare`d; the label is the one asked for or guessed
(`infer.label_candidate`); the serving stack allows what the generated training fits (a
scikit-learn pipeline of imputers, scalers, a one-hot encoder and a linear model), pinned to
the scikit-learn major version installed here. A restricted dataset is listed under
`privacy.restricted`, and its label classes are written only when they are not its values
(`[false, true]`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from buildenv.core.diagnostics import Diagnostic, DiagnosticError
from buildenv.core.scaffold import StubModel
from buildenv.data.infer.datasets import InferredDataset, declare
from buildenv.data.infer.profile import DOMAIN_MAX, ColumnProfile
from buildenv.env.render import DatasetDraft, EnvironmentDraft, render_environment

__all__ = ["SERVING_OPS", "draft_environment"]

SERVING_OPS = ["sklearn.pipeline.Pipeline", "sklearn.compose.ColumnTransformer",
               "sklearn.impute.*", "sklearn.preprocessing.*", "sklearn.linear_model.*"]


def draft_environment(env: str, found: list[InferredDataset], label: tuple[str, str] | None,
                      guessed: bool) -> tuple[str, StubModel | None, str]:
    """(the environment file's text, what a first training fits, a one-line summary)."""
    datasets = [_dataset(env, d) for d in found]
    restricted = [d.name for d in found if d.restricted]
    label_doc: dict[str, Any] | None = None
    stub: StubModel | None = None
    comment = ""
    if label is not None:
        ds = next(d for d in found if d.name == label[0])
        profile = ds.columns[label[1]]
        classes = _classes(profile, ds.restricted)
        label_doc = {"dataset": label[0], "column": label[1]}
        if classes is not None:
            label_doc["classes"] = classes
        comment = "a guess: check it, or run init with --label DATASET.COLUMN" if guessed else ""
        stub = _stub(env, ds, profile, classes is not None or profile.dtype == "string")
    files = ", ".join(d.uri for d in found)
    draft = EnvironmentDraft(
        name=env, description=f"Inferred by buildenv init from {files}.", datasets=datasets,
        header=[f"Inferred by `buildenv init` from {files}.",
                "Read it through before `buildenv lock`: a range or domain says what the data",
                "held, not what it may hold. How each key was inferred: docs/commands.md",
                "(buildenv init)."],
        label=label_doc, label_comment=comment, serving=_serving(), restricted=restricted)
    columns = sum(len(d.columns) for d in datasets)
    summary = (f"{len(datasets)} dataset{'s' if len(datasets) != 1 else ''}, {columns} columns"
               + (f", label {label[0]}.{label[1]}" + (" (guessed)" if guessed else "")
                  if label else ", no label found (add `label:` by hand)"))
    return render_environment(draft), stub, summary


def _dataset(env: str, found: InferredDataset) -> DatasetDraft:
    columns, comments, notes = {}, {}, []
    for name, profile in found.columns.items():
        if profile.dtype is None:
            notes.append(f"left out: '{name}' ({profile.left_out})")
            continue
        columns[name] = declare(found, profile)
        said = []
        if profile.nulls and profile.rows:
            said.append(f"{profile.nulls / profile.rows:.1%} null")
        if profile.kinds:
            said.append(f"mixed values: {profile.dtype} holds them all")
        comments[name] = ", ".join(said)
    if not columns:
        raise DiagnosticError([Diagnostic(
            "BE045", f"dataset '{found.name}': no column of '{found.uri}' has a type an "
            "environment can declare", found.uri.rstrip("/"))], 1)
    rows = f"{found.rows:,} rows" + (
        f" in {found.files:,} file{'' if found.files == 1 else 's'}" if found.uri.endswith("/")
        else "")
    if found.restricted:
        rows += (f"; restricted: no values written, fill ranges and domains from `buildenv "
                 f"stats {env} --dataset {found.name}`")
    return DatasetDraft(found.name, found.uri, found.format, columns, found.partitions, rows,
                        comments, notes, paths_off=found.paths_off)


def _classes(profile: ColumnProfile, restricted: bool) -> list[Any] | None:
    if profile.dtype == "bool":
        return [False, True]
    if restricted or profile.values is None or len(profile.values) > DOMAIN_MAX:
        return None
    if profile.dtype == "string" or (profile.dtype or "").startswith("int"):
        return list(profile.values)
    return None


def _stub(env: str, ds: InferredDataset, label: ColumnProfile, classification: bool
          ) -> StubModel | None:
    """A first model over the label dataset's columns: categories one-hot encoded, numbers
    scaled; keys, dates, free text and the label left out."""
    categorical, numeric = [], []
    for name, profile in ds.columns.items():
        if name == label.name or profile.dtype is None or profile.unique:
            continue
        if profile.dtype == "string" and profile.values is not None:
            categorical.append(name)
        elif profile.dtype == "bool" or profile.dtype.startswith(("int", "float")):
            numeric.append(name)
    if not categorical and not numeric:
        return None
    return StubModel(env, ds.name, label.name, categorical, numeric, classification)


def _serving() -> dict[str, Any]:
    try:
        major, minor = version("scikit-learn").split(".")[:2]
        requirement = f"scikit-learn>={major}.{minor},<{int(major) + 1}"
    except (PackageNotFoundError, ValueError):
        requirement = "scikit-learn"
    return {"stack": "sklearn", "ops": SERVING_OPS, "requirements": [requirement]}
