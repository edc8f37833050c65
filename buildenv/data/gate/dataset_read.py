"""One verified, typed, private, audited read of one dataset file (`DatasetRead`).

Opened by `gate.Gate.open`; the file is pinned (`pinned.Pinned`), decoded by its format's one
reader, verified against the expected digest when the read completes, and audited when the
dataset is restricted. Decoding errors of a restricted dataset locate the failing value
(column, data row) without quoting it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.formats import (
    BATCH_ROWS,
    FORMATS,
    FileFormat,
    arrow_type,
    declared_types,
    parse_timestamps,
)
from buildenv.data.gate.pinned import Changed, Pinned
from buildenv.data.gate.privacy import (
    csv_column_of,
    decode_error_message,
    first_line,
    is_conversion_error,
)
from buildenv.data.gate.scope import ReadScope
from buildenv.data.lock.digests import ALGORITHMS
from buildenv.data.storage import Location, locate
from buildenv.env.spec import Column, Dataset

__all__ = ["DatasetRead"]


class DatasetRead:
    """One verified, typed, audited read of a dataset version. Use as a context manager."""

    def __init__(self, scope: ReadScope, name: str, spec: Dataset, uri: str, fmt: str,
                 expected: str | None, origin: str, *,
                 constants: Mapping[str, pa.Scalar] | None = None, audit: bool = True,
                 algorithm: str | None = None):
        """`constants`: columns of a partition file that come from its path (typed as
        declared); `audit=False`: one file of a partitioned read, which audits as a whole."""
        self.scope, self.name, self.spec, self.uri = scope, name, spec, uri
        self.format: FileFormat = FORMATS[fmt]
        self.expected = expected
        self.origin = origin
        self.constants = dict(constants or {})
        self.restricted = scope.restricted(name)  # decode errors never quote values
        self.audited = self.restricted and audit  # one file of a partitioned read: not
        self.columns_read: set[str] = set()
        self.rows_read = 0
        self.digest: str | None = None  # known once the read is verified
        algorithm = algorithm or (expected or "sha256:").split(":", 1)[0]
        if algorithm not in ALGORITHMS:
            algorithm = "sha256"
        self.from_store = False  # the pinned bytes are read from the object store
        try:
            self._pinned = Pinned(self._source(), algorithm)
        except FileNotFoundError:
            self._pinned = self._stored(None)
            if self._pinned is None:
                raise GateError(scope.dataset_error(
                    "BE053", f"dataset '{name}': '{uri}' not found", name,
                    hints=(("the object store does not hold the pinned bytes either: "
                            "`buildenv pull` fetches them where they were pushed",)
                           if expected else ()))) from None
        except OSError as exc:
            raise GateError(scope.dataset_error("BE053", f"dataset '{name}': cannot read '{uri}': "
                                       f"{exc.strerror or first_line(str(exc))}", name)) from None
        vouched = scope.vouched(self._pinned, fmt) if not self.from_store else None
        if vouched is not None and expected in (None, vouched):
            self._pinned.vouch(vouched)
        elif expected is not None and not self.from_store:
            # the file at the uri is not known to hold the pinned bytes: the store's copy is
            self._pinned = self._stored(self._pinned) or self._pinned
        self._schema: pa.Schema | None = None
        self._header: list[str] | None = None
        self._decoded = False
        self._audited = False

    def _source(self) -> Location:
        """Where the bytes are: the uri, or for a DVC-pinned dataset DVC's cache."""
        if self.spec.dvc is None or self.uri != self.spec.uri:
            return locate(self.uri, self.scope.project)
        from buildenv.data.lock.dvc_pins import dvc_location
        from buildenv.data.tables import TableError

        try:
            return dvc_location(self.scope.project, self.spec, self.uri)
        except TableError as exc:
            raise GateError(self.scope.dataset_error(exc.code, f"dataset '{self.name}': "
                                                     f"{exc.message}", self.name,
                                                     hints=exc.hints)) from None

    def _stored(self, current: Pinned | None) -> Pinned | None:
        """The pinned bytes from the object store (fetched from the shared store when only it
        has them), replacing `current`; None when the store does not hold them."""
        from buildenv.data.store import ObjectStore, StoreError

        if self.expected is None:
            return None
        try:
            path = ObjectStore.of(self.scope.project).find(self.expected, self.restricted)
        except StoreError as exc:
            raise GateError(self.scope.dataset_error(exc.code, f"dataset '{self.name}': "
                                                     f"{exc.message}", self.name,
                                                     hints=exc.hints)) from None
        if path is None:
            return None
        if current is not None:
            current.close()
        self.from_store = True
        location = locate(self.uri, self.scope.project)
        return Pinned(Location(location.uri, str(path), str(path), path),
                      self.expected.split(":", 1)[0])

    # --- context manager ------------------------------------------------------------------
    def __enter__(self) -> DatasetRead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; a restricted read that decoded rows but did not complete (an
        error, a mismatch, a consumer that stopped early) is audited here."""
        if self.audited and self._decoded and not self._audited:
            try:
                self._audit("incomplete")
            except GateError:
                pass  # the read already failed; its own error is what the caller reports
        self._pinned.close()

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
                ) -> Iterator[pa.RecordBatch]:
        """Batches of the columns present in the file, then verification: a mismatch raises
        GateError after the last batch (callers release nothing before the iterator ends)."""
        names = self.schema.names
        present = [c for c in columns if c in names]
        stored = [c for c in present if c not in self.constants]
        self.columns_read.update(present)
        rows = 0
        self._decoded = True
        self._pinned.start_hashing()
        try:
            # partition columns are constants, not in the file: the reader must not look them up
            for batch in self.format.batches(self._pinned, self.declared, stored,
                                             batch_rows=batch_rows,
                                             dictionary=[c for c in dictionary if c in stored]):
                rows += batch.num_rows
                if typed:
                    batch = declared_types(batch, self.declared)
                if self.constants:
                    batch = _with_constants(batch, present, self.constants, dictionary)
                yield batch
            if not stored and self.constants and present:  # only path columns were asked for
                rows = self._stored_rows()
                for start in range(0, rows, batch_rows):
                    empty = pa.RecordBatch.from_arrays([], names=[])
                    yield _with_constants(empty, present, self.constants, dictionary,
                                          min(batch_rows, rows - start))
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise self._decode_error(exc, rows, present) from None
        self.rows_read = max(self.rows_read, rows)
        self.verify()

    def _stored_rows(self) -> int:
        return self.format.count_rows(self._pinned)

    def table(self, columns: Sequence[str], typed: bool = True) -> pa.Table:
        """Every row of `columns`, verified before it is returned."""
        present = [c for c in columns if c in self.schema.names]
        batches = list(self.batches(present, typed=typed))
        schema = batches[0].schema if batches else pa.schema(
            [self.schema.field(c) for c in present])
        return pa.Table.from_batches(batches, schema=schema)

    def verify(self) -> str:
        """Compare what was read with the expected digest; audit a restricted read."""
        try:
            found = self._pinned.digest()
        except Changed:
            raise self._changed_error() from None
        except OSError as exc:
            raise GateError(self.scope.dataset_error(
                "BE053", f"dataset '{self.name}': cannot read '{self.uri}': "
                f"{exc.strerror or exc}", self.name)) from None
        if self.digest is not None:
            return self.digest  # a later pass over the same pinned bytes
        if self.expected is not None and found != self.expected:
            if self.audited:
                self._audit("refused: does not match the lock", found)
            if self.from_store:
                from buildenv.data.store import ObjectStore

                ObjectStore.of(self.scope.project).local.remove(self.expected)
                raise GateError(self.scope.dataset_error(
                    "BE082", f"dataset '{self.name}': the object store's copy of {self.uri} "
                    f"is damaged (it hashes to {found}, not {self.expected}); it was removed "
                    "and nothing read from it is used", self.name,
                    hints=("`buildenv pull` fetches it again from the shared store",)))
            raise GateError(self.scope.dataset_error(
                "BE055", f"dataset '{self.name}' does not match the lock: expected "
                f"{self.expected}, found {found} ({self.uri}); nothing read from it is used",
                self.name, hints=(
                    "the data changed after the lock was checked; if the new bytes are "
                    f"intended, review them and run `buildenv lock {self.scope.env.name}`",)))
        self.digest = found
        if self.audited:
            self._audit("read")
        return self.digest

    def _audit(self, outcome: str, digest: str | None = None) -> None:
        from buildenv.core.diagnostics import DiagnosticError

        self._audited = True
        try:
            AuditLog(self.scope.project.data_state_dir).append(
                purpose=self.scope.purpose, environment=self.scope.env.name, dataset=self.name,
                digest=digest or self.digest or self.expected, columns=sorted(self.columns_read),
                rows=self.rows_read, outcome=outcome)
        except DiagnosticError as exc:  # BE801: not sound or not writable
            raise GateError(exc.diagnostics[0]) from None

    # --- errors ---------------------------------------------------------------------------
    def _changed_error(self) -> GateError:
        return GateError(self.scope.dataset_error(
            "BE056", f"dataset '{self.name}' was written to while it was being read "
            f"({self.uri}); nothing read from it is used", self.name,
            hints=("retry when the writer has finished",)))

    def _decode_error(self, exc: BaseException, rows_before: int = 0,
                      columns: Sequence[str] = ()) -> GateError:
        if isinstance(exc, FileNotFoundError):
            return GateError(self.scope.dataset_error("BE053", f"dataset '{self.name}': '{self.uri}' not "
                                             "found", self.name))
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
            return GateError(self.scope.dataset_error("BE053", f"dataset '{self.name}': cannot read "
                                             f"'{self.uri}': {exc.strerror or exc}", self.name))
        if self._pinned.changed():  # the decoder failed because a writer was at work
            return self._changed_error()
        row, column = self._locate_failure(exc, rows_before, columns)
        message = decode_error_message(exc, self.name, self.restricted, self._header, row,
                                       column)
        code = "BE201" if is_conversion_error(exc) else "BE053"
        return GateError(self.scope.dataset_error(code, message, self.name))

    def _locate_failure(self, exc: BaseException, rows_before: int, columns: Sequence[str]
                        ) -> tuple[int | None, str | None]:
        """The data row and column of a value that does not convert (CSV), found by re-reading
        the column as text and casting it in halves; (None, None) when not a conversion."""
        if self.format.name != "csv" or not is_conversion_error(exc):
            return None, None
        column = csv_column_of(exc, self._header or [])
        candidates = [column] if column else [c for c in columns if c in self.declared]
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
