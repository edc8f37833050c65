"""The base every model of the environment format shares: strict, immutable, documented."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict

__all__ = ["Scalar", "Strict"]

Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
