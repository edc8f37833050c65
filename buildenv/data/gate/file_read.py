"""A verified, audited read of a non-tabular file (a label export, a mapping)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from buildenv.data.gate.reader import Reader, digest_algorithm
from buildenv.data.gate.scope import ReadScope

__all__ = ["FileRead"]


class FileRead(Reader):
    """One verified read of a non-tabular file: the same pinning, hashing and audit as a
    dataset read, for bytes that a caller decodes itself (`chunks()` streams them, `open()`
    gives a random-access file). Call `verify()` after the last byte is used: a digest that
    differs from the expected one raises GateError, and nothing decoded may be used."""

    def __init__(self, scope: ReadScope, uri: str, what: str, expected: str | None,
                 place: tuple[Any, ...], restricted_dataset: str | None, missing_code: str,
                 mismatch_code: str, relock: str | None, audit: dict[str, Any]):
        super().__init__(scope, uri, what, place, expected, restricted_dataset)
        self.restricted_dataset = restricted_dataset
        self.mismatch_code = mismatch_code
        self.relock = relock
        self.details = audit
        self.rows_read = None  # set by the caller (annotations, mapping rows)
        self._pinned = self.pin(digest_algorithm(expected), missing_code)

    def release(self) -> None:
        self._pinned.close()

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
                    raise self.error("BE053", f"{self.what}: cannot read '{self.uri}': "
                                              f"{exc}") from None
                if not chunk:
                    return
                yield chunk

    def verify(self) -> str:
        return self.verify_pinned(self._pinned)

    def relock_hint(self) -> str:
        return ("the file changed after the lock was checked; if the new bytes are intended, "
                f"review them and run `buildenv lock {self.relock or self.scope.env.name}`")

    def audit_details(self) -> dict[str, Any]:
        return {"file": self.uri, **self.details}
