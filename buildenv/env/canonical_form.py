"""An environment's canonical form: what its digest (the lock's `environment_digest`) covers.

The validated environment as pydantic dumps it (JSON mode, keys by alias, values equal to their
defaults left out) without its cosmetic keys. A function of the dumped document alone, without
pydantic, so that the lock's plan digests an environment it validated without the models
(`env.quick_validate`) as `resolve.canonical_environment` digests the model.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["canonical_document"]


def canonical_document(data: dict[str, Any]) -> dict[str, Any]:
    """`data` (the dump; changed in place) without the cosmetic fields."""
    for key in ("name", "extends", "description", "schema"):
        data.pop(key, None)
    for ls in data.get("labels", {}).values():
        ls.pop("description", None)
        if "source" in ls:  # where buildenv writes computed labels is not what they are
            ls.pop("uri", None)
            ls.pop("format", None)
    for ds in data["datasets"].values():
        ds.pop("description", None)
        if "source" in ds:  # likewise a derived dataset's output location
            ds.pop("uri", None)
        for col in ds.get("columns", {}).values():
            col.pop("description", None)
    finite: dict[str, Any] = _finite(data)
    return finite


def _finite(value: Any) -> Any:
    """`value` with each infinite or NaN float written as text (`"+Infinity"`, `"-Infinity"`,
    `"NaN"`): the digest's JSON has no such numbers, and the format takes `.inf` where it says
    so (a slice's bin edges, a condition's value). A text value of those spellings is no
    number of the format's, so the two cannot meet in one field."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
