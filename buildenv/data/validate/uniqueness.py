"""Exact duplicate counts for `unique: true` columns, streamed over batches in bounded memory.

Method: hash partitioning spilled to disk. Non-null values are buffered in memory until they
take `budget` bytes; a column that fits is counted there (numbers: one numpy sort; strings:
pyarrow's hash `value_counts`). Past the budget, every value goes to one of 64 Arrow IPC files
by the top 6 bits of a 64-bit hash, so equal values always share a file. Each file is then
counted on its own; a file still larger than the budget is split again by the next hash bits
(into as many files as its size needs, twice over), and one whose split does not shrink (a few
values repeated millions of times) is folded batch by batch into running `(value, count)`
pairs, whose size is the number of distinct values, not of rows.
Memory is about one budget per unique column plus one batch, whatever the row count; the
counts are exact (the hash only decides where a value goes, never whether two are equal).

Values are compared as stored: numbers by value (-0.0 equals 0.0, NaN equals NaN), dates and
timestamps by their ticks, strings byte for byte. Spill files live in a private temporary
directory that is removed when counting ends or fails, and when the counter is dropped.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

__all__ = ["BUDGET", "DuplicateCounter", "Duplicates"]

BUDGET = 64 << 20  # bytes of buffered values per column before spilling
FANOUT_BITS = 6  # the first split: 64 files (the total size is not known yet)
HASH_BITS = 60  # splits stop when this many of the hash's 64 bits are used
DOMINANT = 0.9  # a split whose largest part keeps this share of the rows did not shrink
_STRING_CHUNK_BYTES = 1 << 20  # string hashing works on this many bytes at a time
_LONG_STRING = 4096  # longer strings are hashed one at a time


@dataclass
class Duplicates:
    """How many values occur more than once, and in how many rows (all of their rows)."""

    values: int = 0
    rows: int = 0
    examples: list[tuple[Any, int]] = field(default_factory=list)  # (value, rows), most first
    spilled: bool = False
    error: str | None = None  # set when spilling failed: the counts are then unknown


class DuplicateCounter:
    """Feed `add` every batch's array of one column, then call `finish` once."""

    def __init__(self, budget: int | None = None, examples: int = 3,
                 spill_dir: str | None = None):
        self.budget = max(int(BUDGET if budget is None else budget), 1)
        self.examples = examples
        self.spill_dir = spill_dir
        self._kind: str | None = None  # "int", "float", "string"
        self._type: pa.DataType | None = None  # the column's value type, for examples
        self._chunks: list[Any] = []
        self._bytes = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._parts: _Partitions | None = None
        self._error: str | None = None
        # numbers: (first, last) of each batch while every batch is strictly increasing; keys
        # that only ever increase across disjoint batches are distinct without a sort
        self._runs: list[tuple[int, int]] | None = []

    # --- feeding ---------------------------------------------------------------------------
    def add(self, arr: pa.Array) -> None:
        if self._error is not None:
            return
        keys = self._normalize(arr)
        if not len(keys):
            return
        if self._runs is not None:
            if self._kind == "string" or (len(keys) > 1 and not (keys[1:] > keys[:-1]).all()):
                self._runs = None
            else:
                self._runs.append((int(keys[0]), int(keys[-1])))
        try:
            if self._parts is not None:
                self._parts.write(keys)
                return
            if self._kind == "string":  # a compact copy: a slice would keep the batch alive
                keys = pa.concat_arrays([keys])
            self._chunks.append(keys)
            self._bytes += _nbytes(keys)
            if self._bytes > self.budget:
                self._start_spilling()
        except OSError as exc:
            self._fail(exc)

    def _normalize(self, arr: pa.Array) -> Any:
        """Non-null values in a canonical form: int64 numpy keys, or an Arrow string array."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if arr.null_count:
            arr = pc.drop_null(arr)
        kind = _kind_of(arr.type)
        if self._kind is None:
            self._kind, self._type = kind, arr.type
        if kind == "string":
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                arr = arr.cast(pa.large_string())  # string_view
            return arr
        if kind == "float":
            values = _numbers(arr).astype(np.float64) + 0.0  # a copy; -0.0 -> 0.0
            values[np.isnan(values)] = np.nan  # one NaN bit pattern
            return values.view(np.int64)
        if kind == "int":
            return _numbers(arr).astype(np.int64)  # a compact copy, never a view of the batch
        raise TypeError(f"unique is not supported for {arr.type}")

    def _start_spilling(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="buildenv-unique-", dir=self.spill_dir)
        self._parts = _Partitions(self._tmp.name, 0, FANOUT_BITS,
                                  self._kind)  # type: ignore[arg-type]
        for keys in self._chunks:
            self._parts.write(keys)
        self._chunks, self._bytes = [], 0

    def _fail(self, exc: OSError) -> None:
        self._error = f"{type(exc).__name__}: {exc}"
        self._chunks, self._bytes = [], 0
        self._cleanup()

    def _cleanup(self) -> None:
        if self._parts is not None:
            self._parts.close()
            self._parts = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- counting ------------------------------------------------------------------------------
    def finish(self) -> Duplicates:
        if self._error is not None:
            return Duplicates(spilled=True, error=self._error)
        out = Duplicates(spilled=self._parts is not None)
        found: list[tuple[int, Any]] = []  # (rows, key) candidates for the examples
        try:
            if self._parts is None:
                chunks, self._chunks, self._bytes = self._chunks, [], 0
                if chunks and not self._increasing():
                    keys = _concat(chunks, self._kind)
                    del chunks  # the batches go as the copy is made: about one budget at a time
                    self._count(keys, out, found)
            else:
                parts, self._parts = self._parts, None
                parts.close()
                self._drain(parts, out, found)
        except OSError as exc:
            self._fail(exc)
            return Duplicates(spilled=True, error=self._error)
        finally:
            self._cleanup()
        found.sort(key=lambda item: (-item[0], item[1]))
        shown = found[: self.examples]
        out.examples = list(zip(self._display([k for _, k in shown]), [n for n, _ in shown]))
        return out

    def _increasing(self) -> bool:
        """Whether every batch was strictly increasing and their spans do not overlap."""
        if self._runs is None:
            return False
        runs = sorted(self._runs)
        return all(later[0] > earlier[1] for earlier, later in pairwise(runs))

    def _drain(self, parts: _Partitions, out: Duplicates, found: list[tuple[int, Any]]) -> None:
        for index in range(parts.fanout):
            rows, size = parts.rows[index], parts.bytes[index]
            if not rows:
                continue
            path = parts.path(index)
            if size <= self.budget or parts.used >= HASH_BITS:
                self._count(_read_all(path, self._kind), out, found)
            else:
                # as many parts as the size needs (twice over), by the next hash bits
                bits = min(FANOUT_BITS, HASH_BITS - parts.used,
                           max(1, math.ceil(math.log2(size / self.budget)) + 1))
                child = _Partitions(os.path.join(parts.folder, f"{index:02d}"), parts.used,
                                    bits, self._kind)  # type: ignore[arg-type]
                for keys in _read_batches(path, self._kind):
                    child.write(keys)
                child.close()
                os.unlink(path)
                if max(child.rows) >= DOMINANT * rows:
                    self._fold(child, out, found)
                else:
                    self._drain(child, out, found)
            if os.path.exists(path):
                os.unlink(path)

    def _fold(self, parts: _Partitions, out: Duplicates, found: list[tuple[int, Any]]) -> None:
        """A split that did not shrink: few values, many rows. Count each file batch by batch."""
        for index in range(parts.fanout):
            if not parts.rows[index]:
                continue
            running: pa.Table | None = None
            for keys in _read_batches(parts.path(index), self._kind):
                counts = _value_counts(keys, self._kind)
                running = counts if running is None else _merge_counts(running, counts)
            if running is not None:
                _tally(running.column("values").combine_chunks(),
                       _numbers(running.column("counts").combine_chunks()), self._kind,
                       out, found,
                       self.examples)
            os.unlink(parts.path(index))

    def _count(self, keys: Any, out: Duplicates, found: list[tuple[int, Any]]) -> None:
        if self._kind == "string":
            vc = pc.value_counts(keys)
            _tally(vc.field("values"), _numbers(vc.field("counts")), "string", out, found,
                   self.examples)
            return
        if len(keys) < 2:
            return
        ordered = keys if keys.flags.writeable and keys.flags.owndata else keys.copy()
        ordered.sort()  # in place: no second copy of the keys
        same = ordered[1:] == ordered[:-1]
        if not same.any():
            return
        edges = np.diff(np.concatenate(([0], same.view(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        counts = ends - starts + 1
        out.values += len(starts)
        out.rows += int(counts.sum())
        _top(ordered[starts], counts, found, self.examples)

    def _display(self, keys: list[Any]) -> list[Any]:
        if not keys:
            return []
        if self._kind == "string":
            return keys
        arr = np.asarray(keys, dtype=np.int64)
        if self._kind == "float":
            return list(arr.view(np.float64).tolist())
        if pa.types.is_integer(self._type):
            return list(arr.tolist())
        ticks = _int64_array(arr)
        assert self._type is not None  # set with the first batch, as _kind is
        if self._type.bit_width == 32:
            ticks = ticks.cast(pa.int32())
        return list(ticks.view(self._type).to_pylist())

    def __del__(self) -> None:
        try:
            self._cleanup()
        except Exception:  # interpreter shutdown: the directory's own finalizer runs
            pass


class _Partitions:
    """2**bits Arrow IPC stream files, one per value of the hash bits after the `after` used
    by the splits above."""

    def __init__(self, folder: str, after: int, bits: int, kind: str):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.kind = folder, kind
        self.used = after + bits
        self.fanout = 1 << bits
        self.shift = 64 - self.used
        self.rows = [0] * self.fanout
        self.bytes = [0] * self.fanout
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._schema: pa.Schema | None = None

    def path(self, index: int) -> str:
        return os.path.join(self.folder, f"{index:02d}.arrow")

    def write(self, keys: Any) -> None:
        part = ((_hash(keys, self.kind) >> np.uint64(self.shift)) & np.uint64(self.fanout - 1)
                ).astype(np.int64)
        order = np.argsort(part, kind="stable")
        sizes = np.bincount(part, minlength=self.fanout)
        if self.kind == "string":
            ordered = keys.take(_int64_array(order))
        else:
            ordered = _int64_array(keys[order])
        start = 0
        for index in np.flatnonzero(sizes):
            n = int(sizes[index])
            chunk = ordered.slice(start, n)
            start += n
            batch = pa.record_batch([chunk], names=["v"])
            writer = self._writers.get(int(index))
            if writer is None:
                writer = pa.ipc.new_stream(self.path(int(index)), batch.schema)
                self._writers[int(index)] = writer
            writer.write_batch(batch)
            self.rows[index] += n
            self.bytes[index] += chunk.nbytes

    def close(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()


# --- helpers ------------------------------------------------------------------------------------

def _kind_of(type_: pa.DataType) -> str:
    if pa.types.is_floating(type_):
        return "float"
    if (pa.types.is_integer(type_) or pa.types.is_date(type_) or pa.types.is_timestamp(type_)
            or pa.types.is_duration(type_) or pa.types.is_time(type_)):
        return "int"
    if (pa.types.is_string(type_) or pa.types.is_large_string(type_)
            or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(type_))):
        return "string"
    raise TypeError(f"unique is not supported for {type_}")


def _numbers(arr: pa.Array) -> np.ndarray:
    """The values of a null-free primitive Arrow array as a numpy view of its buffer.

    (`Array.to_numpy` and `pa.array(ndarray)` make pyarrow import pandas, about 0.5 s of CPU
    that counting never needs.)"""
    width = arr.type.bit_width // 8
    kind = "f" if pa.types.is_floating(arr.type) else (
        "u" if pa.types.is_unsigned_integer(arr.type) else "i")
    if not len(arr):
        return np.empty(0, f"{kind}{width}")
    return np.frombuffer(arr.buffers()[1], dtype=f"<{kind}{width}", count=len(arr),
                         offset=arr.offset * width)


def _int64_array(values: np.ndarray) -> pa.Array:
    """An Arrow int64 array over numpy values (see `_numbers` for why not pa.array)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _nbytes(keys: Any) -> int:
    return int(keys.nbytes)


