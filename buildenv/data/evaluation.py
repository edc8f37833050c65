"""The environment owns evaluation: which rows are held out, and the rows every model is scored on.

Held-out rows are chosen by a stable hash of a key (`evaluation.key`; default every declared
column of the label dataset but the label itself, so relabeling a row does not move it): a row
is held out when the first 53 bits of its key hash are
below `holdout` x 2^53. The hash is specified here and never changes meaning (`KEY_HASH`), so
the same key is held out in every version of the data, on every machine: a champion built on
last quarter's data never trained on a row this quarter holds out (as long as the key is a
stable id). `ctx.read` drops held-out rows before the training sees them; the build and
promotion score models on exactly those rows, read again through the gate (never stored).

Key hash v1, per row: start from 0; for each key column in order, `h = mix(h * G + c)` where
`G = 0x9E3779B97F4A7C15`, `mix` is SplitMix64's finaliser and `c` is the column value's 64-bit
code: integers, booleans, dates (days) and timestamps (microseconds, UTC) as their int64 value
through `mix`; floats through `mix` of their IEEE-754 bits (-0.0 as 0.0, every NaN alike);
strings as the first 8 bytes (little-endian) of BLAKE2b-64 of their UTF-8; null as
`0x6E756C6C6E756C6C`. Arithmetic is modulo 2^64.

Evaluation rows carry every served column, typed as the serving app receives them (numbers as
float64, everything else as Python objects, dates and timestamps as ISO 8601 text), and the
label; other datasets' served columns come in through `evaluation.join` (when not written:
joined on shared column names where those are unique, see `join_plan`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from buildenv.data.gate.errors import GateError
from buildenv.data.gate.gate import Gate
from buildenv.data.keys import key_text

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.env.spec import Environment

__all__ = ["KEY_HASH", "EvaluationRows", "evaluation_rows", "holdout_mask", "join_plan",
           "key_columns", "key_hash", "labeled_rows", "rows_dataset"]

KEY_HASH = "buildenv-key-hash-v1"
_ROW = "__buildenv_row__"
_G = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0x6E756C6C6E756C6C)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser over uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _G
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _column_codes(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = pc.dictionary_encode(array)
        words = [hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest()
                 for v in encoded.dictionary.to_pylist()]
        table = np.frombuffer(b"".join(words), dtype="<u8") if words else np.zeros(0, "<u8")
        indices = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        codes = table[indices].astype(np.uint64) if len(table) else np.zeros(len(array),
                                                                             np.uint64)
    elif pa.types.is_floating(kind):
        values = array.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        values = np.where(values == 0.0, 0.0, values)  # -0.0 is 0.0
        values = np.where(np.isnan(values), np.nan, values)
        codes = _mix(np.ascontiguousarray(values, dtype=np.float64).view(np.uint64))
    else:  # integers, booleans, dates, timestamps: their int64 value
        if pa.types.is_timestamp(kind):
            array = array.cast(pa.timestamp("us", tz=kind.tz))
        if pa.types.is_date(kind):  # days since 1970-01-01 (date32 casts only to int32)
            array = array.cast(pa.date32()).cast(pa.int32())
        values = array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        codes = _mix(values.astype(np.int64).view(np.uint64))
    return np.where(valid, codes, _NULL)


def key_hash(table: pa.Table, columns: list[str]) -> np.ndarray:
    """The v1 key hash of every row (uint64)."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            h = _mix(h * _G + _column_codes(table.column(name)))
    return h


def holdout_mask(table: pa.Table, columns: list[str], fraction: float) -> np.ndarray:
    """True for the rows held out for evaluation."""
    threshold = np.uint64(int(fraction * (1 << 53)))
    return (key_hash(table, columns) >> np.uint64(11)) < threshold


def rows_dataset(env: Environment) -> str | None:
    """The dataset whose rows are scored: the evaluation dataset, else the label's."""
    if env.label is None:
        return None
    return env.evaluation.dataset or env.label_dataset()


