"""The Parquet form of a label set: one row per annotation.

Columns: `key` (integer or string), `label` (string), `annotator` (string or integer),
`ui_version` and `taxonomy_version` (string or integer; null `ui_version` takes the label set's
`ui_version`), `created_at` (timestamp, or ISO 8601 text; may be null). A row with a null label
is an annotation without a choice (counted, skipped). Rows made under another taxonomy version
than the label set's are refused: declare them as their own label set and `reuse` it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.formats import parse_timestamps
from buildenv.data.keys import key_text
from buildenv.labels.annotations import Annotations, ExportError

# Deferred imports (pyarrow): pyarrow.parquet is a quarter of a second of `buildenv lock`'s start-
# up; only Parquet label sets need it.

__all__ = ["COLUMNS", "read_parquet_labels"]

COLUMNS = ("key", "label", "annotator", "ui_version", "taxonomy_version", "created_at")


def _text(array: pa.Array, name: str, display: str) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) or \
            pa.types.is_integer(array.type):
        return array.cast(pa.string())
    raise ExportError("BE855", f"{display}: column `{name}` is {array.type}; it holds text "
                      "(or integers)")


def read_parquet_labels(source: Any, *, ui_version: str | None, taxonomy_version: str,
                        display: str) -> Annotations:
    """Annotations of a Parquet label file (`source.open()` gives a random-access file)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source.open())
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ExportError("BE855", f"{display}: not a Parquet file "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from None
    missing = [c for c in ("key", "label", "annotator") if c not in names]
    if missing:
        raise ExportError("BE855", f"{display}: missing column(s) {', '.join(missing)} (the "
                          f"Parquet form has {', '.join(COLUMNS)})")
    wanted = [c for c in COLUMNS if c in names]
    parts: dict[str, list[pa.Array]] = {c: [] for c in COLUMNS}
    lines: list[np.ndarray] = []
    rows = empty = 0
    try:
        for batch in pf.iter_batches(columns=wanted, batch_size=262_144):
            n = batch.num_rows
            index = np.arange(rows + 1, rows + n + 1, dtype=np.int64)  # data rows, 1-based
            rows += n
            cols = {c: batch.column(batch.schema.get_field_index(c)) for c in wanted}
            try:
                key = key_text(cols["key"])
            except TypeError as exc:
                raise ExportError("BE855", f"{display}: column `key`: {exc}") from None
            if key.null_count:
                first = int(np.flatnonzero(~np.asarray(key.is_valid())).min())
                raise ExportError("BE855", f"{display}: row {rows - n + first + 1}: `key` is "
                                  "null")
            label = _text(cols["label"], "label", display)
            keep = np.asarray(label.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            empty += int((~keep).sum())
            mask = pa.array(keep)
            annotator = _text(cols["annotator"], "annotator", display)
            if pc.any(pc.and_(annotator.is_null(), mask)).as_py():
                first = int(np.flatnonzero(keep & ~np.asarray(annotator.is_valid())).min())
                raise ExportError("BE855", f"{display}: row {rows - n + first + 1}: "
                                  "`annotator` is null")
            ui = (_text(cols["ui_version"], "ui_version", display) if "ui_version" in cols
                  else pa.nulls(n, pa.string()))
            if ui_version is not None:
                ui = pc.fill_null(ui, ui_version)
            if "taxonomy_version" in cols:
                tax = _text(cols["taxonomy_version"], "taxonomy_version", display)
                other = pc.fill_null(pc.not_equal(tax, taxonomy_version), False)
                other = np.asarray(other.to_numpy(zero_copy_only=False), dtype=bool) & keep
                if other.any():
                    first = int(np.flatnonzero(other).min())
                    raise ExportError("BE856", f"{display}: row {rows - n + first + 1} (and "
                                      f"{int(other.sum()) - 1} more) were made under taxonomy "
                                      f"version '{tax[first].as_py()}', not "
                                      f"'{taxonomy_version}'; declare them as their own label "
                                      "set and `reuse` it with a mapping")
            created = (_timestamps(cols["created_at"], display) if "created_at" in cols
                       else pa.nulls(n, pa.timestamp("us", tz="UTC")))
            for name, array in (("key", key), ("label", label), ("annotator", annotator),
                                ("ui_version", ui), ("created_at", created)):
                parts[name].append(array.filter(mask))
            lines.append(index[keep])
    except (pa.ArrowException, OSError) as exc:
        raise ExportError("BE855", f"{display}: cannot read the Parquet file "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from None

    def joined(name: str, kind: pa.DataType) -> pa.Array:
        return pa.concat_arrays(parts[name]) if parts[name] else pa.array([], kind)

    return Annotations(
        keys=joined("key", pa.string()), labels=joined("label", pa.string()),
        annotators=joined("annotator", pa.string()),
        ui_versions=joined("ui_version", pa.string()),
        created_at=joined("created_at", pa.timestamp("us", tz="UTC")),
        lines=np.concatenate(lines) if lines else np.zeros(0, np.int64), tasks=rows,
        empty=empty, unit="row")


def _timestamps(array: pa.Array, display: str) -> pa.Array:
    utc = pa.timestamp("us", tz="UTC")
    if pa.types.is_timestamp(array.type):
        if array.type.tz is None:
            array = array.cast(pa.timestamp(array.type.unit)).cast(pa.timestamp(array.type.unit,
                                                                                  tz="UTC"))
        return array.cast(utc)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        try:
            batch = parse_timestamps(pa.RecordBatch.from_arrays([array.cast(pa.string())],
                                                                names=["t"]), ["t"])
            return batch.column(0)
        except (pa.ArrowException, ValueError):
            raise ExportError("BE855", f"{display}: `created_at` holds text that is not ISO "
                              "8601") from None
    raise ExportError("BE855", f"{display}: column `created_at` is {array.type}; it holds "
                      "timestamps")
