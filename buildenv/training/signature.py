"""MLflow signature types from the environment's declared dtypes, not guessed from data.

MLflow infers signatures from a sample and drops them for nullable integers
(mlflow#25593). The environment already says what serving sends, so we build
the signature from it. A nullable integer column arrives in pandas as float64
(NaN for null), so it is declared `double` to be accepted at serving time.
"""

from __future__ import annotations

from buildenv.env.spec import Column

__all__ = ["colspec_type"]

_TYPES = {
    "int8": "integer", "int16": "integer", "int32": "integer", "int64": "long",
    "float32": "float", "float64": "double", "bool": "boolean", "string": "string",
    "date": "datetime", "timestamp": "datetime",
}


def colspec_type(column: Column) -> str:
    if column.dtype.startswith("int") and column.nullable:
        return "double"
    return _TYPES[column.dtype]
