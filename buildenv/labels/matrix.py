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

from buildenv.core.atomic import atomic_write_text
from buildenv.core.canonical import digest_json
from buildenv.core.tempdirs import scratch_dir
from buildenv.data.lock.derived import Pinned

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project

__all__ = ["ArrayStore", "FileVotes", "LabelMatrix", "assemble", "data_files", "key_key",
           "vote_key", "write_array"]

FORMAT = 1


def vote_key(function_digest: str, file_digest: str) -> str:
    return digest_json({"votes": FORMAT, "function": function_digest, "file": file_digest})


def key_key(file_digest: str, column: str) -> str:
    return digest_json({"keys": FORMAT, "file": file_digest, "column": column})


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

    def read(self, key: str) -> pa.Array | None:
        """The object's column, None when it is missing or its bytes are not the recorded
        ones."""
        path = self.path(key)
        try:
            record = json.loads(path.with_suffix(".json").read_text())
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        if record.get("digest") != "sha256:" + hashlib.sha256(data).hexdigest():
            return None
        # the file's own reader: `read_table`'s dataset layer costs more than the read itself
        # for a cached object (one per function and data file: a thousand in a lock)
        column = pq.ParquetFile(io.BytesIO(data)).read(columns=["v"]).column("v")
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


@dataclass(frozen=True)
class FileVotes:
    """What is missing for one data file: the functions to apply, and whether its keys are
    needed."""

    path: str
    digest: str
    functions: tuple[str, ...]
    keys: bool


@dataclass
class LabelMatrix:
    keys: pa.Array  # string: each row's example key
    votes: np.ndarray  # (rows, functions) class index, -1 abstains
    functions: list[str]
    classes: list[str]
    outside: dict[str, dict[str, int]]  # function -> class outside the taxonomy -> votes

    @property
    def rows(self) -> int:
        return int(self.votes.shape[0])


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


def assemble(pin: Pinned, digests: dict[str, str], column: str, classes: list[str],
             votes: ArrayStore, keys: ArrayStore) -> LabelMatrix | None:
    """The matrix from the stores; None when an object is missing or damaged (rebuild it)."""
    names = list(digests)
    index = pa.array(classes, pa.string())
    width = np.int8 if len(classes) < 127 else np.int16
    parts: list[np.ndarray] = []
    key_parts: list[pa.Array] = []
    outside: dict[str, dict[str, int]] = {}
    for _, file_digest, _ in data_files(pin):
        found_keys = keys.read(key_key(file_digest, column))
        if found_keys is None:
            return None
        block = np.full((len(found_keys), len(names)), -1, width)
        for j, name in enumerate(names):
            column_votes = votes.read(vote_key(digests[name], file_digest))
            if column_votes is None or len(column_votes) != len(found_keys):
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
        parts.append(block)
        key_parts.append(found_keys)
    matrix = np.concatenate(parts) if parts else np.zeros((0, len(names)), width)
    all_keys = pa.concat_arrays(key_parts) if key_parts else pa.array([], pa.string())
    return LabelMatrix(all_keys, matrix, names, list(classes), outside)
