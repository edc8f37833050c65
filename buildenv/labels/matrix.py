"""The label matrix of a computed label set, cached per (function, data file).

Applying labeling functions is the costly part, and most of it does not change between locks:
one function's votes on one file of the dataset are an **object** keyed by the function's
digest and the file's, and the examples' keys of a file are an object keyed by the file's
digest and the key column. Adding a day to a partitioned dataset applies every function to
that day only; changing one function applies that function only. Objects are one-column
Parquet files under `<state>/labels/votes/` and `<state>/labels/keys/`, written atomically
beside a record of their digest; a read verifies the bytes against it (a damaged object is a
miss). `assemble` puts the objects of every file together, in the dataset's file order, as a
matrix of class indices (-1: abstain) and the keys of its rows.

Reading a thousand vote objects and finding the distinct vote rows of ten million rows costs
seconds on every lock, so each file's votes are also kept **coded** (`<state>/labels/blocks/`,
one object per data file, keyed by the functions' digests in order, the file's digest and the
taxonomy's classes): the file's distinct vote rows (patterns, packed into one integer each),
how many rows have each, and each row's pattern. A lock then reads one block per file and
merges the few patterns of every file; a new file codes only its own block. The merged
patterns are `label_model.patterns` of the whole matrix, in the same order, so the models and
the figures come out bit for bit as from the matrix itself. A file with votes outside the
taxonomy is not stored coded (those votes are counted from its objects each time).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from buildenv.core.atomic import atomic_write_bytes, atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.tempdirs import scratch_dir
from buildenv.data.lock.derived import Pinned
from buildenv.labels.label_model import Patterns, patterns

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project

__all__ = ["ArrayStore", "Block", "BlockStore", "FileVotes", "LabelMatrix", "assemble",
           "block_key", "coded", "data_files", "key_key", "merged", "plain_integers", "vote_key",
           "write_array"]

FORMAT = 1
BLOCK_FORMAT = 1


def vote_key(function_digest: str, file_digest: str) -> str:
    return digest_json({"votes": FORMAT, "function": function_digest, "file": file_digest})


def key_key(file_digest: str, column: str) -> str:
    return digest_json({"keys": FORMAT, "file": file_digest, "column": column})


def block_key(function_digests: list[str], file_digest: str, classes: list[str],
              column: str) -> str:
    """A file's coded votes: by the functions' digests in the matrix's column order, the
    file, the classes the codes index and the key column."""
    return digest_json({"block": BLOCK_FORMAT, "functions": function_digests,
                        "file": file_digest, "classes": classes, "column": column})


def data_files(pin: Pinned) -> list[tuple[str, str, int | None]]:
    """(path, digest, rows) of each file of a dataset version, in order (one file: path "")."""
    if pin.manifest is not None:
        return [(f.path, f.digest, f.rows) for f in pin.manifest.files]
    return [("", pin.digest, None)]


def write_array(path: Path, array: pa.Array) -> None:
    """One column `v`, written the same way every time (the objects' bytes repeat)."""
    pq.write_table(pa.table({"v": array}), path, compression="zstd", use_dictionary=True,
                   write_statistics=False)


class ArrayStore:
    """One-column Parquet objects by key (votes, keys), verified on read."""

    def __init__(self, project: Project, kind: str):
        self.root = project.data_state_dir / "labels" / kind
        self.scratch = scratch_dir(project.data_state_dir)

    def path(self, key: str) -> Path:
        hexkey = key.split(":", 1)[1]
        return self.root / hexkey[:2] / f"{hexkey}.parquet"

    def has(self, key: str) -> bool:
        path = self.path(key)
        return path.is_file() and path.with_suffix(".json").is_file()

    def put(self, key: str, source: Path) -> None:
        """Move a freshly written object into the store (same filesystem) and record it."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        os.replace(source, path)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "rows": rows}),
            scratch=self.scratch)  # swept by the next build: a kill leaves nothing here

    def alias(self, key: str, other: str) -> bool:
        """Store object `key` under key `other` too (a hard link, and its record); False when
        `key` is not stored. Votes are keyed by the files their functions read only once they
        ran (`compile.label_functions`)."""
        if not self.has(key):
            return False
        target = self.path(other)
        if self.has(other):
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.link(self.path(key), tmp)
        os.replace(tmp, target)
        atomic_write_text(target.with_suffix(".json"),
                          self.path(key).with_suffix(".json").read_text(), scratch=self.scratch)
        return True

    def put_bytes(self, key: str, data: bytes, rows: int) -> None:
        """Store an object made in this process: its bytes, then the record that makes it
        readable (a kill in between leaves a miss)."""
        atomic_write_bytes(self.path(key), data, durable=False, scratch=self.scratch)
        atomic_write_text(self.path(key).with_suffix(".json"), json.dumps(
            {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "rows": rows}),
            scratch=self.scratch)

    def verified(self, key: str) -> bytes | None:
        """The object's bytes, None when it is missing or they are not the recorded ones."""
        path = self.path(key)
        try:
            record = json.loads(path.with_suffix(".json").read_text())
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or \
                record.get("digest") != "sha256:" + hashlib.sha256(data).hexdigest():
            return None
        return data

    def read(self, key: str) -> pa.Array | None:
        """The object's column, None when it is missing or its bytes are not the recorded
        ones."""
        data = self.verified(key)
        if data is None:
            return None
        # the file's own reader: `read_table`'s dataset layer costs more than the read itself
        # for a cached object (one per function and data file: a thousand in a lock)
        column = pq.ParquetFile(io.BytesIO(data)).read(columns=["v"]).column("v")
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


@dataclass(frozen=True)
class Block:
    """One data file's votes, coded: its distinct vote rows packed into integers (ascending),
    how many rows have each, and each row's position among them."""

    patterns: np.ndarray  # int64, ascending
    counts: np.ndarray  # int64
    index: np.ndarray  # one per row, into `patterns`
    numbers: np.ndarray | None = None  # the rows' keys as int64, when plainly integers


class BlockStore(ArrayStore):
    """Coded blocks (`Block`) by key: the row positions (and the keys as integers) as Parquet
    columns, the patterns and their counts in the file's metadata, so one verified read gives
    all."""

    def put_block(self, key: str, block: Block) -> None:
        narrow = np.uint16 if len(block.patterns) <= 1 << 16 else np.int32
        columns = {"v": pa.array(block.index.astype(narrow))}
        if block.numbers is not None:
            columns["k"] = pa.array(block.numbers)
        table = pa.table(columns).replace_schema_metadata(
            {"patterns": json.dumps(block.patterns.tolist()),
             "counts": json.dumps(block.counts.tolist())})
        sink = io.BytesIO()
        # keys as deltas: an id column's run of integers takes a few bytes, not 8 a row
        pq.write_table(table, sink, compression="zstd", use_dictionary=["v"],
                       column_encoding={"k": "DELTA_BINARY_PACKED"} if "k" in columns else None,
                       write_statistics=False)
        self.put_bytes(key, sink.getvalue(), len(block.index))

    def read_block(self, key: str) -> Block | None:
        data = self.verified(key)
        if data is None:
            return None
        try:
            file = pq.ParquetFile(io.BytesIO(data))
            meta = file.schema_arrow.metadata or {}
            found = np.array(json.loads(meta[b"patterns"]), np.int64)
            counts = np.array(json.loads(meta[b"counts"]), np.int64)
            table = file.read()
            index = table.column("v").to_numpy()
            numbers = table.column("k").to_numpy() if "k" in table.column_names else None
        except (KeyError, ValueError, TypeError, pa.ArrowException):
            return None
        if len(found) != len(counts) or int(counts.sum()) != len(index):
            return None
        return Block(found, counts, index, numbers)


@dataclass(frozen=True)
class FileVotes:
    """What is missing for one data file: the functions to apply, and whether its keys are
    needed."""

    path: str
    digest: str
    functions: tuple[str, ...]
    keys: bool


class LabelMatrix:
    """Each row's example key and votes (class index, -1 abstains), with the votes outside
    the taxonomy counted per function. Held as the matrix, or as its patterns (`found`) when
    assembled from coded blocks: the matrix is then made only if someone asks for it."""

    def __init__(self, keys: pa.Array, votes: np.ndarray | None, functions: list[str],
                 classes: list[str], outside: dict[str, dict[str, int]],
                 found: Patterns | None = None, numbers: np.ndarray | None = None):
        assert votes is not None or found is not None
        self.keys = keys  # string: each row's example key
        self.numbers = numbers  # the keys as int64 when known to be plainly integers
        self.functions = functions
        self.classes = classes
        self.outside = outside  # function -> class outside the taxonomy -> votes
        self._votes = votes
        self._found = found

    @property
    def votes(self) -> np.ndarray:
        """(rows, functions) class index, -1 abstains."""
        if self._votes is None:
            assert self._found is not None
            self._votes = self._found.rows[self._found.inverse]
        return self._votes

    def patterns(self) -> Patterns:
        """The distinct vote rows, their counts and each row's (`label_model.patterns`)."""
        if self._found is None:
            assert self._votes is not None
            self._found = patterns(self._votes, len(self.classes))
        return self._found

    @property
    def rows(self) -> int:
        if self._votes is not None:
            return int(self._votes.shape[0])
        assert self._found is not None
        return len(self._found.inverse)


def missing(pin: Pinned, digests: dict[str, str], column: str, votes: ArrayStore,
            keys: ArrayStore) -> list[FileVotes]:
    """The (function, file) pairs and keys not in the stores yet."""
    out = []
    for path, file_digest, _ in data_files(pin):
        functions = tuple(name for name, digest in digests.items()
                          if not votes.has(vote_key(digest, file_digest)))
        need_keys = not keys.has(key_key(file_digest, column))
        if functions or need_keys:
            out.append(FileVotes(path, file_digest, functions, need_keys))
    return out


def _dictionary_codes(column: pa.DictionaryArray, index: pa.Array,
                      outside: dict[str, int]) -> np.ndarray:
    """Each row's class code (-1: abstains or outside the taxonomy, the latter counted per
    value in `outside`) of a dictionary-encoded vote column."""
    values = column.dictionary
    codes = pc.fill_null(pc.index_in(values, value_set=index), -1).to_numpy(
        zero_copy_only=False).astype(np.int64)
    at = pc.fill_null(column.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    valid = at >= 0
    bad = values.is_valid().to_numpy(zero_copy_only=False) & (codes < 0)
    if bad.any():
        counted = np.bincount(at[valid], minlength=len(values))
        for i in np.flatnonzero(bad & (counted > 0)).tolist():
            value = str(values[i].as_py())
            outside[value] = outside.get(value, 0) + int(counted[i])
    out: np.ndarray = np.where(valid, codes[np.where(valid, at, 0)], -1)
    return out


def _packable(functions: int, classes: int) -> bool:
    """Whether a vote row fits in one integer: a digit per function, 0 abstains."""
    return functions > 0 and (classes + 1) ** functions < 2 ** 62


def plain_integers(keys: pa.Array) -> np.ndarray | None:
    """The keys as int64 when every one is an integer written plainly (an id column's text:
    "007" is not 7), else None."""
    if keys.null_count:
        return None
    if not len(keys):
        return np.zeros(0, np.int64)
    try:
        numbers = pc.cast(keys, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if not pc.all(pc.equal(pc.cast(numbers, pa.string()), keys)).as_py():
        return None
    values: np.ndarray = numbers.to_numpy()
    return values


def coded(votes: np.ndarray, classes: int, numbers: np.ndarray | None = None) -> Block:
    """A file's votes (rows, functions) as a block; the packing of `label_model.patterns`."""
    base, width = classes + 1, votes.shape[1]
    packed = np.zeros(len(votes), np.int64)
    for column in range(width):
        packed *= base
        packed += votes[:, column]
        packed += 1
    if base ** width <= max(len(votes), 1 << 16):
        counts = np.bincount(packed, minlength=base ** width)
        present = np.flatnonzero(counts)
        at = np.cumsum(counts > 0) - 1
        return Block(present.astype(np.int64), counts[present].astype(np.int64),
                     at[packed].astype(np.int64), numbers)
    found, index, counted = np.unique(packed, return_inverse=True, return_counts=True)
    return Block(found.astype(np.int64), counted.astype(np.int64),
                 index.reshape(-1).astype(np.int64), numbers)


def merged(blocks: list[Block], classes: int, functions: int, dtype: type) -> Patterns:
    """The patterns of the files' rows one after another: the same rows, counts and order as
    `label_model.patterns` of their matrix (patterns ascending by packed value)."""
    base = classes + 1
    if not blocks:
        return Patterns(np.zeros((0, functions), dtype), np.zeros(0, np.int64),
                        np.zeros(0, np.int64))
    present = np.unique(np.concatenate([b.patterns for b in blocks]))
    counts = np.zeros(len(present), np.int64)
    inverse = np.empty(sum(len(b.index) for b in blocks), np.int64)
    start = 0
    for block in blocks:
        at = np.searchsorted(present, block.patterns)
        counts[at] += block.counts  # a block's patterns are distinct
        np.take(at, block.index, out=inverse[start:start + len(block.index)])
        start += len(block.index)
    rows: np.ndarray = np.empty((len(present), functions), dtype)
    rest = present.copy()
    for column in range(functions - 1, -1, -1):
        rows[:, column] = rest % base - 1
        rest //= base
    return Patterns(rows, counts, inverse)


def _file_votes(names: list[str], digests: dict[str, str], file_digest: str, rows: int,
                index: pa.Array, width: type, votes: ArrayStore,
                outside: dict[str, dict[str, int]]) -> np.ndarray | None:
    """One file's votes (rows, functions) from its objects; None when one is missing."""
    block: np.ndarray = np.full((rows, len(names)), -1, width)
    for j, name in enumerate(names):
        column_votes = votes.read(vote_key(digests[name], file_digest))
        if column_votes is None or len(column_votes) != rows:
            return None
        if pa.types.is_dictionary(column_votes.type):
            # a few distinct votes: their codes, then each row's by its index
            block[:, j] = _dictionary_codes(column_votes, index, outside.setdefault(
                name, {})).astype(width)
            if not outside[name]:
                del outside[name]
            continue
        codes = pc.index_in(column_votes, value_set=index)
        bad = pc.and_(column_votes.is_valid(), codes.is_null())
        if pc.any(bad).as_py():
            counted = pc.value_counts(column_votes.filter(bad))
            mine = outside.setdefault(name, {})
            for value, n in zip(counted.field(0).to_pylist(), counted.field(1).to_pylist()):
                mine[str(value)] = mine.get(str(value), 0) + int(n)
        block[:, j] = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(width)
    return block


def assemble(pin: Pinned, digests: dict[str, str], column: str, classes: list[str],
             votes: ArrayStore, keys: ArrayStore, blocks: BlockStore | None = None
             ) -> LabelMatrix | None:
    """The matrix from the stores; None when an object is missing or damaged (rebuild it).
    With `blocks`, each file's coded block is read (or coded from its objects and stored),
    and the matrix is held as its patterns."""
    names = list(digests)
    index = pa.array(classes, pa.string())
    width = np.int8 if len(classes) < 127 else np.int16
    use_blocks = blocks is not None and _packable(len(names), len(classes))
    order = [digests[n] for n in names]
    parts: list[np.ndarray] = []
    found_blocks: list[Block] = []
    key_parts: list[pa.Array] = []
    outside: dict[str, dict[str, int]] = {}
    for _, file_digest, _ in data_files(pin):
        found_keys = keys.read(key_key(file_digest, column))
        if found_keys is None:
            return None
        key_parts.append(found_keys)
        key = block_key(order, file_digest, list(classes), column)
        if use_blocks:
            assert blocks is not None
            block = blocks.read_block(key)
            if block is not None and len(block.index) == len(found_keys):
                found_blocks.append(block)
                continue
        mine: dict[str, dict[str, int]] = {}
        part = _file_votes(names, digests, file_digest, len(found_keys), index, width, votes,
                           mine)
        if part is None:
            return None
        for name, counts in mine.items():
            into = outside.setdefault(name, {})
            for value, n in counts.items():
                into[value] = into.get(value, 0) + n
        if not use_blocks:
            parts.append(part)
            continue
        assert blocks is not None
        block = coded(part, len(classes), plain_integers(found_keys))
        if not mine:  # a stored block stands for votes all inside the taxonomy
            blocks.put_block(key, block)
        found_blocks.append(block)
    all_keys = pa.concat_arrays(key_parts) if key_parts else pa.array([], pa.string())
    if use_blocks:
        numbers = [b.numbers for b in found_blocks if b.numbers is not None]
        return LabelMatrix(all_keys, None, names, list(classes), outside,
                           merged(found_blocks, len(classes), len(names), width),
                           np.concatenate(numbers) if numbers and len(numbers) == len(
                               found_blocks) else None)
    matrix = np.concatenate(parts) if parts else np.zeros((0, len(names)), width)
    return LabelMatrix(all_keys, matrix, names, list(classes), outside)
