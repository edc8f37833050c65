"""What a label export becomes: one row per annotation, in columns.

Every reader (Label Studio JSON, Parquet) produces `Annotations`; resolution, exposure,
agreement and the lock's counts work on these columns only, so they do not care which tool
wrote the export. Cancelled annotations and annotations without a choice for the label set's
field are counted, not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Annotations", "ExportError", "outside_taxonomy"]


class ExportError(Exception):
    """An export that cannot be read as its format says; `code` is its diagnostic code and the
    message names the export line (or row) where possible, never a value of the example."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Annotations:
    keys: pa.Array  # string: the example's key, as `data.keys.key_text` writes it
    labels: pa.Array  # string: the chosen class
    annotators: pa.Array  # string
    ui_versions: pa.Array  # string (null when the export does not say)
    created_at: pa.Array  # timestamp[us, UTC], nullable
    lines: np.ndarray  # int64: the export line of the task (JSON) or the data row (Parquet)
    tasks: int  # tasks (JSON) or rows (Parquet) read
    cancelled: int = 0  # cancelled annotations, skipped
    empty: int = 0  # annotations without a choice for the field, skipped
    unit: str = "line"  # what `lines` counts: "line" (of the export) or "row"

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def examples(self) -> int:
        return int(pc.count_distinct(self.keys).as_py()) if len(self.keys) else 0

    @property
    def annotator_count(self) -> int:
        return int(pc.count_distinct(self.annotators).as_py()) if len(self.annotators) else 0

    def where(self, display: str, index: int) -> str:
        """Where annotation `index` was written: `file:line`, or `file row N`."""
        if self.unit == "line":
            return f"{display}:{int(self.lines[index])}"
        return f"{display} row {int(self.lines[index])}"


def outside_taxonomy(annotations: Annotations, classes: list[str]
                     ) -> dict[str, tuple[int, int]]:
    """Chosen classes the taxonomy does not list: class -> (annotations, first index)."""
    if not len(annotations):
        return {}
    inside = pc.is_in(annotations.labels, value_set=pa.array(classes, pa.string()))
    bad = np.flatnonzero(~np.asarray(inside.to_numpy(zero_copy_only=False), dtype=bool))
    if not len(bad):
        return {}
    encoded = pc.dictionary_encode(annotations.labels.take(pa.array(bad)))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values, first, counts = np.unique(codes, return_index=True, return_counts=True)
    names = encoded.dictionary.to_pylist()
    return {names[v]: (int(c), int(bad[f])) for v, f, c in zip(values, first, counts)}
