"""A verified, audited read of a non-tabular file (a label export, a mapping)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from buildenv.data.gate.audit import AuditLog
from buildenv.data.gate.errors import GateError
from buildenv.data.gate.pinned import Changed, Pinned
from buildenv.data.gate.privacy import first_line
from buildenv.data.gate.scope import ReadScope
from buildenv.data.lock.digests import ALGORITHMS
from buildenv.data.storage import locate

__all__ = ["FileRead"]


class FileRead:
    """One verified read of a non-tabular file: the same pinning, hashing and audit as a
    dataset read, for bytes that a caller decodes itself (`chunks()` streams them, `open()`
    gives a random-access file). Call `verify()` after the last byte is used: a digest that
    differs from the expected one raises GateError, and nothing decoded may be used."""

    def __init__(self, scope: ReadScope, uri: str, what: str, expected: str | None, place: tuple,
                 restricted_dataset: str | None, missing_code: str, mismatch_code: str,
                 relock: str | None, audit: dict):
        self.scope, self.uri, self.what, self.expected, self.place = scope, uri, what, expected, \
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
            self._pinned = Pinned(locate(uri, scope.project), algorithm)
        except FileNotFoundError:
            raise GateError(scope.placed_error(missing_code, f"{what}: '{uri}' not found",
                                        place)) from None
        except OSError as exc:
            raise GateError(scope.placed_error(missing_code, f"{what}: cannot read '{uri}': "
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
                    raise GateError(self.scope.placed_error(
                        "BE053", f"{self.what}: cannot read '{self.uri}': {exc}",
                        self.place)) from None
                if not chunk:
                    return
                yield chunk

    def verify(self) -> str:
        try:
            found = self._pinned.digest()
        except Changed:
            raise GateError(self.scope.placed_error(
                "BE056", f"{self.what}: '{self.uri}' was written to while it was being read; "
                "nothing read from it is used", self.place,
                hints=("retry when the writer has finished",))) from None
        except OSError as exc:
            raise GateError(self.scope.placed_error(
                "BE053", f"{self.what}: cannot read '{self.uri}': {exc.strerror or exc}",
                self.place)) from None
        if self.digest is not None:
            return self.digest
        if self.expected is not None and found != self.expected:
            if self.restricted_dataset:
                self._audit("refused: does not match the lock", found)
            hint = (f"the file changed after the lock was checked; if the new bytes are "
                    f"intended, review them and run `buildenv lock "
                    f"{self.relock or self.scope.env.name}`")
            raise GateError(self.scope.placed_error(
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
            AuditLog(self.scope.project.data_state_dir).append(
                purpose=self.scope.purpose, environment=self.scope.env.name,
                dataset=self.restricted_dataset, digest=digest or self.digest or self.expected,
                columns=[], rows=self.rows_read, file=self.uri, outcome=outcome,
                **self.audit_details)
        except DiagnosticError as exc:  # BE801: not sound or not writable
            raise GateError(exc.diagnostics[0]) from None

    def close(self) -> None:
        if self.restricted_dataset and self._decoded and not self._audited:
            try:
                self._audit("incomplete")
            except GateError:
                pass
        self._pinned.close()
