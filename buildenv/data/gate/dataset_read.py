"""One verified, typed, private, audited read of one dataset file (`DatasetRead`).

Opened by `gate.Gate.open`; the file is pinned (`pinned.Pinned`), decoded by its format's one
reader, verified against the expected digest when the read completes, and audited when the
dataset is restricted. Decoding errors of a restricted dataset locate the failing value
(column, data row) without quoting it.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import (
    BATCH_ROWS,
    FORMATS,
    FileFormat,
    arrow_type,
    declared_types,
    parse_timestamps,
)
from buildenv.data.gate.pinned import Pinned
from buildenv.data.gate.privacy import (
    csv_column_of,
    decode_error_message,
    is_conversion_error,
)
from buildenv.data.gate.reader import Reader, digest_algorithm
from buildenv.data.gate.scope import ReadScope
from buildenv.data.storage import locate
from buildenv.data.tables import TableError

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.env.spec import Column, Dataset

__all__ = ["DatasetRead"]


class DatasetRead(Reader):
    """One verified, typed, audited read of a dataset version. Use as a context manager."""

    rows_read: int

    def __init__(self, scope: ReadScope, name: str, spec: Dataset, uri: str, fmt: str,
                 expected: str | None, origin: str, *,
                 constants: Mapping[str, pa.Scalar] | None = None, audit: bool = True,
                 algorithm: str | None = None):
        """`constants`: columns of a partition file that come from its path (typed as
        declared); `audit=False`: one file of a partitioned read, which audits as a whole."""
        self.restricted = scope.restricted(name)  # decode errors never quote values
        super().__init__(scope, uri, f"dataset '{name}'", ("datasets", name, "uri"), expected,
                         name if self.restricted and audit else None)
        self.name, self.spec = name, spec
        self.format: FileFormat = FORMATS[fmt]
        self.origin = origin
        self.constants = dict(constants or {})
        self._pinned = self._pin_source(digest_algorithm(expected, algorithm))
        vouched = scope.vouched(self._pinned, fmt) if not self.from_store else None
        if vouched is not None and expected in (None, vouched):
            self._pinned.vouch(vouched)
        elif expected is not None and not self.from_store:
            # the file at the uri is not known to hold the pinned bytes: the store's copy is
            self._pinned = self.stored(self._pinned, self.restricted) or self._pinned
        self._schema: pa.Schema | None = None
        self._header: list[str] | None = None

    def _pin_source(self, algorithm: str) -> Pinned:
        """The bytes to read: at the uri (a DVC pin's: in DVC's cache), or the object store's
        copy of the pinned bytes when the file is gone or remote."""
        if self.spec.dvc is not None and self.uri == self.spec.uri:
            # deferred: DVC pins parse YAML and DVC's config, which no other read needs (a
            # transform's hermetic process imports the gate before its request comes)
            from buildenv.data.lock.dvc_pins import dvc_location

            try:
                location = dvc_location(self.scope.project, self.spec, self.uri)
            except TableError as exc:
                raise self.error(exc.code, f"{self.what}: {exc.message}", exc.hints) from None
            with self.opening():
                return Pinned(location, algorithm)
        if self.expected is not None and locate(self.uri, self.scope.project).local is None:
            # a remote object would be downloaded to be hashed: a kept copy is local
            stored = self.stored(None, self.restricted)
            if stored is not None:
                return stored
        return self.pin(algorithm)

    def release(self) -> None:
        self._pinned.close()

    @property
    def size(self) -> int:
        """Bytes of the file (known once its digest is)."""
        return self._pinned.size

    # --- reading --------------------------------------------------------------------------
    @property
    def declared(self) -> dict[str, Column]:
        return self.spec.columns

    @property
    def stored_schema(self) -> pa.Schema:
        """The columns and types stored in the file (CSV: the header, typed by the
        environment)."""
        if self._schema is None:
            try:
                self._schema = self.format.schema(self._pinned, self.declared)
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise self._decode_error(exc) from None
            if self.format.name == "csv":
                self._header = list(self._schema.names)
        return self._schema

    @property
    def schema(self) -> pa.Schema:
        """The stored columns, then the partition columns of the file's path."""
        stored = self.stored_schema
        if not self.constants:
            return stored
        return pa.schema([f for f in stored if f.name not in self.constants]
                         + [pa.field(n, v.type) for n, v in self.constants.items()])

    @property
    def total_rows(self) -> int | None:
        """Rows in the file when the format says so cheaply (Parquet's footer), for progress."""
        if self.format.name != "parquet":
            return None
        try:
            return self.format.count_rows(self._pinned)
        except (OSError, pa.ArrowException, ValueError):
            return None

    def batches(self, columns: Sequence[str], *, batch_rows: int = BATCH_ROWS,
                dictionary: Sequence[str] = (), typed: bool = False
                ) -> Generator[pa.RecordBatch, None, None]:
        """Batches of the columns present in the file, then verification: a mismatch raises
        GateError after the last batch (callers release nothing before the iterator ends)."""
        names = self.schema.names
        present = [c for c in columns if c in names]
        stored = [c for c in present if c not in self.constants]
        absent = self._optional_absent(columns) if typed else []
        self.columns_read.update(present)
        rows = 0
        self._decoded = True
        self._pinned.start_hashing()
        try:
            for batch in self.format.batches(self._pinned, self.declared, stored,
                                             batch_rows=batch_rows,
                                             # partition columns are constants, not in the file
                                             dictionary=[c for c in dictionary if c in stored]):
                rows += batch.num_rows
                if typed:
                    batch = declared_types(batch, self.declared)
                if self.constants:
                    batch = _with_constants(batch, present, self.constants, dictionary)
                if absent:
                    batch = self._with_nulls(batch, absent)
                yield batch
            if not stored and self.constants and present and not rows:
                # only path columns were asked for, and the format gave no batch for zero
                # columns (pyarrow's Parquet reader gives batches of their row counts: those
                # rows are all there are, so nothing is added to them)
                rows = self.stored_rows()
                for start in range(0, rows, batch_rows):
                    empty = pa.RecordBatch.from_arrays([], names=[])
                    yield _with_constants(empty, present, self.constants, dictionary,
                                          min(batch_rows, rows - start))
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise self._decode_error(exc, rows, present) from None
        self.rows_read = max(self.rows_read, rows)
        self.verify()

    def stored_rows(self) -> int:
        """Rows stored in the file, as its format counts them."""
        return self.format.count_rows(self._pinned)

    def _optional_absent(self, columns: Sequence[str]) -> list[str]:
        """Asked-for columns declared `required: false` that this file does not have."""
        names = self.schema.names
        return [c for c in columns if c not in names and c in self.declared
                and not self.declared[c].required]

    def _with_nulls(self, batch: pa.RecordBatch, absent: Sequence[str]) -> pa.RecordBatch:
        """`batch` plus an all-null column of the declared type for each absent optional
        column: what a column that may be absent reads as where it is."""
        arrays = list(batch.columns) + [pa.nulls(batch.num_rows, arrow_type(
            self.declared[c].dtype)) for c in absent]
        return pa.RecordBatch.from_arrays(arrays, names=[*batch.schema.names, *absent])

    def table(self, columns: Sequence[str], typed: bool = True) -> pa.Table:
        """Every row of `columns`, verified before it is returned (typed: an absent column
        declared `required: false` is all nulls)."""
        names = self.schema.names
        present = [c for c in columns if c in names]
        asked = present + (self._optional_absent(columns) if typed else [])
        batches = list(self.batches(asked, typed=typed))
        schema = batches[0].schema if batches else pa.schema(
            [self.schema.field(c) if c in names else pa.field(c, arrow_type(
                self.declared[c].dtype)) for c in asked])
        return pa.Table.from_batches(batches, schema=schema)

    def verify(self) -> str:
        """Compare what was read with the expected digest; audit a restricted read."""
        return self.verify_pinned(self._pinned)

    # --- errors ---------------------------------------------------------------------------
    def changed_error(self) -> GateError:
        return self.error("BE056", f"dataset '{self.name}' was written to while it was being "
                                   f"read ({self.uri}); nothing read from it is used",
                          hints=("retry when the writer has finished",))

    def relock_hint(self) -> str:
        return ("the data changed after the lock was checked; if the new bytes are intended, "
                f"review them and run `buildenv lock {self.scope.env.name}`")

    def _decode_error(self, exc: BaseException, rows_before: int = 0,
                      columns: Sequence[str] = ()) -> GateError:
        if isinstance(exc, FileNotFoundError):
            return self.error("BE053", f"dataset '{self.name}': '{self.uri}' not found")
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
            return self.error("BE053", f"dataset '{self.name}': cannot read '{self.uri}': "
                                       f"{exc.strerror or exc}")
        if self._pinned.changed():  # the decoder failed because a writer was at work
            return self.changed_error()
        row, column = self._locate_failure(exc, rows_before, columns)
        message = decode_error_message(exc, self.name, self.restricted, self._header, row,
                                       column)
        code = "BE201" if is_conversion_error(exc) else "BE053"
        return self.error(code, message)

    def _locate_failure(self, exc: BaseException, rows_before: int, columns: Sequence[str]
                        ) -> tuple[int | None, str | None]:
        """The data row and column of a value that does not convert (CSV), found by re-reading
        the column as text and casting it in halves; (None, None) when not a conversion."""
        if self.format.name != "csv" or not is_conversion_error(exc):
            return None, None
        column = csv_column_of(exc, self._header or [])
        candidates = [column] if column else [c for c in columns if c in self.declared]
        # deferred: only a CSV value that does not convert gets here, and env.spec brings
        # pydantic, which the transforms' runner does not import otherwise
        from buildenv.env.spec import Column

        text = {c: Column(dtype="string") for c in candidates}
        for name in candidates:
            target = self.declared[name].dtype
            row = 0
            try:
                for batch in self.format.batches(self._pinned, text, [name]):
                    bad = _first_failure(batch.column(0), target)
                    if bad is not None:
                        return row + bad + 1, name
                    row += batch.num_rows
            except (OSError, pa.ArrowException, ValueError):
                return None, column
        return None, column