def _concat(chunks: list[Any], kind: str | None) -> Any:
    """One array of the chunks' keys (numbers: a fresh, writable copy)."""
    if kind == "string":
        return pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
    return np.concatenate(chunks)


def _read_batches(path: str, kind: str | None) -> Iterator[Any]:
    with pa.OSFile(path, "rb") as source:
        reader = pa.ipc.open_stream(source)
        for batch in reader:
            column = batch.column(0)
            yield column if kind == "string" else _numbers(column)


def _read_all(path: str, kind: str | None) -> Any:
    return _concat(list(_read_batches(path, kind)), kind)


def _value_counts(keys: Any, kind: str | None) -> pa.Table:
    vc = pc.value_counts(keys if kind == "string" else _int64_array(keys))
    return pa.table({"values": vc.field("values"), "counts": vc.field("counts")})


def _merge_counts(running: pa.Table, more: pa.Table) -> pa.Table:
    merged = pa.concat_tables([running, more]).group_by("values").aggregate([("counts", "sum")])
    return merged.rename_columns(["values", "counts"])


def _tally(values: Any, counts: np.ndarray, kind: str | None, out: Duplicates,
           found: list[tuple[int, Any]], examples: int) -> None:
    repeated = np.flatnonzero(counts > 1)
    if not len(repeated):
        return
    out.values += len(repeated)
    out.rows += int(counts[repeated].sum())
    if kind == "string":
        keys = values.take(_int64_array(repeated)).to_pylist()
    else:
        keys = (_numbers(values) if isinstance(values, pa.Array) else np.asarray(values))[repeated]
    _top(keys, counts[repeated], found, examples)


