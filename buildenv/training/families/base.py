"""The interface every model family offers the build, and what the families share.

A family adapts one kind of returned object (a scikit-learn-API estimator, a
`buildenv.TorchModel`, an `onnx.ModelProto`) to what the training process needs from it:
the input columns, the task and the environment's classes in probability order, predictions
on a DataFrame (labels as the environment's values), the operations to verify on the
`sklearn` stack, the libraries and repository modules it needs, an ONNX graph with one input
per column, and its native files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from buildenv.env.spec import Column, Environment
from buildenv.training.installed import distributions_by_package

__all__ = ["Family", "FamilyError", "Problem", "column_kinds",
           "environment_classes", "library_versions", "repository_modules"]


@dataclass(frozen=True)
class Problem:
    """A diagnostic about the returned model, located by the runner (no row values)."""

    code: str
    message: str
    hints: tuple[str, ...] = ()
    severity: str = "error"


class FamilyError(Exception):
    """The model cannot be adopted or converted; carries its diagnostic."""

    def __init__(self, code: str, message: str, hints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problem = Problem(code, message, hints)


@dataclass
class Family:
    """One returned model behind the build's interface (subclasses fill it in)."""

    model: Any
    inputs: list[str] | None
    task: str  # "classification" | "regression"
    classes: list | None = None  # environment values, in probability-column order
    encoded_labels: bool = False  # predict() gives positions into `classes`
    problems: list[Problem] = field(default_factory=list)
    kind: str = ""
    model_class: str = ""

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    def predict(self, frame: Any) -> Any:
        """Predicted labels (environment values) or values for the rows of `frame`."""
        raise NotImplementedError

    def predict_proba(self, frame: Any) -> Any:
        """Probabilities, one column per class of `classes`."""
        raise NotImplementedError

    @property
    def has_proba(self) -> bool:
        return self.is_classifier

    @property
    def classes_(self) -> Any:  # what scikit-learn code (scoring) reads
        return np.asarray(self.classes, dtype=object)

    def ops(self) -> list[dict]:
        """Every class the fitted model is made of: `{"class", "where"}`."""
        return []

    def libraries(self) -> dict[str, str]:
        """Versions of the libraries the model's classes come from (distribution names)."""
        return {}

    def code_modules(self, root: Path) -> list[str]:
        """Repository modules that define classes of the model (needed to load it natively)."""
        return []

    def to_onnx(self, types: dict[str, str], opset: int) -> Any:
        """An `onnx.ModelProto` with one input per column of `inputs`, typed by `types`
        (column -> environment dtype), at the default-domain `opset`. FamilyError (BE405)."""
        raise NotImplementedError

    def onnx_encoded_labels(self) -> bool:
        """Whether the ONNX graph's `label` output holds positions into `classes`."""
        return self.encoded_labels

    def save_native(self, directory: Path) -> list[str]:
        """Write the native model under `directory` (for `serving.format: onnx+native`); the
        files written."""
        return []


def environment_classes(env: Environment) -> list | None:
    """The label's classes as the environment declares them (a bool label without declared
    classes: [False, True]); None for a numeric label without classes (regression)."""
    classes = env.label_classes()
    if classes:
        return list(classes)
    label = env.label
    if label is None or label.dataset is None or label.column is None:
        return None
    column = env.column(label.dataset, label.column)
    if column is not None and column.dtype == "bool":
        return [False, True]
    return None


def is_classification_label(env: Environment) -> bool | None:
    """True/False when the environment's label decides the task; None without a label."""
    if env.label is None:
        return None
    if environment_classes(env) is not None or env.label_set() is not None:
        return True
    column = env.column(env.label.dataset or "", env.label.column or "")
    return column is not None and column.dtype == "string"


def column_kinds(env: Environment, inputs: list[str]) -> dict[str, str]:
    """How each input column reaches a graph: `string`, `int64` or `float` (a nullable
    integer or bool column arrives as float, null as NaN, as in the serving app)."""
    declared: dict[str, Column] = {}
    for ds in env.datasets.values():
        for name, col in ds.columns.items():
            declared.setdefault(name, col)
    out = {}
    for name in inputs:
        found = declared.get(name)
        if found is None or found.dtype in ("float32", "float64"):
            out[name] = "float"
        elif found.dtype in ("string", "date", "timestamp"):
            out[name] = "string"
        elif found.nullable:
            out[name] = "float"
        else:
            out[name] = "int64"
    return out



def library_versions(modules: list[str]) -> dict[str, str]:
    """Distribution versions for top-level import names (`xgboost` -> `xgboost-cpu`, and the
    import name too when a CPU build renames the distribution, so a requirement written either
    way is checked).

    `packages_distributions` reads the files each distribution records; installers that record
    only the `.dist-info` (a PEX virtualenv, which is how `./pants build` runs a training) leave
    a module unmapped, and an unmapped library would go unchecked against serving's pins. Those
    are found by the distribution names the module is published under."""
    table = distributions_by_package()
    out: dict[str, str] = {}
    for module in sorted(set(modules)):
        found = False
        for dist in table.get(module) or _published_as(module):
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            found = True
            out[dist] = version
            if dist.lower() != module and dist.lower().startswith(module):
                out[module] = version
        attribute = getattr(sys.modules.get(module), "__version__", None)
        if not found and isinstance(attribute, str):
            out[module] = attribute
    return out


# Import names whose distribution is named otherwise (the ones model families use).
_DISTRIBUTIONS = {"sklearn": ("scikit-learn",), "xgboost": ("xgboost", "xgboost-cpu"),
                  "skops": ("skops",), "onnxscript": ("onnxscript",)}


def _published_as(module: str) -> tuple[str, ...]:
    return _DISTRIBUTIONS.get(module, (module, module.replace("_", "-")))


def repository_modules(classes: list[type], root: Path) -> list[str]:
    """Modules of the repository (not of installed packages) that define `classes`."""
    root = root.resolve()
    out = set()
    for cls in classes:
        module = sys.modules.get(cls.__module__)
        path = getattr(module, "__file__", None)
        if not path:
            continue
        resolved = Path(path).resolve()
        if resolved.is_relative_to(root) and ".venv" not in resolved.parts \
                and "site-packages" not in resolved.parts:
            out.add(cls.__module__)
    return sorted(out)
