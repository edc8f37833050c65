"""The base every model of the environment format shares: strict, immutable, documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from pydantic import BaseModel, ConfigDict

__all__ = ["Scalar", "Strict", "without_required"]

Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def without_required(*names: str) -> Callable[[dict[str, Any]], None]:
    """A `json_schema_extra` that drops `names` from a model's required keys: keys the
    resolver may fill in (a derived dataset's `uri`), so editors do not ask for them."""
    def edit(schema: dict[str, Any]) -> None:
        required = [k for k in schema.get("required", []) if k not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
    return edit
