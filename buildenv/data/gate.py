"""The data gate: the one path by which dataset bytes enter buildenv.

Every caller -- validate, drift, the training's `ctx.read`, evaluation, promotion, retrain --
reads through `Gate.open`, which

1. **pins** the bytes: a local file is opened once and decoded through that open file
   (`/proc/self/fd/N`), so a file replaced after the lock check is not what is read; a remote
   object is copied into memory while it is hashed;
2. **verifies** them: the whole file is hashed while it is decoded (a second thread reading the
   same open file; hashing releases the GIL), and the digest is compared with the lock's when
   the read completes. A local file must also keep its size, mtime and ctime (any write changes
   them). A mismatch raises `GateError` (BE055/BE056) naming the dataset and both digests;
   callers discard what they decoded;
3. **types** them with the format's one reader (`formats.FORMATS`), and
4. keeps them **private**: decoding errors of a restricted dataset carry the column, data row
   and type, never the value; every completed read of a restricted dataset appends a record to
   the audit log (`audit.AuditLog`) before its rows are handed over.

Hashing a lock (`digests`) reads bytes without decoding a value and is not audited.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from buildenv.core.diagnostics import Diagnostic
from buildenv.core.project import Project
from buildenv.data.audit import AuditLog
from buildenv.data.digests import ALGORITHMS, CHUNK
from buildenv.data.formats import (
    BATCH_ROWS,
    FORMATS,
    FileFormat,
    arrow_type,
    declared_types,
    parse_timestamps,
)
from buildenv.data.privacy import (
    csv_column_of,
    decode_error_message,
    first_line,
    is_conversion_error,
)
from buildenv.data.storage import Location, locate
from buildenv.env.spec import Column, Dataset, Environment

__all__ = ["DatasetRead", "FileRead", "Gate", "GateError", "Pinned"]


class GateError(Exception):
    """A read the gate refused or could not complete; `diagnostic` says why, safely."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# --- pinned bytes ---------------------------------------------------------------------------

