"""Annotation tasks on request: which examples go to which annotators, with no double exposure
by construction.

`assign` gives each chosen example to `overlap` different annotators: examples are shuffled by
the seed and dealt round-robin (so every annotator gets the same share, give or take one); an
annotator who may not see an example -- they labeled it under another UI version of any label
set of the multiverse, or already in the label set the tasks are for -- is replaced by the
least-loaded eligible annotator. An example that cannot get `overlap` eligible annotators is
listed, never silently dropped or given to someone who saw it. Only the examples with a
conflict go through the slow path, so a million examples and twenty annotators cost a shuffle
and a few vectorised passes.

`import_file` writes one annotator's Label Studio import file (a JSON list of tasks whose `data`
holds the example's key and columns), the same bytes for the same tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Assignment", "assign", "import_file"]


@dataclass
class Assignment:
    """Per annotator, the examples (keys) sent to them, in task order; and the examples that
    could not get `overlap` annotators without double exposure, with who was eligible."""

    tasks: dict[str, pa.Array]
    uncovered: pa.Array
    eligible: dict[str, int] = field(default_factory=dict)  # uncovered key -> eligible count


def assign(keys: pa.Array, annotators: list[str], overlap: int, seen: pa.Table,
           seed: int) -> Assignment:
    """`keys`: distinct example keys (strings); `seen`: columns `key`, `annotator` -- pairs
    that may not be sent. Deterministic for `seed`."""
    n, a = len(keys), len(annotators)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    keys = keys.take(pa.array(order))
    # base[i, r]: annotator (i * overlap + r) mod a -- round robin, balanced
    slots = (np.arange(n, dtype=np.int64)[:, None] * overlap
             + np.arange(overlap, dtype=np.int64)[None, :]) % a
    blocked = _blocked(keys, annotators, seen)  # (row, annotator) pairs, as sorted codes
    bad_rows: np.ndarray = np.zeros(n, bool)
    if len(blocked):
        codes = (np.arange(n, dtype=np.int64)[:, None] * a + slots).ravel()
        bad_rows = np.asarray(np.isin(codes, blocked).reshape(n, overlap).any(axis=1))
    load = np.bincount(slots[~bad_rows].ravel(), minlength=a).astype(np.int64)
    uncovered: list[int] = []
    eligible_counts: dict[str, int] = {}
    blocked_by_row: dict[int, set[int]] = {}
    for code in blocked:
        row = int(code // a)
        if bad_rows[row]:
            blocked_by_row.setdefault(row, set()).add(int(code % a))
    for row in (int(r) for r in np.flatnonzero(bad_rows)):
        banned = blocked_by_row.get(row, set())
        eligible = [j for j in range(a) if j not in banned]
        if len(eligible) < overlap:
            uncovered.append(int(row))
            eligible_counts[str(keys[row].as_py())] = len(eligible)
            slots[row] = -1
            continue
        chosen = sorted(eligible, key=lambda j: (int(load[j]), j))[:overlap]
        slots[row] = chosen
        load[chosen] += 1
    tasks = {}
    for j, name in enumerate(annotators):
        rows = np.flatnonzero((slots == j).any(axis=1))
        tasks[name] = keys.take(pa.array(rows))
    missing = keys.take(pa.array(np.asarray(uncovered, np.int64)))
    return Assignment(tasks, missing, eligible_counts)


def _blocked(keys: pa.Array, annotators: list[str], seen: pa.Table) -> np.ndarray:
    """Sorted codes row * len(annotators) + annotator of the pairs `seen` forbids."""
    if not seen.num_rows or not len(keys):
        return np.zeros(0, np.int64)
    rows = pc.index_in(seen.column("key"), value_set=keys)
    who = pc.index_in(seen.column("annotator"), value_set=pa.array(annotators, pa.string()))
    both = pc.and_(rows.is_valid(), who.is_valid())
    r = rows.filter(both).to_numpy(zero_copy_only=False).astype(np.int64)
    w = who.filter(both).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.unique(r * len(annotators) + w)


def import_file(key: str, tasks: pa.Table, meta: dict[str, Any]) -> bytes:
    """A Label Studio import file: one task per row of `tasks` (its columns, the key first),
    with `meta` (label set, UI version, annotator) on every task."""
    rows = tasks.to_pylist()
    out = [{"data": {key: row[key], **{k: _plain(v) for k, v in row.items() if k != key}},
            "meta": meta} for row in rows]
    text = json.dumps(out, sort_keys=True, ensure_ascii=False, indent=1, default=str)
    return (text + "\n").encode("utf-8")


def _plain(value: Any) -> Any:
    """JSON-ready: dates and times as ISO text, everything else as it is."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
