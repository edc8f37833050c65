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

`import_files` writes each annotator's Label Studio import file (a JSON list of tasks whose
`data` holds the example's key and columns), the same bytes for the same tasks: the text of
`json.dumps(..., indent=1)`, spelled column by column (that encoder is pure Python with an
indent, minutes for a million tasks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Assignment", "assign", "import_file", "import_files"]


@dataclass
class Assignment:
    """Per annotator, the examples (keys) sent to them, in task order; and the examples that
    could not get `overlap` annotators without double exposure, with who was eligible."""

    tasks: dict[str, pa.Array]
    uncovered: pa.Array
    eligible: dict[str, int] = field(default_factory=dict)  # uncovered key -> eligible count
    # per annotator, where its tasks' keys are in the `keys` given to `assign`
    positions: dict[str, np.ndarray] = field(default_factory=dict)


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
    tasks, positions = {}, {}
    for j, name in enumerate(annotators):
        rows = np.flatnonzero((slots == j).any(axis=1))
        tasks[name] = keys.take(pa.array(rows))
        positions[name] = order[rows]
    missing = keys.take(pa.array(np.asarray(uncovered, np.int64)))
    return Assignment(tasks, missing, eligible_counts, positions)


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
    return import_files(key, tasks, {"": np.arange(tasks.num_rows)}, {"": meta})[""]


def import_files(key: str, rows: pa.Table, picks: dict[str, np.ndarray],
                 metas: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """Per name, the import file of the rows of `rows` at `picks[name]` (in that order) with
    `metas[name]`.

    The text is what `json.dumps(..., sort_keys=True, ensure_ascii=False, indent=1,
    default=str)` gives for the list of tasks. With an indent that encoder is pure Python
    (minutes for a million tasks), so each scalar column is spelled once, for every file
    (`_json_texts`), and each file is those texts joined into a template of one task by Arrow;
    a column of nested values takes the encoder."""
    # the rows any file uses, in table order, and where each is among them
    present = np.zeros(rows.num_rows, bool)
    for pick in picks.values():
        present[pick] = True
    used = np.flatnonzero(present)
    where = np.cumsum(present) - 1
    sub = rows.take(pa.array(used))
    fast = bool(len(used)) and not any(pa.types.is_nested(t) for t in rows.schema.types)
    texts = {name: _json_texts(sub.column(name)) for name in rows.column_names} if fast else {}
    files = {}
    for name, pick in picks.items():
        at = pa.array(where[pick])
        template = _template(rows.column_names, metas[name]) if fast and len(pick) else None
        if template is None:
            files[name] = _encoded(key, sub.take(at), metas[name])
            continue
        pieces = [p if isinstance(p, str) else texts[p[0]].take(at) for p in template]
        files[name] = _joined(pieces)
    return files


def _encoded(key: str, tasks: pa.Table, meta: dict[str, Any]) -> bytes:
    rows = tasks.to_pylist()
    out = [{"data": {key: row[key], **{k: _plain(v) for k, v in row.items() if k != key}},
            "meta": meta} for row in rows]
    text = json.dumps(out, sort_keys=True, ensure_ascii=False, indent=1, default=str)
    return (text + "\n").encode("utf-8")


_HOLE = "\x00buildenv-value-{}\x00"
_NEXT = ",\n "  # between two tasks of the list


def _template(names: list[str], meta: dict[str, Any]) -> list[str | tuple[str]] | None:
    """One task's text cut at its values: literal text, and (column,) where a value goes;
    None when a name or the meta holds a hole's text."""
    holes = {name: _HOLE.format(i) for i, name in enumerate(names)}
    one = json.dumps([{"data": holes, "meta": meta}], sort_keys=True, ensure_ascii=False,
                     indent=1, default=str)
    rest = one[len("[\n "):-len("\n]")]  # one task, at the list's indent
    quoted = {json.dumps(h, ensure_ascii=False): name for name, h in holes.items()}
    pieces: list[str | tuple[str]] = []
    while True:
        at = [(rest.find(q), q) for q in quoted if q in rest]
        if not at:
            break
        i, q = min(at)
        pieces += [rest[:i], (quoted[q],)]
        rest = rest[i + len(q):]
    if len(pieces) != 2 * len(names) or "\\u0000" in rest:
        return None
    return pieces + [rest + _NEXT]


def _joined(pieces: list[Any]) -> bytes:
    """The file: every row's task (the pieces joined element-wise), in one JSON list."""
    scalars = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in pieces]
    joined = pc.binary_join_element_wise(*scalars, pa.scalar("", pa.large_string()))
    offsets = np.frombuffer(joined.buffers()[1], np.int64)
    start, end = offsets[joined.offset], offsets[joined.offset + len(joined)]
    text = memoryview(joined.buffers()[2])[start:end - len(_NEXT)]
    return b"[\n " + bytes(text) + b"\n]\n"


def _json_texts(column: pa.ChunkedArray) -> pa.Array:
    """Each value's JSON text as the encoder above writes it (`_plain`, then `default=str`),
    as large strings: integers and booleans by Arrow, strings quoted by Arrow unless they need
    an escape, floats by `float.__repr__` (NaN and infinities spelled as `json` does)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = array.type
    if pa.types.is_integer(kind):
        text = pc.cast(array, pa.large_string())
    elif pa.types.is_boolean(kind):
        text = pc.if_else(array, pa.scalar("true", pa.large_string()),
                          pa.scalar("false", pa.large_string()))
    elif pa.types.is_floating(kind):
        values = pc.fill_null(array, 0).cast(pa.float64()).to_numpy(zero_copy_only=False)
        spelled = list(map(float.__repr__, values.tolist()))
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            spelled[i] = _SPECIAL[spelled[i]]
        text = pa.array(spelled, pa.large_string())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _quoted(array.cast(pa.large_string()))
    else:
        text = pa.array([_scalar_json(v) for v in array.to_pylist()], pa.large_string())
    return pc.if_else(array.is_null(), pa.scalar("null", pa.large_string()), text)


_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
# what json's encode_basestring escapes (ensure_ascii=False)
_ESCAPED = r'["\\\x00-\x1f]'


def _quoted(array: pa.Array) -> pa.Array:
    filled = pc.fill_null(array, "")
    text = pc.binary_join_element_wise(pa.scalar('"', pa.large_string()), filled,
                                       pa.scalar('"', pa.large_string()),
                                       pa.scalar("", pa.large_string()))
    escape = pc.match_substring_regex(filled, _ESCAPED)
    if pc.any(escape).as_py():
        at = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
        values = filled.take(pa.array(at)).to_pylist()
        redone = pa.array(list(map(json.encoder.encode_basestring, values)), pa.large_string())
        text = pc.replace_with_mask(text, escape, redone)
    return text


def _scalar_json(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False, default=str)


def _plain(value: Any) -> Any:
    """JSON-ready: dates and times as ISO text, everything else as it is."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
