"""Example keys as text: how a label set's keys meet a dataset's key column.

A label export names an example by the value of the dataset's key column, but an export's JSON
may write `100123` or `"100123"` for an int64 key. Keys are therefore compared by their text:
integers in decimal, strings as they are. Label readers and the dataset side use this one
function, so they always agree.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["key_text"]


def key_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The key column as strings (nulls stay null)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_large_string(array.type) or (hasattr(pa.types, "is_string_view")
                                                and pa.types.is_string_view(array.type)):
        return array.cast(pa.string())
    if pa.types.is_string(array.type):
        return array
    if pa.types.is_integer(array.type):
        return pc.cast(array, pa.string())
    raise TypeError(f"a key column is an integer or string column, not {array.type}")
