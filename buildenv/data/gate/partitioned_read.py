"""Partitioned datasets read file by file: each file pinned and verified against its own
manifest entry, a few files decoded at once and handed out in file order (`read_ahead`),
partition columns typed from the paths; filters on
partition columns leave the files they rule out unopened. `FileTask` is one file of such a
read, self-contained for an executor (local threads or Ray)."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from buildenv.core.diagnostics import Diagnostic
from buildenv.data.gate.dataset_read import DatasetRead
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import BATCH_ROWS, arrow_type, parse_timestamps
from buildenv.data.gate.read_ahead import in_order, read_threads
from buildenv.data.gate.reader import Reader
from buildenv.data.gate.scope import ReadScope
from buildenv.data.lock.digests import parquet_rows
from buildenv.data.lock.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    list_partitioned,
    partition_values,
    resolve_partitions,
    restricted_partitions,
)
from buildenv.data.storage import locate
from buildenv.data.tables import TableVersion

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project
    from buildenv.env.spec import Column, Dataset, Environment

__all__ = ["FileTask", "PartitionedRead", "partition_scalar", "typed_partition_value"]


def partition_scalar(text: str | None, column: Column) -> pa.Scalar:
    """A partition value from a path, typed as its declared column; ValueError when it does
    not convert."""
    return typed_partition_value(text, column.dtype)


@lru_cache(maxsize=4096)
def typed_partition_value(text: str | None, dtype: str) -> pa.Scalar:
    """`partition_scalar` by the declared dtype alone, remembered (Arrow scalars are
    immutable): a partitioned read converts each file's values again for every file it
    opens, a transform for each file it makes."""
    kind = arrow_type(dtype)
    if text is None:
        return pa.scalar(None, kind)
    raw = text.encode("utf-8")
    offsets = (0).to_bytes(4, "little") + len(raw).to_bytes(4, "little")
    array = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(offsets),
                                                    pa.py_buffer(raw)])
    try:
        if dtype == "timestamp":
            batch = parse_timestamps(pa.RecordBatch.from_arrays([array], names=["v"]), ["v"])
            return batch.column(0)[0]
        return array.cast(kind)[0]
    except (pa.ArrowException, ValueError):
        raise ValueError(f"'{text}' is not a {dtype}") from None


# --- partitioned datasets ---------------------------------------------------------------------

@dataclass(frozen=True)
class FileTask:
    """One file of a partitioned read, self-contained: what a task (local or Ray) needs to open
    it through a gate of its own and verify it against its manifest entry."""

    project: Project
    env: Environment
    purpose: str
    dataset: str
    uri: str  # the file's
    expected: str | None
    values: tuple[tuple[str, str | None], ...]  # partition values as written in the path
    algorithm: str = "sha256"
    index: int = 0  # position in the dataset's file order

    def open(self, partitions: bool = True) -> DatasetRead:
        """The file, verified as it is read; with its partition columns unless
        `partitions=False` (validation checks the values from the paths itself)."""
        spec = self.env.datasets[self.dataset]
        scope = ReadScope(self.project, self.env, self.purpose)
        constants = ({n: partition_scalar(v, spec.columns[n]) for n, v in self.values
                      if n in spec.columns} if partitions else {})
        try:
            return DatasetRead(scope, self.dataset, spec, self.uri, "parquet", self.expected,
                               self.uri, constants=constants, audit=False,
                               algorithm=self.algorithm)
        except GateError as exc:
            if exc.diagnostic.code == "BE053" and "not found" in exc.diagnostic.message:
                raise GateError(Diagnostic(
                    "BE064", f"dataset '{self.dataset}': '{self.uri}' is pinned by the lock "
                    "but no longer exists; nothing read from the dataset is used",
                    hints=("restore the file, or review the data and run `buildenv lock "
                           f"{self.env.name}`",))) from None
            raise


class PartitionedRead(Reader):
    """One verified, typed, audited read of a partitioned dataset or of a table version: its
    files in path order, each opened (and pinned, and verified against its manifest entry) by
    one of `read_threads()` workers, so memory holds a few batches of that many files.
    Unpinned (no manifest): the files
    under the uri now (a table's: the files of the version `listing` names), each hashed as it
    is read; `digest` is then the manifest of what was read.

    A table's files live under its `base` and carry their partition values (`values`); those
    of columns the environment declares are the partition columns of the read."""

    rows_read: int

    def __init__(self, scope: ReadScope, name: str, spec: Dataset, uri: str,
                 manifest: Manifest | None, origin: str, filters: Any = None,
                 listing: TableVersion | None = None):
        self.restricted = scope.restricted(name)
        super().__init__(scope, uri, f"dataset '{name}'", ("datasets", name, "uri"),
                         manifest.digest if manifest is not None else None,
                         name if self.restricted else None)
        self.name, self.spec = name, spec
        self.manifest = manifest
        self.origin = origin
        self.partitions = tuple(spec.partition_columns)
        self.base = (manifest.base if manifest is not None and manifest.base else
                     listing.base if listing is not None else uri)
        self._values: dict[str, dict[str, str | None] | None] = {}  # a table file's, all
        location = locate(self.base, scope.project)
        self.location = location
        table = spec.is_table
        if table:
            declared = manifest.partitions if manifest is not None else (
                listing.partitions if listing is not None else ())
            self.partitions = tuple(p for p in declared if p in spec.columns)
        entries: list[tuple[str, str | None]]
        try:
            if manifest is not None:
                entries = [(f.path, f.digest) for f in manifest.files]
                self._values = {f.path: f.values for f in manifest.files}
                self.algorithm = manifest.algorithm
                if not table:
                    self.partitions = resolve_partitions(spec.partitions, spec.columns,
                                                         [path for path, _ in entries])
            elif listing is not None:
                entries = [(f.path, None) for f in listing.files]
                self._values = {f.path: dict(f.values or {}) if listing.partitions else None
                                for f in listing.files}  # as the lock records them
                self.algorithm = "sha256"
            else:
                with self.opening():
                    self.partitions, listed = list_partitioned(location, spec.partitions,
                                                               spec.columns)
                entries = [(item.path, None) for item in listed]
                self.algorithm = "sha256"
        except ManifestError as exc:
            code, text = exc.problems[0]
            more = len(exc.problems) - 1
            raise self.error(code, f"dataset '{name}': {text}" + (
                f" (and {more} more)" if more else "")) from None
        if self.restricted and self.partitions and not table:  # found in its paths
            code, text, hints = restricted_partitions(self.partitions)
            raise self.error(code, f"dataset '{name}': {text}", hints=hints)
        self.files: list[tuple[str, str | None, dict[str, str | None]]] = []
        for path, digest in entries:
            if table:
                given = self._values.get(path) or {}
                self.files.append((path, digest, {p: given.get(p) for p in self.partitions}))
                continue
            try:
                values = partition_values(path, self.partitions)
            except ValueError as exc:
                raise self.error("BE062", f"dataset '{name}': '{self.file_uri(path)}' does not "
                                          f"match the declared partitions: {exc}") from None
            self.files.append((path, digest, values))
        if filters is not None:
            self.files = [f for f in self.files if filters.may_hold(self._typed(f))]
        self._found: dict[str, FileEntry] = {}
        self.current: DatasetRead | None = None  # the file a sequential `batches` is reading
        self._schema: pa.Schema | None = None
        self._first: DatasetRead | None = None  # see `_first_schema`

    def file_uri(self, path: str) -> str:
        return (self.base if self.base.endswith("/") else self.base + "/") + path

    def _entry(self, path: str, size: int, digest: str, rows: int) -> FileEntry:
        """What was read of one file, as a manifest entry (a table's with its values)."""
        return FileEntry(path, size, digest, rows, self._values.get(path))

    def _typed(self, file: tuple[str, str | None, dict[str, str | None]]) -> dict[str, Any]:
        """Partition values as Python values of the declared types (for filters)."""
        out = {}
        for column, text in file[2].items():
            if column not in self.spec.columns:
                continue
            try:
                out[column] = partition_scalar(text, self.spec.columns[column]).as_py()
            except ValueError:
                out[column] = None  # validation reports it (BE063); no filter passes it
        return out

    def total_rows(self) -> int | None:
        """Rows of the selected files: from the manifest, else each file's Parquet footer
        (None when a footer cannot be read, or the manifest withholds them -- a restricted
        output of user code, whose counts nothing shows: the caller then does without)."""
        if self.manifest is not None and self.manifest.withheld:
            return None
        if self.manifest is not None:
            rows = {f.path: f.rows for f in self.manifest.files if f.rows is not None}
            return sum(rows[path] for path, _, _ in self.files)
        try:
            return sum(parquet_rows(self.location.child(path)) for path, _, _ in self.files)
        except Exception:
            return None

    def tasks(self, purpose: str | None = None) -> list[FileTask]:
        """One self-contained task per file to read (for an executor)."""
        return [FileTask(self.scope.project, self.scope.env, purpose or self.scope.purpose,
                         self.name, self.file_uri(path), digest, tuple(values.items()),
                         self.algorithm, i)
                for i, (path, digest, values) in enumerate(self.files)]

    def _open(self, task: FileTask) -> DatasetRead:
        try:
            return task.open()
        except ValueError as exc:  # a partition value that does not convert
            raise self.error("BE063", f"dataset '{self.name}': partition value in "
                                      f"'{task.uri}': {exc}") from None
        except GateError as exc:
            raise self.placed(exc) from None

    def placed(self, exc: GateError) -> GateError:
        """A file's error (its task has no YAML to point at), placed at the dataset's uri
        line like the gate's own."""
        d = exc.diagnostic
        if self.scope.where is None or d.path is not None:
            return exc
        return self.error(d.code, d.message, hints=d.hints)

    # --- the DatasetRead interface ------------------------------------------------------------
    @property
    def declared(self) -> dict[str, Column]:
        return self.spec.columns

    @property
    def schema(self) -> pa.Schema:
        """The first file's stored columns, then the partition columns (declared types)."""
        if self._schema is None:
            self._schema = self._first_schema(keep=False)
        return self._schema

    def _first_schema(self, keep: bool) -> pa.Schema:
        """`schema`, from the first file opened for it; `keep`: that open read is kept for the
        next `batches` to read first, instead of opening (pinning, locating, reading the
        footer of) the same file twice -- a one-file read (a transform's) did so per file."""
        stored = pa.schema([])
        if self.files:
            first = self._open(self.tasks()[0])
            try:
                stored = first.stored_schema
            except GateError as exc:
                first.close()
                raise self.placed(exc) from None
            except BaseException:
                first.close()
                raise
            if keep:
                self._first = first
            else:
                first.close()
        return pa.schema([f for f in stored if f.name not in self.partitions]
                         + [pa.field(p, arrow_type(self.spec.columns[p].dtype))
                            for p in self.partitions])

    def release(self) -> None:
        if self._first is not None:  # kept by `table`, whose `batches` did not run
            first, self._first = self._first, None
            first.close()

    def batches(self, columns: Sequence[str], *, batch_rows: int = BATCH_ROWS,
                dictionary: Sequence[str] = (), typed: bool = False, ahead: bool = True
                ) -> Generator[pa.RecordBatch, None, None]:
        """Batches of every selected file in turn, in file order; each file is verified after
        its last batch (a mismatch raises GateError naming the file before any batch of a later
        file is handed out). Files are decoded ahead in a bounded thread pool (`read_ahead`):
        at most `read_threads()` files open, a few batches each waiting. `ahead=False` (a scan
        its consumer may leave early): one file at a time, in the consumer's thread, with
        `current` the file being read, so the file it stopped in is the one to verify."""
        self._decoded = True
        rows = 0
        tasks = self.tasks()

        # the first file, opened by `table` for the schema: taken by whoever comes first, the
        # first file's producer or the end of this generator (atomic pop: threads)
        first = [self._first] if self._first is not None else []
        self._first = None

        def produce(index: int) -> Iterator[pa.RecordBatch]:
            task = tasks[index]
            opened = first.pop() if index == 0 and first else self._open(task)
            with opened as read:
                if not ahead:
                    self.current = read
                missing = [c for c in columns if c not in read.schema.names
                           and c in self.schema.names]
                if missing:
                    raise self.error("BE206", f"dataset '{self.name}': '{task.uri}' has no "
                                              f"column '{missing[0]}'")
                try:
                    yield from read.batches(columns, batch_rows=batch_rows,
                                            dictionary=dictionary, typed=typed)
                except GateError as exc:
                    raise self.placed(exc) from None
                self.columns_read.update(read.columns_read)
                self._record(task, read)  # verified: its batches ended without an error
            self.current = None

        if tasks:
            self.schema  # noqa: B018 -- known before threads ask for it
        workers = min(read_threads(), len(tasks)) if ahead else 1
        try:
            for batch in in_order(len(tasks), produce, workers):
                rows += batch.num_rows
                yield batch
        finally:
            if first:
                first.pop().close()  # never read: the consumer stopped before it
        self.rows_read = max(self.rows_read, rows)
        self.verify()

    def table(self, columns: Sequence[str], typed: bool = True) -> pa.Table:
        if self._schema is None:
            self._schema = self._first_schema(keep=True)
        present = [c for c in columns if c in self.schema.names]
        batches = list(self.batches(present, typed=typed))
        if batches:
            return pa.Table.from_batches(batches)
        fields = [pa.field(c, arrow_type(self.spec.columns[c].dtype)) if typed
                  else self.schema.field(c) for c in present]
        return pa.Table.from_batches([], schema=pa.schema(fields))

    def _record(self, task: FileTask, read: DatasetRead) -> None:
        path = task.uri[len(self.file_uri("")):]
        self._found[path] = self._entry(path, read.size, read.digest or "", read.rows_read)

    def complete(self, found: Sequence[tuple[str, int, str, int]], rows: int,
                 columns: Sequence[str]) -> str:
        """Record files verified by tasks (path, size, digest, rows), then verify the whole."""
        for path, size, digest, file_rows in found:
            self._found[path] = self._entry(path, size, digest, file_rows)
        self._decoded = True
        self.columns_read.update(columns)
        self.rows_read = max(self.rows_read, rows)
        return self.verify()

    def verify(self) -> str:
        """Every selected file was read and verified: the dataset's digest (the pinned
        manifest's; unpinned: the manifest of what was read); audits a restricted read."""
        if self.digest is not None:
            return self.digest
        if self.manifest is not None:
            for path, digest, _ in self.files:
                found = self._found.get(path)
                if found is None or found.digest != digest:  # the file reads verify each
                    raise self.error("BE055", f"dataset '{self.name}': '{self.file_uri(path)}' "
                                              "was not verified against the lock; nothing read "
                                              "from it is used")
            self.digest = self.manifest.digest
        else:
            read = Manifest(tuple(self._found[p] for p, _, _ in self.files), self.partitions)
            # a restricted output of user code is pinned without its counts (`compile.derive`)
            self.digest = (read.withhold() if self.restricted and self.spec.source is not None
                           else read).digest
        if self.audited:
            self.audit("read")
        return self.digest

    def audit_details(self) -> dict[str, Any]:
        return {"files": len(self.files)}


