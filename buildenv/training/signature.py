"""MLflow signature types from the environment's declared dtypes, not guessed from data.

MLflow infers signatures from a sample and drops them for nullable integers
(mlflow#25593). The environment already says what serving sends, so we build
the signature from it. A nullable integer column arrives in pandas as float64
(NaN for null), so it is declared `double` to be accepted at serving time.

`served_signature` is plain data (no MLflow import: the training process writes MLflow's
model directory itself, `mlmodel_writer`); `ServedSignature.to_mlflow` gives MLflow's object
where MLflow's own writer still saves the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from buildenv.env.spec import Column

# Deferred imports (mlflow): only `ServedSignature.to_mlflow` needs it, for the saves MLflow
# writes itself; the scikit-learn stack's training process never imports MLflow.

__all__ = ["ServedSignature", "colspec_type", "served_signature"]

_TYPES = {
    "int8": "integer", "int16": "integer", "int32": "integer", "int64": "long",
    "float32": "float", "float64": "double", "bool": "boolean", "string": "string",
    "date": "datetime", "timestamp": "datetime",
}


def colspec_type(column: Column) -> str:
    if column.dtype.startswith("int") and column.nullable:
        return "double"
    return _TYPES[column.dtype]


@dataclass(frozen=True)
class ServedSignature:
    """Named, required columns (MLflow type name, column name) of the model's input and
    output schemas."""

    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...] | None

    def to_dict(self) -> dict[str, Any]:
        """What MLflow's `ModelSignature.to_dict` gives for the same columns (the schemas as
        JSON strings, as `MLmodel` holds them)."""
        return {"inputs": _schema_json(self.inputs),
                "outputs": _schema_json(self.outputs) if self.outputs else None,
                "params": None}

    def to_mlflow(self) -> Any:
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        return ModelSignature(
            inputs=Schema([ColSpec(t, n) for t, n in self.inputs]),
            outputs=Schema([ColSpec(t, n) for t, n in self.outputs]) if self.outputs else None)


def _schema_json(columns: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([{"type": t, "name": n, "required": True} for t, n in columns])


def served_signature(env: Any, inputs: list[str] | None, label: Any) -> ServedSignature | None:
    """The signature of a model reading `inputs` in `env` (None when an input is not a declared
    column): the output is the label set's taxonomy, or the label column."""
    if not inputs:
        return None
    served: dict[str, Any] = {}
    for ds in env.datasets.values():
        for name, col in ds.columns.items():
            served.setdefault(name, col)
    if any(name not in served for name in inputs):
        return None
    outputs = None
    label_set = env.label_set()
    if label_set is not None:
        outputs = (("string", label_set.taxonomy.name),)
    elif label is not None and label.dataset in env.datasets:
        col = env.datasets[label.dataset].columns.get(label.column)
        if col is not None:
            outputs = ((colspec_type(col), label.column),)
    return ServedSignature(tuple((colspec_type(served[n]), n) for n in inputs), outputs)