def _top(keys: Any, counts: np.ndarray, found: list[tuple[int, Any]], examples: int) -> None:
    """Add the `examples` most repeated (then smallest) keys to `found`."""
    if not examples or not len(counts):
        return
    k = min(examples, len(counts))
    threshold = np.partition(counts, len(counts) - k)[len(counts) - k]
    for i in np.flatnonzero(counts >= threshold):
        key = keys[int(i)]
        found.append((int(counts[i]), key.item() if hasattr(key, "item") else key))
    found.sort(key=lambda item: (-item[0], item[1]))
    del found[examples:]


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
with np.errstate(over="ignore"):
    _POWERS = np.cumprod(np.full(_LONG_STRING, _GOLDEN, np.uint64))  # _GOLDEN ** (i + 1)


def _mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finalizer: every input bit moves every output bit."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def _hash(keys: Any, kind: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        if kind != "string":
            return _mix(keys.view(np.uint64) + _GOLDEN)
        return _string_hash(keys)


def _string_hash(arr: pa.Array) -> np.ndarray:
    """A polynomial hash of each string's bytes (wrapping uint64 arithmetic), then mixed.

    Vectorised over about `_STRING_CHUNK_BYTES` of strings at a time, so temporaries stay
    bounded; strings longer than `_LONG_STRING` bytes (rare) are hashed one by one with blake2b.
    """
    n = len(arr)
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=offset_type)[arr.offset: arr.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data_buffer = arr.buffers()[2]
    data = (np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None
            else np.empty(0, np.uint8))
    lengths = np.diff(offsets)
    long = lengths > _LONG_STRING
    if long.any():
        out = np.empty(n, np.uint64)
        for i in np.flatnonzero(long):
            digest = hashlib.blake2b(data[offsets[i]:offsets[i + 1]].tobytes(), digest_size=8)
            out[i] = np.uint64(int.from_bytes(digest.digest(), "little"))
        short = np.flatnonzero(~long)
        if len(short):
            out[short] = _string_hash(arr.take(_int64_array(short)))
        return out
    out = np.empty(n, np.uint64)
    start = 0
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + _STRING_CHUNK_BYTES, "right")) - 1
        stop = min(max(stop, start + 1), n)
        out[start:stop] = _hash_strings(data, offsets[start:stop + 1], lengths[start:stop])
        start = stop
    return _mix(out ^ (lengths.astype(np.uint64) * _GOLDEN))


def _hash_strings(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    first, last = int(offsets[0]), int(offsets[-1])
    h = np.zeros(len(lengths), np.uint64)
    if last == first:
        return h
    chunk = data[first:last].astype(np.uint64) + np.uint64(1)
    starts = offsets[:-1] - first
    position = np.arange(last - first, dtype=np.int64) - np.repeat(starts, lengths)
    weighted = chunk * _POWERS[position]
    nonempty = lengths > 0
    h[nonempty] = np.add.reduceat(weighted, starts[nonempty])
    return h
