"""The checks of the dataset model's validators, without pydantic.

`spec.Dataset`'s validators call these, and so does the lock's plan when it validates an edited
environment without the models (`env.quick_validate`): one rule, two callers. Each returns the
problem's error type (what the validator raises), or None. A column's checks are
`column_rules.COLUMN_CHECKS`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["dataset_columns_problem", "dataset_uri_problem"]


def dataset_columns_problem(columns: dict[str, Any]) -> str | None:
    """`missing` when a dataset declares no column."""
    return None if columns else "missing"


def dataset_uri_problem(uri: str, source: Any, format: str) -> str | None:
    """`missing` when a dataset has neither a uri nor a source; `derived` when a derived
    dataset names another format than Parquet."""
    if source is None and not uri:
        return "missing"
    if source is not None and format != "parquet":
        return "derived"
    return None
