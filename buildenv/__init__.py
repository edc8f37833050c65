"""buildenv: compile ML training code against declarative, locked build environments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__version__ = "0.1.0"
__all__ = ["__version__", "labeling_function"]

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute a labeling function carries: what `buildenv.labels.functions` looks for.
LABELING_FUNCTION = "__buildenv_labeling_function__"


def labeling_function(*, columns: list[str]) -> Callable[[F], F]:
    """Declare a labeling function of a label set computed by functions (docs/labels.md).

    The function takes a batch -- a pandas DataFrame of exactly `columns` of the label set's
    dataset -- and returns one class of the taxonomy, or None (abstain), per row: a Series,
    array or list as long as the batch. buildenv checks the columns without running the code,
    reads them through the data gate, and reruns a function only when its code changes."""
    if not isinstance(columns, (list, tuple)) or not columns or \
            not all(isinstance(c, str) for c in columns):
        raise TypeError("labeling_function(columns=[...]) takes a non-empty list of column names")
    declared = list(columns)

    def mark(function: F) -> F:
        setattr(function, LABELING_FUNCTION, {"columns": declared})
        return function

    return mark
