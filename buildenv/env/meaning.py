"""What an environment file says, without its cosmetic text: one digest per parsed file.

Two versions of a file whose parsed documents are equal but for comments, layout, quoting and
the descriptions (of the environment, a dataset, a column: free text that the environment's
digest leaves out, `resolve.canonical_environment`) resolve to the same environment, so a lock
made from one is the lock of the other. The lock's plan (`data.lock.quick`) uses this to keep
answering a relock after such an edit. The digest is exact where it is not sure: key order
counts, a description that is not text (or null) counts, and a document holding anything but
mappings, lists, text, numbers, booleans and nulls (a date, a set) has no meaning digest.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the lock's plan imports this module before any YAML is read: keep yaml out
    from buildenv.env.loader import Located

__all__ = ["file_meaning"]

_PLAIN = (str, int, float, bool, type(None))


def file_meaning(located: Located) -> str | None:
    """The digest of `located`'s document with every description left out; None when the
    file had a problem (a duplicate key), is not a mapping, or holds a value of another kind."""
    data = located.data
    if located.problems or not isinstance(data, dict) or not _plain(data):
        return None
    document = _without(data, "description")
    datasets = document.get("datasets")
    if isinstance(datasets, dict):
        document["datasets"] = datasets = dict(datasets)
        for name, dataset in datasets.items():
            if isinstance(dataset, dict):
                datasets[name] = dataset = _without(dataset, "description")
                columns = dataset.get("columns")
                if isinstance(columns, dict):
                    dataset["columns"] = {c: _without(col, "description")
                                          if isinstance(col, dict) else col
                                          for c, col in columns.items()}
    # repr keeps key order and tells 1, 1.0, True and "1" apart; every value is plain (above)
    return hashlib.sha256(repr(document).encode("utf-8")).hexdigest()


def _without(mapping: dict[Any, Any], key: str) -> dict[Any, Any]:
    """`mapping` without `key` when its value is text or null (what a description accepts);
    a description of another kind stays, so that it counts."""
    if isinstance(mapping.get(key), str | None) and key in mapping:
        return {k: v for k, v in mapping.items() if k != key}
    return dict(mapping)


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)