class Pinned:
    """The bytes of one file, fixed while they are read, and their digest.

    Local files: one open file descriptor for the whole read; decoders reopen it through
    /proc/self/fd (the same inode even if the path is replaced), and a thread hashes it with
    pread. Remote objects: streamed into memory while hashed, then decoded from memory.
    """

    def __init__(self, location: Location, algorithm: str):
        self.location = location
        self.algorithm = algorithm
        self._fd: int | None = None
        self._buffer: pa.Buffer | None = None
        self._digest: str | None = None
        self._size = 0
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        if location.local is not None:
            self._fd = os.open(location.local, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._stat = os.fstat(self._fd)
            self._reopen = (f"/proc/self/fd/{self._fd}" if sys.platform.startswith("linux")
                            else f"/dev/fd/{self._fd}")
        else:
            self._copy_remote()

    def open(self) -> pa.NativeFile:
        if self._buffer is not None:
            return pa.BufferReader(self._buffer)
        return pa.OSFile(self._reopen)

    def start_hashing(self) -> None:
        """Hash the pinned file in a thread (once), while the caller decodes it."""
        if self._fd is not None and self._thread is None and self._digest is None:
            self._thread = threading.Thread(target=self._hash_local, daemon=True,
                                            name="buildenv-gate-hash")
            self._thread.start()

    def _hash_local(self) -> None:
        assert self._fd is not None
        hasher = ALGORITHMS[self.algorithm]()
        offset = 0
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while not self._cancel.is_set():
                chunk = os.pread(self._fd, CHUNK, offset)
                if not chunk:
                    break
                hasher.update(chunk)
                offset += len(chunk)
            self._size = offset
            self._digest = f"{self.algorithm}:{hasher.hexdigest()}"
        except BaseException as exc:  # re-raised by digest()
            self._error = exc

    def _copy_remote(self) -> None:
        hasher = ALGORITHMS[self.algorithm]()
        parts = []
        with self.location.open() as stream:
            while True:
                chunk = stream.read_buffer(CHUNK)
                if chunk.size == 0:
                    break
                hasher.update(memoryview(chunk))
                parts.append(chunk.to_pybytes())
        data = b"".join(parts)
        self._size = len(data)
        self._buffer = pa.py_buffer(data)
        self._digest = f"{self.algorithm}:{hasher.hexdigest()}"

    def digest(self) -> str:
        """The digest of every byte (waits for the hashing thread). Raises `Changed` when a
        local file was written while it was read."""
        self.start_hashing()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        if self.changed():  # checked after every pass, not only the first
            raise Changed()
        assert self._digest is not None
        return self._digest

    def changed(self) -> bool:
        """Whether the pinned local file was written since it was opened. Any write moves
        mtime and ctime; ctime also moves when the path is replaced (the old file loses its
        link), which changes nothing we read, so then size and mtime decide."""
        if self._fd is None:
            return False
        now, before = os.fstat(self._fd), self._stat
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return True
        return now.st_nlink == before.st_nlink and now.st_ctime_ns != before.st_ctime_ns

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._buffer = None


class Changed(Exception):
    """The file was written while it was being read."""


# --- the gate --------------------------------------------------------------------------------

@dataclass
class Gate:
    """Reads of one environment's datasets for one purpose (build, validate, drift, ...)."""

    project: Project
    env: Environment
    purpose: str
    pins: Mapping[str, str] = field(default_factory=dict)  # dataset -> locked digest
    where: Any = None  # Resolved, to place diagnostics at the dataset's YAML line (optional)

    def restricted(self, dataset: str) -> bool:
        return self.env.restricted(dataset)

    def open(self, dataset: str, *, uri: str | None = None, fmt: str | None = None,
             expect: str | None | bool = True, origin: str | None = None) -> DatasetRead:
        """Open `dataset` (or another version of it at `uri`) for reading.

        `expect`: True (default) verifies against the lock's pin, a digest string verifies
        against that digest, None reads unpinned bytes (new data being validated or compared:
        the digest read is reported, nothing is claimed about it).
        """
        spec = self.env.datasets[dataset]
        expected: str | None
        if expect is True:
            expected = self.pins.get(dataset)
            if expected is None:
                raise GateError(self._diag(
                    "BE050", f"dataset '{dataset}' has no locked digest to verify against",
                    dataset, hints=(f"run `buildenv lock {self.env.name}`",)))
        else:
            expected = expect or None
        uri = uri or spec.uri
        return DatasetRead(self, dataset, spec, uri, fmt or spec.format, expected,
                           origin or uri)

    def open_file(self, uri: str, *, what: str, expect: str | None,
                  place: tuple = (), restricted_dataset: str | None = None,
                  missing_code: str = "BE053", mismatch_code: str = "BE055",
                  relock: str | None = None, **audit: Any) -> FileRead:
        """Open a non-tabular file (a label export, a mapping) for a verified read.

        `what` names it in messages ("label set 'genre-v2'"); `place` is the YAML key path
        its diagnostics point at; `expect` is the locked digest (None: unpinned). When
        `restricted_dataset` is set, the file describes examples of that restricted dataset:
        its completed (or abandoned) reads are audited like the dataset's, with `audit` as
        details."""
        return FileRead(self, uri, what, expect, place, restricted_dataset, missing_code,
                        mismatch_code, relock, audit)

    def _place(self, code: str, message: str, place: tuple, hints: tuple[str, ...] = ()
               ) -> Diagnostic:
        if self.where is not None and place:
            return self.where.diag(code, message, *place, hints=hints)
        return Diagnostic(code, message, hints=hints)

    def _diag(self, code: str, message: str, dataset: str, hints: tuple[str, ...] = ()
              ) -> Diagnostic:
        if self.where is not None:
            return self.where.diag(code, message, "datasets", dataset, "uri", hints=hints)
        return Diagnostic(code, message, hints=hints)


class DatasetRead:
    """One verified, typed, audited read of a dataset version. Use as a context manager."""

    def __init__(self, gate: Gate, name: str, spec: Dataset, uri: str, fmt: str,
                 expected: str | None, origin: str):
        self.gate, self.name, self.spec, self.uri = gate, name, spec, uri
        self.format: FileFormat = FORMATS[fmt]
        self.expected = expected
        self.origin = origin
        self.restricted = gate.restricted(name)
        self.columns_read: set[str] = set()
        self.rows_read = 0
        self.digest: str | None = None  # known once the read is verified
        algorithm = (expected or "sha256:").split(":", 1)[0]
        if algorithm not in ALGORITHMS:
            algorithm = "sha256"
        try:
            self._pinned = Pinned(locate(uri, gate.project), algorithm)
        except FileNotFoundError:
            raise GateError(gate._diag("BE053", f"dataset '{name}': '{uri}' not found",
                                       name)) from None
        except OSError as exc:
            raise GateError(gate._diag("BE053", f"dataset '{name}': cannot read '{uri}': "
                                       f"{exc.strerror or first_line(str(exc))}", name)) from None
        self._schema: pa.Schema | None = None
        self._header: list[str] | None = None
        self._decoded = False
        self._audited = False

    # --- context manager ------------------------------------------------------------------
    def __enter__(self) -> DatasetRead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; a restricted read that decoded rows but did not complete (an
        error, a mismatch, a consumer that stopped early) is audited here."""
        if self.restricted and self._decoded and not self._audited:
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
    def schema(self) -> pa.Schema:
        """The stored columns and types (CSV: the header, typed by the environment)."""
        if self._schema is None:
            try:
                self._schema = self.format.schema(self._pinned, self.declared)
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise self._decode_error(exc) from None
            if self.format.name == "csv":
                self._header = list(self._schema.names)
        return self._schema

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
        present = [c for c in columns if c in self.schema.names]
        self.columns_read.update(present)
        rows = 0
        self._decoded = True
        self._pinned.start_hashing()
        try:
            for batch in self.format.batches(self._pinned, self.declared, present,
                                             batch_rows=batch_rows, dictionary=dictionary):
                rows += batch.num_rows
                yield declared_types(batch, self.declared) if typed else batch
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise self._decode_error(exc, rows, present) from None
        self.rows_read = max(self.rows_read, rows)
        self.verify()

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
            raise GateError(self.gate._diag(
                "BE053", f"dataset '{self.name}': cannot read '{self.uri}': "
                f"{exc.strerror or exc}", self.name)) from None
        if self.digest is not None:
            return self.digest  # a later pass over the same pinned bytes
        if self.expected is not None and found != self.expected:
            if self.restricted:
                self._audit("refused: does not match the lock", found)
            raise GateError(self.gate._diag(
                "BE055", f"dataset '{self.name}' does not match the lock: expected "
                f"{self.expected}, found {found} ({self.uri}); nothing read from it is used",
                self.name, hints=(
                    "the data changed after the lock was checked; if the new bytes are "
                    f"intended, review them and run `buildenv lock {self.gate.env.name}`",)))
        self.digest = found
        if self.restricted:
            self._audit("read")
        return self.digest

    def _audit(self, outcome: str, digest: str | None = None) -> None:
        from buildenv.core.diagnostics import DiagnosticError

        self._audited = True
        try:
            AuditLog(self.gate.project.data_state_dir).append(
                purpose=self.gate.purpose, environment=self.gate.env.name, dataset=self.name,
                digest=digest or self.digest or self.expected, columns=sorted(self.columns_read),
                rows=self.rows_read, outcome=outcome)
        except DiagnosticError as exc:
            raise GateError(exc.diagnostics[0]) from None
        except OSError as exc:
            raise GateError(Diagnostic("BE801", f"cannot write the audit log: {exc}")) from None

    # --- errors ---------------------------------------------------------------------------
    def _changed_error(self) -> GateError:
        return GateError(self.gate._diag(
            "BE056", f"dataset '{self.name}' was written to while it was being read "
            f"({self.uri}); nothing read from it is used", self.name,
            hints=("retry when the writer has finished",)))

    def _decode_error(self, exc: BaseException, rows_before: int = 0,
                      columns: Sequence[str] = ()) -> GateError:
        if isinstance(exc, FileNotFoundError):
            return GateError(self.gate._diag("BE053", f"dataset '{self.name}': '{self.uri}' not "
                                             "found", self.name))
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
            return GateError(self.gate._diag("BE053", f"dataset '{self.name}': cannot read "
                                             f"'{self.uri}': {exc.strerror or exc}", self.name))
        if self._pinned.changed():  # the decoder failed because a writer was at work
            return self._changed_error()
        row, column = self._locate_failure(exc, rows_before, columns)
        message = decode_error_message(exc, self.name, self.restricted, self._header, row,
                                       column)
        code = "BE201" if is_conversion_error(exc) else "BE053"
        return GateError(self.gate._diag(code, message, self.name))

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


class FileRead:
    """One verified read of a non-tabular file: the same pinning, hashing and audit as a
    dataset read, for bytes that a caller decodes itself (`chunks()` streams them, `open()`
    gives a random-access file). Call `verify()` after the last byte is used: a digest that
    differs from the expected one raises GateError, and nothing decoded may be used."""

    def __init__(self, gate: Gate, uri: str, what: str, expected: str | None, place: tuple,
                 restricted_dataset: str | None, missing_code: str, mismatch_code: str,
                 relock: str | None, audit: dict):
        self.gate, self.uri, self.what, self.expected, self.place = gate, uri, what, expected, \
            place
        self.restricted_dataset = restricted_dataset
        self.mismatch_code = mismatch_code
        self.relock = relock
        self.audit_details = audit
        self.rows_read: int | None = None  # set by the caller (annotations, mapping rows)
        self.digest: str | None = None
        self._decoded = False
        self._audited = False
        algorithm = (expected or "sha256:").split(":", 1)[0]
        if algorithm not in ALGORITHMS:
            algorithm = "sha256"
        try:
            self._pinned = Pinned(locate(uri, gate.project), algorithm)
        except FileNotFoundError:
            raise GateError(gate._place(missing_code, f"{what}: '{uri}' not found",
                                        place)) from None
        except OSError as exc:
            raise GateError(gate._place(missing_code, f"{what}: cannot read '{uri}': "
                                        f"{exc.strerror or first_line(str(exc))}",
                                        place)) from None

    def __enter__(self) -> FileRead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self._pinned.size

    def open(self) -> pa.NativeFile:
        """A random-access file over the pinned bytes (Parquet readers)."""
        self._decoded = True
        return self._pinned.open()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The pinned bytes, in order."""
        self._decoded = True
        with self._pinned.open() as handle:
            while True:
                try:
                    chunk = handle.read(size)
                except OSError as exc:
                    raise GateError(self.gate._place(
                        "BE053", f"{self.what}: cannot read '{self.uri}': {exc}",
                        self.place)) from None
                if not chunk:
                    return
                yield chunk

    def verify(self) -> str:
        try:
            found = self._pinned.digest()
        except Changed:
            raise GateError(self.gate._place(
                "BE056", f"{self.what}: '{self.uri}' was written to while it was being read; "
                "nothing read from it is used", self.place,
                hints=("retry when the writer has finished",))) from None
        except OSError as exc:
            raise GateError(self.gate._place(
                "BE053", f"{self.what}: cannot read '{self.uri}': {exc.strerror or exc}",
                self.place)) from None
        if self.digest is not None:
            return self.digest
        if self.expected is not None and found != self.expected:
            if self.restricted_dataset:
                self._audit("refused: does not match the lock", found)
            hint = (f"the file changed after the lock was checked; if the new bytes are "
                    f"intended, review them and run `buildenv lock "
                    f"{self.relock or self.gate.env.name}`")
            raise GateError(self.gate._place(
                self.mismatch_code, f"{self.what} does not match the lock: expected "
                f"{self.expected}, found {found} ({self.uri}); nothing read from it is used",
                self.place, hints=(hint,)))
        self.digest = found
        if self.restricted_dataset:
            self._audit("read")
        return found

    def _audit(self, outcome: str, digest: str | None = None) -> None:
        from buildenv.core.diagnostics import DiagnosticError

        self._audited = True
        assert self.restricted_dataset is not None
        try:
            AuditLog(self.gate.project.data_state_dir).append(
                purpose=self.gate.purpose, environment=self.gate.env.name,
                dataset=self.restricted_dataset, digest=digest or self.digest or self.expected,
                columns=[], rows=self.rows_read, file=self.uri, outcome=outcome,
                **self.audit_details)
        except DiagnosticError as exc:
            raise GateError(exc.diagnostics[0]) from None
        except OSError as exc:
            raise GateError(Diagnostic("BE801", f"cannot write the audit log: {exc}")) from None

    def close(self) -> None:
        if self.restricted_dataset and self._decoded and not self._audited:
            try:
                self._audit("incomplete")
            except GateError:
                pass
        self._pinned.close()


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