def key_columns(env: Environment) -> list[str]:
    """The columns whose hash holds a row out (empty when a separate dataset is used). With a
    label set the default is its key: the example's identity."""
    if env.label is None or env.evaluation.dataset is not None:
        return []
    if env.evaluation.key:
        return list(env.evaluation.key)
    label_set = env.label_set()
    if label_set is not None:
        return [label_set.key]
    assert env.label.dataset is not None  # the column form: the model requires both names
    return [c for c in env.datasets[env.label.dataset].columns if c != env.label.column]


def labeled_rows(table: pa.Table, key: str, labels: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """Which rows of `table` have a usable label in `labels` (columns `key` and `label`, one
    row per key, keys as `keys.key_text`), and those rows' labels, in table order."""
    index = pc.index_in(key_text(table.column(key)),
                        value_set=labels.column("key").combine_chunks())
    mask = np.asarray(index.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    taken = labels.column("label").take(pc.drop_null(index))
    if isinstance(taken, pa.ChunkedArray):
        taken = taken.combine_chunks()
    return mask, taken


@dataclass
class EvaluationRows:
    """The rows every model of the environment is scored on (kept in memory only)."""

    frame: Any  # pandas DataFrame: every served column, as serving receives it
    labels: Any  # numpy array
    rows: int
    method: dict[str, Any]  # how they were chosen: for lineage and messages
    digests: dict[str, str]  # dataset -> digest of the bytes read
    attributes: pa.Table | None = None  # the columns asked for (slices), as stored, row-aligned

    def describe(self) -> str:
        if self.method["method"] == "dataset":
            return f"the {self.rows:,} rows of evaluation dataset '{self.method['dataset']}'"
        return (f"the {self.rows:,} held-out rows ({self.method['holdout']:.0%} of "
                f"'{self.method['dataset']}' by key {', '.join(self.method['key'])})")


def _served(env: Environment, dataset: str) -> list[str]:
    return [n for n, c in env.datasets[dataset].columns.items() if c.serving]


def evaluation_rows(gate: Gate, env: Environment, labels: pa.Table | None = None,
                    attributes: tuple[str, ...] = ()) -> EvaluationRows:
    """Read (and verify) the evaluation rows through `gate`; GateError on bad bytes. When the
    label comes from a label set, `labels` holds its resolved labels (columns `key`, `label`):
    the rows are the held-out rows of its dataset that have a usable label. `attributes` are
    columns (served or not) of the rows' dataset or of a joined one, returned as stored and
    aligned with the rows, for slicing."""
    assert env.label is not None, "evaluation needs a label"
    source = rows_dataset(env)
    assert source is not None
    keys = key_columns(env)
    label_set = env.label_set()
    assert (label_set is None) == (labels is None), "a label set's evaluation needs its labels"
    label = label_set.key if label_set is not None else env.label.column
    assert label is not None  # the column form names its column
    joins, inferred = join_plan(env)
    own = [a for a in attributes if a in env.datasets[source].columns]
    wanted = list(dict.fromkeys(_served(env, source) + [label] + keys
                                + [k for ks in joins.values() for k in ks] + own))
    digests: dict[str, str] = {}
    with gate.open(source) as read:
        table = read.table([c for c in wanted if c in env.datasets[source].columns])
        assert read.digest is not None  # set once the bytes read were verified
        digests[source] = read.digest
    total = table.num_rows
    values = None
    if label_set is not None:
        assert labels is not None
        usable, values = labeled_rows(table, label_set.key, labels)
        table = table.filter(pa.array(usable))
    if keys:
        held = holdout_mask(table, keys, env.evaluation.fraction)
        table = table.filter(pa.array(held))
        if values is not None:
            values = values.filter(pa.array(held))
        method = {"method": "holdout", "dataset": source, "holdout": env.evaluation.fraction,
                  "key": keys, "hash": KEY_HASH, "of_rows": total}
    else:
        method = {"method": "dataset", "dataset": source}
    if label_set is not None:
        assert values is not None
        method["labels"] = env.label.labels
        labels_out = np.asarray(values.to_pylist(), dtype=object)
        exclude: set[str] = set()
    else:
        labels_out = table.column(label).to_numpy(zero_copy_only=False)
        exclude = {label}
    frame = _as_served(table, env, source, exclude=exclude)
    kept = {a: table.column(a) for a in own}
    for other, on in joins.items():
        theirs = [a for a in attributes if a not in kept
                  and a in env.datasets[other].columns and a not in on]
        with gate.open(other) as read:
            extra = read.table(list(dict.fromkeys(on + _served(env, other) + theirs)))
            assert read.digest is not None  # set once the bytes read were verified
            digests[other] = read.digest
        right = _as_served(extra.drop_columns([a for a in theirs if a not in _served(
            env, other)]), env, other, exclude=set())
        duplicated = int(right.duplicated(subset=on).sum())
        if duplicated and inferred:  # shared names that are not a key: not a lookup table
            method.setdefault("not_joined", []).append(other)
            continue
        if duplicated:
            raise GateError(gate.dataset_error(
                "BE020", f"evaluation.join.{other}: {duplicated:,} rows of '{other}' repeat a "
                f"key ({', '.join(on)}): the key must be unique to join evaluation rows", other))
        new = [c for c in right.columns if c not in frame.columns]
        if theirs:  # which row of `other` each evaluation row joined (-1: none)
            right = right.assign(**{_ROW: np.arange(len(right))})
            new.append(_ROW)
        frame = frame.merge(right[on + new], on=on, how="left", sort=False)
        if theirs:
            at = frame.pop(_ROW).to_numpy(dtype=np.float64, na_value=-1).astype(np.int64)
            found = pa.array(np.where(at < 0, 0, at), mask=at < 0) if len(at) else \
                pa.array([], pa.int64())
            for a in theirs:
                kept[a] = extra.column(a).take(found)
    served = [c for c in frame.columns if c not in exclude and any(
        c in ds.columns and ds.columns[c].serving for ds in env.datasets.values())]
    frame = frame[served]
    method["join"] = {k: list(v) for k, v in joins.items()
                      if k not in method.get("not_joined", [])}
    if inferred:
        method["join_inferred"] = True
    found_attributes = pa.table({a: kept[a] for a in attributes if a in kept}) \
        if attributes else None
    return EvaluationRows(frame.reset_index(drop=True), labels_out, len(frame), method, digests,
                          found_attributes)


def join_plan(env: Environment) -> tuple[dict[str, list[str]], bool]:
    """`evaluation.join` when written (True: inferred). Otherwise every other dataset that
    serves columns the evaluation rows lack and shares column names with them is joined on
    those names (the label column aside: it is what the rows are scored on, not a key) --
    used only when they are unique there (a lookup table, as in a star schema), so the SPEC's plain `ratings.merge(movies, on="movie_id")` trainings just work."""
    if env.evaluation.join:
        return dict(env.evaluation.join), False
    source = rows_dataset(env)
    assert source is not None and env.label is not None
    own = env.datasets[source].columns
    label = getattr(env.label, "column", None)  # never a key: the rows are scored on it
    plan = {}
    for name, ds in env.datasets.items():
        if name in (source, getattr(env.label, "dataset", None), env.evaluation.dataset):
            continue
        shared = [c for c in ds.columns if c in own and c != label]
        adds = [c for c, col in ds.columns.items() if col.serving and c not in own]
        if shared and adds:
            plan[name] = shared
    return plan, True


def _as_served(table: pa.Table, env: Environment, dataset: str, exclude: set[str]) -> Any:
    """A pandas frame of the columns as the serving app builds them from JSON requests."""
    import pandas as pd  # deferred: `history` and `rollback` import this module (the gates do)

    # deferred: the transforms' runner imports this module, and env.spec brings pydantic
    from buildenv.env.spec import NUMERIC_DTYPES

    columns = env.datasets[dataset].columns
    data = {}
    for name in table.column_names:
        if name in exclude:
            continue
        array = table.column(name)
        dtype = columns[name].dtype if name in columns else "string"
        if dtype in NUMERIC_DTYPES:
            data[name] = pd.Series(array.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                   dtype="float64")
        elif dtype in ("date", "timestamp"):
            text = pc.strftime(array, format="%Y-%m-%d" if dtype == "date"
                               else "%Y-%m-%dT%H:%M:%SZ")
            data[name] = pd.Series(text.to_pylist(), dtype=object)
        else:
            data[name] = pd.Series(array.to_pylist(), dtype=object)
    return pd.DataFrame(data)