def _first_failure(array: pa.Array, dtype: str) -> int | None:
    """Index of the first value of a text column that does not convert to `dtype`."""
    def converts(part: pa.Array) -> bool:
        try:
            if dtype == "timestamp":  # the reader's own parser
                parse_timestamps(pa.RecordBatch.from_arrays([part], names=["x"]), ["x"])
            else:
                part.cast(arrow_type(dtype))
            return True
        except (pa.ArrowException, ValueError):
            return False

    if converts(array):
        return None
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if converts(array.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo


def _with_constants(batch: pa.RecordBatch, order: Sequence[str],
                    constants: Mapping[str, pa.Scalar], dictionary: Sequence[str],
                    rows: int | None = None) -> pa.RecordBatch:
    """`batch` plus the partition columns among `order`, each a constant, in `order`."""
    n = batch.num_rows if rows is None else rows
    arrays = []
    for name in order:
        if name in constants:
            value = constants[name]
            if name in dictionary and pa.types.is_string(value.type):
                array = pa.DictionaryArray.from_arrays(
                    pa.repeat(pa.scalar(0 if value.is_valid else None, pa.int32()), n),
                    pa.repeat(value, 1) if value.is_valid else pa.array([], value.type))
            else:
                array = pa.repeat(value, n) if value.is_valid else pa.nulls(n, value.type)
            arrays.append(array)
        else:
            arrays.append(batch.column(batch.schema.get_field_index(name)))
    return pa.RecordBatch.from_arrays(arrays, names=list(order))
